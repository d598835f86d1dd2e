//! Azure, as declared to the engine: its regions by continent, `providers.azure`, its naming
//! rules and the shape of its part of the graph. Configs for it are checked completely;
//! its verbs (storage accounts, blob containers, managed identities, VMs) are not in this
//! build yet, so a plan says so.

use anycloud_provider::declare::cloud_vm;
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{BucketRole, Declaration, Regions, Shape, VmContext, VmSpec};
use serde_json::json;

pub const REGIONS: &[(&str, &[&str])] = &[
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

#[derive(Default)]
pub struct Azure;

impl Declaration for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn regions(&self) -> Regions {
        Regions::Table(REGIONS)
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: true,
            // Role assignments scoped to each container: Reader on input, Contributor on
            // output and checkpoint.
            grants: &[
                BucketRole::Input,
                BucketRole::Output,
                BucketRole::Checkpoint,
            ],
            buckets_on_vm: false,
        }
    }

    /// Blob container names: no `.` and no `--`, beyond the common rules.
    fn check_bucket_name(&self, name: &str) -> Result<(), String> {
        if name.contains('.') || name.contains("--") {
            return Err(format!(
                "bucket name '{name}' is not a valid Azure container name: no '.' and no '--'"
            ));
        }
        Ok(())
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["subscription_id"]
    }

    fn check_settings(&self, doc: Option<&Doc>, checks: &mut Checks) -> serde_json::Value {
        let Some(id) = doc.and_then(|d| d.get("subscription_id")) else {
            return serde_json::Value::Null;
        };
        let Some(v) = checks.string(id, "providers.azure.subscription_id") else {
            return serde_json::Value::Null;
        };
        let ok = v.len() == 36 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            checks.error(
                id.at,
                format!("subscription_id '{v}' is not a GUID"),
                Some("e.g. 00000000-0000-0000-0000-000000000000".into()),
            );
        }
        json!({ "subscription_id": v })
    }

    fn check_vm(&self, vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> VmSpec {
        cloud_vm(vm, cx, checks, Some("azure"))
    }
}
