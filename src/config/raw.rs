//! The config exactly as written, with the location of every value a later check may blame.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub project: Option<S<String>>,
    pub providers: Option<RawProviders>,
    pub defaults: Option<RawDefaults>,
    pub deployments: Option<S<Entries<S<RawDeployment>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    pub aws: Option<RawAws>,
    pub azure: Option<RawAzure>,
    pub gcp: Option<RawGcp>,
    pub local: Option<RawLocal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub profile: Option<String>,
    /// Per-service endpoints (S3-compatible stores, moto), as `AWS_ENDPOINT_URL_<SERVICE>`.
    pub endpoints: Option<RawAwsEndpoints>,
    /// Who may reach the VMs' SSH port; default: this machine's public address.
    pub ssh_cidr: Option<S<String>>,
    /// The VM image; default: the latest Debian 12 image in the region.
    pub ami: Option<S<String>>,
    /// The image's login user (Debian's images: `admin`).
    pub ssh_user: Option<S<String>>,
}

#[derive(Deserialize, serde::Serialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAwsEndpoints {
    pub s3: Option<String>,
    pub iam: Option<String>,
    pub ec2: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzure {
    pub subscription_id: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcp {
    pub project: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub root: Option<S<String>>,
}

/// Fields shared by `defaults:` and each deployment; a deployment's own win.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub provider: Option<S<String>>,
    pub region: Option<S<String>>,
    pub sync_interval: Option<S<Interval>>,
    pub vm: Option<RawVm>,
    pub connectivity_check: Option<RawCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: Option<S<String>>,
    pub region: Option<S<String>>,
    pub vm: Option<RawVm>,
    pub container: Option<S<RawContainer>>,
    pub buckets: Option<RawBuckets>,
    pub sync_interval: Option<S<Interval>>,
    pub connectivity_check: Option<RawCheck>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    #[serde(rename = "type")]
    pub machine_type: Option<S<String>>,
    pub spot: Option<S<bool>>,
    pub disk_gb: Option<S<u32>>,
    /// `provider: ssh` only: the machine to use.
    pub host: Option<S<String>>,
    /// Wider than a port, so an out-of-range number gets our message, not a type error.
    pub port: Option<S<i64>>,
    pub user: Option<S<String>>,
    pub identity_file: Option<S<String>>,
    pub host_key: Option<S<String>>,
    pub root: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainer {
    pub image: Option<S<String>>,
    pub command: Option<Vec<S<String>>>,
    pub env: Option<Entries<S<String>>>,
    pub gpus: Option<S<String>>,
    pub shm_size: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuckets {
    pub input: Option<S<String>>,
    pub output: Option<S<String>>,
    pub checkpoint: Option<bool>,
}

/// rclone's connectivity check: `--retries` and `--retries-sleep` (shorter in tests).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub retries: Option<S<u32>>,
    pub retries_sleep: Option<S<Interval>>,
}

/// A duration: `60s`, `5m`, `1h`, or a number of seconds.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Interval {
    Seconds(u64),
    Text(String),
}

impl Interval {
    pub fn seconds(&self) -> Result<u64, String> {
        match self {
            Interval::Seconds(s) => Ok(*s),
            Interval::Text(t) => {
                let t = t.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num
                    .parse()
                    .map_err(|_| format!("'{t}' is not a duration like 60s, 5m or 1h"))?;
                let mult = match unit {
                    "" | "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    _ => return Err(format!("'{t}' has unit '{unit}'; use s, m or h (e.g. 60s)")),
                };
                n.checked_mul(mult)
                    .ok_or_else(|| format!("'{t}' is too long"))
            }
        }
    }
}

/// A mapping kept in file order with the location of each key (serde maps lose both).
pub struct Entries<V>(pub Vec<(S<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<S<String>>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}
