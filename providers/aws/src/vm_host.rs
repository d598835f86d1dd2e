//! What runs on an EC2 VM: the seed's layout, rclone.conf with the instance role (no keys),
//! and the SSH address the VM is reached at.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anycloud_host::{HostContext, SshTarget, VmLayout};
use anycloud_provider::{attr_str, Attrs, BucketRole, DeploymentSpec, ProviderError, Result};

use crate::settings::{testing, Settings};

/// How long a new VM may take to answer SSH.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// The rclone remote for buckets of one region.
fn remote_name(region: &str) -> String {
    format!("s3-{region}")
}

/// `rclone.conf`: one remote per bucket region, authenticated by the instance role
/// (`env_auth`), never by a key. `no_check_bucket`: the role may not create buckets, and
/// rclone otherwise sends CreateBucket before a fresh process's first write (refused: 403).
pub fn rclone_conf(regions: &[&str], endpoint: Option<&str>) -> String {
    let mut conf = String::new();
    for region in regions {
        conf.push_str(&format!(
            "[{}]\ntype = s3\nno_check_bucket = true\n",
            remote_name(region)
        ));
        match endpoint {
            Some(url) => conf.push_str(&format!(
                "provider = Other\nenv_auth = true\nregion = {region}\nendpoint = {url}\nforce_path_style = true\n"
            )),
            None => conf.push_str(&format!("provider = AWS\nenv_auth = true\nregion = {region}\n")),
        }
        conf.push('\n');
    }
    conf
}

pub fn context(spec: &DeploymentSpec, settings: &Settings) -> Result<HostContext> {
    let layout = VmLayout::on_vm(&testing::vm_root()?);
    let mut remotes = BTreeMap::new();
    let mut regions: Vec<&str> = Vec::new();
    for (role, bucket) in &spec.buckets {
        // Where the bucket is made: a VM's rclone needs its region.
        let region = bucket.region.as_str();
        if !regions.contains(&region) {
            regions.push(region);
        }
        remotes.insert(*role, format!("{}:{}", remote_name(region), bucket.name));
    }
    regions.sort();
    // The role may list only its own buckets: check one of them.
    let check_target = [
        BucketRole::Output,
        BucketRole::Checkpoint,
        BucketRole::Input,
    ]
    .iter()
    .find_map(|r| remotes.get(r).cloned())
    .unwrap_or_else(|| format!("{}:", remote_name(&spec.region)));
    let endpoint = settings
        .s3_endpoint()
        .map_err(anycloud_provider::ProviderError::permanent)?;
    Ok(HostContext {
        deployment: spec.id.clone(),
        layout,
        rclone_conf: rclone_conf(&regions, endpoint.as_deref()),
        check_target,
        remotes,
        network: "bridge".into(),
        container_user: None,
        power_off: Some(anycloud_host::idle::POWER_OFF.to_owned()),
    })
}

/// Where and as whom to reach a VM: its public address (or the test host standing in for
/// it), its login user, the deployment's key, the host key pinned when it was made.
pub fn ssh_target(vm: &Attrs, key_path: PathBuf) -> Result<SshTarget> {
    let (host, port) = match testing::ssh_address()? {
        Some(over) => over,
        None => (
            vm.get("public_ip")
                .and_then(|v| v.as_str())
                .ok_or_else(|| ProviderError::permanent("the VM has no public address"))?
                .to_owned(),
            22,
        ),
    };
    Ok(SshTarget {
        host,
        port,
        user: attr_str(vm, "ssh_user")?.to_owned(),
        key_path,
        pinned: vm
            .get("host_key")
            .and_then(|v| v.as_str())
            .map(String::from),
        connect_timeout: CONNECT_TIMEOUT,
        // cloud-init installs the key a little after sshd starts answering.
        retry_refused_key: true,
    })
}
