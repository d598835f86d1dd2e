//! AWS regions by continent (DESIGN §6).

pub const REGIONS: &[(&str, &[&str])] = &[
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

/// The continent of an AWS region.
pub fn continent(region: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .find(|(_, regions)| regions.contains(&region))
        .map(|(c, _)| *c)
}
