//! GCP, as declared to the engine: its regions by continent, `providers.gcp`, and the shape
//! of its part of the graph. Configs for it are checked completely; its verbs (buckets,
//! service accounts, Compute Engine VMs) are not in this build yet, so a plan says so.

use anycloud_provider::declare::cloud_vm;
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{BucketRole, Declaration, Regions, Shape, VmContext, VmSpec};
use serde_json::json;

pub const REGIONS: &[(&str, &[&str])] = &[
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

#[derive(Default)]
pub struct Gcp;

impl Declaration for Gcp {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn regions(&self) -> Regions {
        Regions::Table(REGIONS)
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: true,
            // Bucket IAM bindings conditioned on the deployment's prefixes: Object Viewer on
            // input, Object Admin on output and checkpoint.
            grants: &[
                BucketRole::Input,
                BucketRole::Output,
                BucketRole::Checkpoint,
            ],
            buckets_on_vm: false,
        }
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["project"]
    }

    fn check_settings(&self, doc: Option<&Doc>, checks: &mut Checks) -> serde_json::Value {
        let Some(p) = doc.and_then(|d| d.get("project")) else {
            return serde_json::Value::Null;
        };
        match checks.string(p, "providers.gcp.project") {
            Some(project) => json!({ "project": project }),
            None => serde_json::Value::Null,
        }
    }

    fn check_vm(&self, vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> VmSpec {
        cloud_vm(vm, cx, checks, Some("gcp"))
    }
}
