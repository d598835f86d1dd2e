//! What the engine hands a provider to plan a node: the deployment as the config says it,
//! typed, checked and complete. Providers read fields, never string keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Kind;

/// The part a bucket plays in a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketRole {
    /// Downloaded once, read-only at `/mnt/input`; must exist already.
    Input,
    /// Uploaded every `sync_interval` from `/mnt/output`.
    Output,
    /// Restored into `/mnt/checkpoint` on start, then uploaded like output.
    Checkpoint,
}

impl BucketRole {
    pub const ALL: [BucketRole; 3] = [
        BucketRole::Input,
        BucketRole::Output,
        BucketRole::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BucketRole::Input => "input",
            BucketRole::Output => "output",
            BucketRole::Checkpoint => "checkpoint",
        }
    }
}

impl fmt::Display for BucketRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bucket of a deployment, with where it lives (first-wins per continent, DESIGN §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    /// The continent the bucket belongs to: where the first deployment to use it runs.
    pub continent: String,
    /// The region it is made in when it does not exist yet.
    pub region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VmSpec {
    /// `vm.type`: the machine type (instance type, VM size).
    pub machine_type: Option<String>,
    pub spot: bool,
    pub disk_gb: Option<u32>,
    /// `vm.image`: the machine image, in the cloud's own words (checked by its provider);
    /// none: the provider's default (with GPUs asked, the cloud's image with NVIDIA drivers).
    pub image: Option<String>,
    /// `vm.regions`: where the VM may move when its region has no capacity for it, in
    /// order, each in the deployment's continent (checked by the engine); empty when not
    /// given: the continent's regions (`placement`).
    pub regions: Vec<String>,
    /// The provider's own `vm:` settings as its checker returned them (for `provider: ssh`,
    /// the machine to reach); `null` when it has none.
    pub settings: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub gpus: Option<String>,
    pub shm_size: Option<String>,
    /// What the machine does when the job exits by itself.
    pub restart: Restart,
}

/// What the machine does when the job exits by itself (a job killed by a reboot or a lost
/// VM is resumed whatever this says: that is recovery, not a restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// A finished or failed job stays as it ended; apply does not run it again.
    #[default]
    Never,
    /// Docker starts a failed job again, up to this many times.
    OnFailure(u32),
    /// Docker starts it again whenever it exits: a service.
    Always,
}

impl Restart {
    /// `never`, `on-failure` (3 times), `on-failure:N`, `always`.
    pub fn parse(s: &str) -> Option<Restart> {
        match s {
            "never" | "no" => Some(Restart::Never),
            "always" => Some(Restart::Always),
            "on-failure" => Some(Restart::OnFailure(3)),
            _ => s
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=1000).contains(n))
                .map(Restart::OnFailure),
        }
    }

    /// Docker's `--restart` value; none for `never` (Docker's default).
    pub fn docker(self) -> Option<String> {
        match self {
            Restart::Never => None,
            Restart::OnFailure(n) => Some(format!("on-failure:{n}")),
            Restart::Always => Some("always".into()),
        }
    }

    pub fn as_config(self) -> String {
        match self {
            Restart::Never => "never".into(),
            Restart::OnFailure(n) => format!("on-failure:{n}"),
            Restart::Always => "always".into(),
        }
    }
}

/// rclone's start-up check: tries and the wait between them (a loop on the VM, waiting out
/// an identity's permissions as they spread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectivityCheck {
    pub retries: u32,
    pub retries_sleep_secs: u64,
}

impl Default for ConnectivityCheck {
    fn default() -> Self {
        ConnectivityCheck {
            retries: 30,
            retries_sleep_secs: 15,
        }
    }
}

/// One deployment, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub id: String,
    pub provider: String,
    /// `project:` of the config: tags what anycloud makes.
    pub project: Option<String>,
    pub region: String,
    pub continent: String,
    pub vm: VmSpec,
    pub container: ContainerSpec,
    pub buckets: BTreeMap<BucketRole, BucketSpec>,
    pub sync_interval_secs: u64,
    /// `idle_shutdown:`: once the job has ended and this long has passed, the machine
    /// uploads and verifies its output, then stops itself (none: it runs until destroyed).
    pub idle_shutdown_secs: Option<u64>,
    pub check: ConnectivityCheck,
}

impl DeploymentSpec {
    pub fn bucket(&self, role: BucketRole) -> Option<&BucketSpec> {
        self.buckets.get(&role)
    }
}

/// The node a provider is asked to plan: its kind, its deployment, and for a bucket or a
/// grant which of the deployment's buckets it is. A continent's shared storage is planned
/// with the deployment that first needed it.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec<'a> {
    pub kind: Kind,
    pub deployment: &'a DeploymentSpec,
    pub bucket: Option<BucketRole>,
}

impl<'a> NodeSpec<'a> {
    /// The bucket of a bucket or grant node.
    pub fn bucket(&self) -> crate::Result<(BucketRole, &'a BucketSpec)> {
        let role = self.bucket.ok_or_else(|| {
            crate::ProviderError::permanent(format!("a {} node names no bucket", self.kind))
        })?;
        let spec = self.deployment.bucket(role).ok_or_else(|| {
            crate::ProviderError::permanent(format!(
                "deployment {} has no {role} bucket",
                self.deployment.id
            ))
        })?;
        Ok((role, spec))
    }
}
