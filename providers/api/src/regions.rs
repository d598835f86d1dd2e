//! The continent of every region (DESIGN §6). Storage is shared per continent.

/// `(continent, regions)` per cloud, with the `/2` shorthand of the design table expanded.
const AWS: &[(&str, &[&str])] = &[
    ("us", &["us-east-1", "us-east-2", "us-west-1", "us-west-2"]),
    (
        "eu",
        &[
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "eu-central-1",
            "eu-central-2",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
        ],
    ),
    (
        "apac",
        &[
            "ap-east-1",
            "ap-south-1",
            "ap-south-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-southeast-1",
            "ap-southeast-3",
            "ap-southeast-5",
            "ap-southeast-7",
            "ap-east-2",
        ],
    ),
    ("aus", &["ap-southeast-2", "ap-southeast-4"]),
    ("latam", &["sa-east-1", "mx-central-1"]),
    (
        "mea",
        &["me-south-1", "me-central-1", "il-central-1", "af-south-1"],
    ),
    ("ca", &["ca-central-1", "ca-west-1"]),
];

const AZURE: &[(&str, &[&str])] = &[
    (
        "us",
        &[
            "eastus",
            "eastus2",
            "westus",
            "westus2",
            "westus3",
            "centralus",
            "northcentralus",
            "southcentralus",
            "westcentralus",
        ],
    ),
    (
        "eu",
        &[
            "westeurope",
            "northeurope",
            "uksouth",
            "ukwest",
            "francecentral",
            "francesouth",
            "germanywestcentral",
            "germanynorth",
            "swedencentral",
            "switzerlandnorth",
            "norwayeast",
            "italynorth",
            "polandcentral",
            "spaincentral",
        ],
    ),
    (
        "apac",
        &[
            "eastasia",
            "southeastasia",
            "japaneast",
            "japanwest",
            "koreacentral",
            "koreasouth",
            "centralindia",
            "southindia",
            "westindia",
        ],
    ),
    (
        "aus",
        &["australiaeast", "australiasoutheast", "australiacentral"],
    ),
    ("latam", &["brazilsouth", "mexicocentral", "chilecentral"]),
    (
        "mea",
        &[
            "uaenorth",
            "uaecentral",
            "southafricanorth",
            "southafricawest",
            "israelcentral",
            "qatarcentral",
        ],
    ),
    ("ca", &["canadacentral", "canadaeast"]),
];

const GCP: &[(&str, &[&str])] = &[
    (
        "us",
        &[
            "us-central1",
            "us-east1",
            "us-east4",
            "us-east5",
            "us-west1",
            "us-west2",
            "us-west3",
            "us-west4",
            "us-south1",
        ],
    ),
    (
        "eu",
        &[
            "europe-west1",
            "europe-west2",
            "europe-west3",
            "europe-west4",
            "europe-west6",
            "europe-west8",
            "europe-west9",
            "europe-west10",
            "europe-west12",
            "europe-north1",
            "europe-central2",
            "europe-southwest1",
        ],
    ),
    (
        "apac",
        &[
            "asia-east1",
            "asia-east2",
            "asia-northeast1",
            "asia-northeast2",
            "asia-northeast3",
            "asia-south1",
            "asia-south2",
            "asia-southeast1",
            "asia-southeast2",
        ],
    ),
    ("aus", &["australia-southeast1", "australia-southeast2"]),
    (
        "latam",
        &[
            "southamerica-east1",
            "southamerica-west1",
            "northamerica-south1",
        ],
    ),
    (
        "mea",
        &["me-west1", "me-central1", "me-central2", "africa-south1"],
    ),
    (
        "ca",
        &["northamerica-northeast1", "northamerica-northeast2"],
    ),
];

/// The local cloud has one region of its own, `local`; a deployment may also name any
/// cloud's region to rehearse that continent's layout.
pub const LOCAL_REGION: &str = "local";

fn table(provider: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match provider {
        "aws" => AWS,
        "azure" => AZURE,
        "gcp" => GCP,
        _ => &[],
    }
}

/// The continent code of `region` on `provider`, if the region is known.
pub fn continent(provider: &str, region: &str) -> Option<&'static str> {
    if provider == "local" {
        if region == LOCAL_REGION {
            return Some("local");
        }
        return ["aws", "azure", "gcp"]
            .iter()
            .find_map(|p| continent(p, region));
    }
    table(provider)
        .iter()
        .find(|(_, regions)| regions.contains(&region))
        .map(|(c, _)| *c)
}

/// Every region `provider` accepts, for suggestions.
pub fn regions(provider: &str) -> Vec<&'static str> {
    if provider == "local" {
        let mut all = vec![LOCAL_REGION];
        for p in ["aws", "azure", "gcp"] {
            all.extend(regions(p));
        }
        return all;
    }
    table(provider)
        .iter()
        .flat_map(|(_, r)| r.iter().copied())
        .collect()
}

/// The regions of `provider` in `continent`.
pub fn regions_of_continent(provider: &str, continent: &str) -> Vec<&'static str> {
    table(provider)
        .iter()
        .filter(|(c, _)| *c == continent)
        .flat_map(|(_, r)| r.iter().copied())
        .collect()
}
