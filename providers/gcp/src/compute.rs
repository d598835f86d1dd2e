//! The VM's Compute Engine objects: the deployment's firewall rule (tcp/22 from `ssh_cidr`
//! only, on the instance's network tag, in the project's `default` network) and its instance
//! carrying the service account (Spot with termination action DELETE when asked), the
//! deployment's key in its `ssh-keys` metadata. Instances are labelled with the state's
//! lineage; a firewall rule, which has no labels, says it in its description. Another
//! lineage's is never changed or deleted.

use std::collections::BTreeMap;

use anycloud_provider::placement::Launched;
use anycloud_provider::{ErrorCode, ProviderError, Result};
use http::Method;
use serde_json::{json, Value};

use crate::owner;
use crate::Cx;

/// Debian 12 (what the VM steps are written and tested for), the family's latest image.
pub const IMAGE: &str = "projects/debian-cloud/global/images/family/debian-12";
/// The login user by default: the guest agent makes it from `ssh-keys`, with sudo.
pub const SSH_USER: &str = "anycloud";
/// With GPUs asked and no `vm.image`: a Deep Learning VM image (Debian 11, CUDA 12.1), whose
/// first boot installs NVIDIA's driver when the instance's metadata asks
/// (`install-nvidia-driver`).
pub const GPU_IMAGE: &str =
    "projects/deeplearning-platform-release/global/images/family/common-cu121-debian-11";
/// What [`GPU_IMAGE`] is, for the plan.
pub const GPU_IMAGE_NAME: &str =
    "Deep Learning VM, Debian 11, CUDA 12.1; NVIDIA driver installed at first boot";

/// An image as Compute Engine takes it for a boot disk: `projects/P/global/images/NAME`,
/// `projects/P/global/images/family/FAMILY`, or either as a full URL.
pub fn check_image(image: &str) -> Result<(), String> {
    let rest = image
        .strip_prefix("https://www.googleapis.com/compute/v1/")
        .or_else(|| image.strip_prefix("https://compute.googleapis.com/compute/v1/"))
        .unwrap_or(image);
    let name = |t: &str| {
        !t.is_empty()
            && t.len() <= 63
            && t.starts_with(|c: char| c.is_ascii_lowercase())
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let project_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c))
    };
    let ok = match parts.as_slice() {
        ["projects", p, "global", "images", "family", f] => project_ok(p) && name(f),
        ["projects", p, "global", "images", i] => project_ok(p) && name(i),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(
            "is not an image of Compute Engine (projects/PROJECT/global/images/NAME or \
             projects/PROJECT/global/images/family/FAMILY)"
                .into(),
        )
    }
}

/// A machine type's GPUs as Compute Engine describes them (`machineTypes.get`, its
/// `accelerators`): "1 nvidia-l4"; `None` when the type brings none (an N1 type takes GPUs
/// attached to the instance, which anycloud does not attach).
pub async fn gpus_of_type(cx: &Cx<'_>, zone: &str, machine_type: &str) -> Result<Option<String>> {
    let url = format!(
        "{}/projects/{}/zones/{zone}/machineTypes/{machine_type}",
        cx.s.compute(),
        cx.project
    );
    let Some(found) = cx.g.get(&url).await? else {
        return Err(ProviderError::permanent(format!(
            "Compute Engine does not know machine type {machine_type} in zone {zone}"
        )));
    };
    let gpus: Vec<String> = found
        .get("accelerators")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let kind = a.get("guestAcceleratorType")?.as_str()?;
            let count = a
                .get("guestAcceleratorCount")
                .and_then(|c| c.as_u64())
                .unwrap_or(1);
            Some(format!(
                "{count} {}",
                kind.rsplit('/').next().unwrap_or(kind)
            ))
        })
        .collect();
    Ok((!gpus.is_empty()).then(|| gpus.join(", ")))
}
const NETWORK: &str = "global/networks/default";

pub struct Machine<'a> {
    pub name: &'a str,
    pub zone: &'a str,
    pub machine_type: &'a str,
    pub spot: bool,
    pub disk_gb: Option<u64>,
    pub image: &'a str,
    /// Asks a Deep Learning VM image to install NVIDIA's driver at first boot.
    pub install_nvidia_driver: bool,
    pub service_account: &'a str,
    pub ssh_user: &'a str,
    pub public_key: &'a str,
    pub labels: Value,
}

fn instances_url(cx: &Cx<'_>, zone: &str) -> String {
    format!(
        "{}/projects/{}/zones/{zone}/instances",
        cx.s.compute(),
        cx.project
    )
}

fn firewall_url(cx: &Cx<'_>, name: &str) -> String {
    format!(
        "{}/projects/{}/global/firewalls/{name}",
        cx.s.compute(),
        cx.project
    )
}

/// A fresh request id per insert: Compute Engine ignores a repeated id for an hour, and a
/// preempted instance made anew within the hour must really be made. A lost answer is
/// covered by looking before inserting and by 409 `alreadyExists`.
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Inserts (`POST url?requestId=`) and waits for the operation; an object that exists is
/// left to the caller's owner check (`Ok(false)`).
async fn insert(cx: &Cx<'_>, url: &str, id: &str, body: &Value) -> Result<bool> {
    let full = format!("{url}?requestId={id}");
    let reply = cx.g.send(Method::POST, &full, Some(body)).await?;
    if reply.status.as_u16() == 409 {
        return Ok(false);
    }
    if !reply.status.is_success() {
        return Err(crate::api::error_of(&Method::POST, url, &reply));
    }
    cx.g.finish(&cx.s.compute(), &cx.project, reply.body)
        .await?;
    Ok(true)
}

/// The deployment's firewall rule: made, or checked to be this state's and to admit exactly
/// `cidr` (a changed one is replaced: the extract of the API we hold has no patch).
pub async fn ensure_firewall(
    cx: &Cx<'_>,
    name: &str,
    target_tag: &str,
    cidr: &str,
    lineage: &str,
    description: &str,
) -> Result<()> {
    let url = firewall_url(cx, name);
    if let Some(found) = cx.g.get(&url).await? {
        owner::must_be_ours(
            &owner::of_description(&found, lineage),
            &format!("firewall rule {name}"),
            owner::DESCRIPTION,
            lineage,
        )?;
        let ranges = found.get("sourceRanges").cloned().unwrap_or(json!([]));
        if ranges == json!([cidr]) {
            return Ok(());
        }
        if let Some(op) = cx.g.delete(&url).await? {
            cx.g.finish(&cx.s.compute(), &cx.project, op).await?;
        }
    }
    let body = json!({
        "name": name,
        "network": NETWORK,
        "direction": "INGRESS",
        "priority": 1000,
        "description": description,
        "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
        "sourceRanges": [cidr],
        "targetTags": [target_tag],
    });
    let collection = format!(
        "{}/projects/{}/global/firewalls",
        cx.s.compute(),
        cx.project
    );
    if !insert(cx, &collection, &request_id(), &body).await? {
        // Made meanwhile: whose?
        match cx.g.get(&url).await? {
            Some(found) => owner::must_be_ours(
                &owner::of_description(&found, lineage),
                &format!("firewall rule {name}"),
                owner::DESCRIPTION,
                lineage,
            )?,
            None => {
                return Err(ProviderError::new(
                    ErrorCode::Busy,
                    format!("firewall rule {name} is being made or deleted"),
                ))
            }
        }
    }
    Ok(())
}

/// The region's zones that are UP, by name: the order a VM's create tries them in
/// (`regions.get`, its `zones` links).
pub async fn zones(cx: &Cx<'_>, region: &str) -> Result<Vec<String>> {
    let url = format!(
        "{}/projects/{}/regions/{region}",
        cx.s.compute(),
        cx.project
    );
    let found = cx.g.get(&url).await?.ok_or_else(|| {
        ProviderError::permanent(format!("Compute Engine does not know region {region}"))
    })?;
    let mut zones: Vec<String> = found
        .get("zones")
        .and_then(|z| z.as_array())
        .into_iter()
        .flatten()
        .filter_map(|z| z.as_str())
        .map(|z| z.rsplit('/').next().unwrap_or(z).to_owned())
        .collect();
    zones.sort();
    if zones.is_empty() {
        return Err(ProviderError::permanent(format!(
            "Compute Engine lists no zone in region {region}"
        )));
    }
    Ok(zones)
}

/// The instance, made in the machine's zone unless it is there already (running, or
/// waited for until it runs); a zone without room for it says so instead of failing.
pub async fn ensure_instance(
    cx: &Cx<'_>,
    m: &Machine<'_>,
    lineage: &str,
) -> Result<Launched<Value>> {
    let url = format!("{}/{}", instances_url(cx, m.zone), m.name);
    if let Some(found) = cx.g.get(&url).await? {
        owner::must_be_ours(
            &owner::of_labels(&found, lineage),
            &format!("instance {}", m.name),
            owner::LABEL,
            lineage,
        )?;
        if found.get("status").and_then(|s| s.as_str()) == Some("RUNNING") {
            return Ok(Launched::Made(found));
        }
    } else {
        let mut disk = json!({
            "boot": true,
            "autoDelete": true,
            "initializeParams": {"sourceImage": m.image},
        });
        if let Some(gb) = m.disk_gb {
            disk["initializeParams"]["diskSizeGb"] = json!(gb.to_string());
        }
        let scheduling = if m.spot {
            json!({
                "provisioningModel": "SPOT",
                "instanceTerminationAction": "DELETE",
                "automaticRestart": false,
                "onHostMaintenance": "TERMINATE",
            })
        } else {
            // GPU machine types cannot live-migrate: they stop for host maintenance and
            // start again by themselves.
            json!({
                "provisioningModel": "STANDARD",
                "automaticRestart": true,
                "onHostMaintenance": "TERMINATE",
            })
        };
        let mut body = json!({
            "name": m.name,
            "machineType": format!("zones/{}/machineTypes/{}", m.zone, m.machine_type),
            "disks": [disk],
            "networkInterfaces": [{
                "network": NETWORK,
                "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
            }],
            // The metadata server hands out this account's tokens, limited by its IAM
            // bindings: no key file is ever made.
            "serviceAccounts": [{
                "email": m.service_account,
                "scopes": [crate::auth::SCOPE],
            }],
            "metadata": {"items": [
                {"key": "ssh-keys", "value": format!("{}:{}", m.ssh_user, m.public_key.trim())},
                {"key": "block-project-ssh-keys", "value": "true"},
                // The key above only counts where OS Login is off (a project may turn it on
                // for every instance).
                {"key": "enable-oslogin", "value": "FALSE"},
            ]},
            "scheduling": scheduling,
            "tags": {"items": [m.name]},
            "labels": m.labels,
        });
        if m.install_nvidia_driver {
            body["metadata"]["items"]
                .as_array_mut()
                .expect("items is a list")
                .push(json!({"key": "install-nvidia-driver", "value": "True"}));
        }
        let made = match insert_instance(cx, m.zone, &body).await? {
            Launched::Made(made) => made,
            Launched::NoCapacity { code, message } => {
                return Ok(Launched::NoCapacity { code, message })
            }
        };
        if !made {
            let found = cx.g.get(&url).await?.ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::Busy,
                    format!("instance {} is being made", m.name),
                )
            })?;
            owner::must_be_ours(
                &owner::of_labels(&found, lineage),
                &format!("instance {}", m.name),
                owner::LABEL,
                lineage,
            )?;
        }
    }
    // Made: wait until it runs (a Spot VM may be stopped for capacity at once).
    anycloud_provider::retry::wait_for(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(300),
        || async {
            match cx.g.get(&url).await {
                Ok(Some(i)) if i.get("status").and_then(|s| s.as_str()) == Some("RUNNING") => Ok(i),
                Ok(Some(i)) => Err(ProviderError::new(
                    ErrorCode::Busy,
                    format!(
                        "instance {} is {}",
                        m.name,
                        i.get("status").and_then(|s| s.as_str()).unwrap_or("?")
                    ),
                )),
                Ok(None) => Err(ProviderError::new(
                    ErrorCode::NotFound,
                    format!(
                        "instance {} is gone (Spot capacity, or deleted meanwhile)",
                        m.name
                    ),
                )),
                Err(e) => Err(e),
            }
        },
        |e: &ProviderError| e.retry,
        |_, _| {},
    )
    .await
    .map(Launched::Made)
}

/// An instance insert, and its operation waited for: `Made(false)` when it exists already
/// (409), `NoCapacity` when the zone has no room for it (answered at once or, as Compute
/// Engine mostly does, as the operation's error).
async fn insert_instance(cx: &Cx<'_>, zone: &str, body: &Value) -> Result<Launched<bool>> {
    let url = instances_url(cx, zone);
    let full = format!("{url}?requestId={}", request_id());
    let reply = cx.g.send(Method::POST, &full, Some(body)).await?;
    if reply.status.as_u16() == 409 {
        return Ok(Launched::Made(false));
    }
    if !reply.status.is_success() {
        if crate::api::is_capacity(reply.reason()) {
            return Ok(Launched::NoCapacity {
                code: reply.reason().to_owned(),
                message: reply.message(),
            });
        }
        return Err(crate::api::error_of(&Method::POST, &url, &reply));
    }
    let op = cx.g.done(&cx.s.compute(), &cx.project, reply.body).await?;
    let first = op
        .get("error")
        .and_then(|e| e.get("errors"))
        .and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    if crate::api::is_capacity(code) {
        return Ok(Launched::NoCapacity {
            code: code.to_owned(),
            message: first
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_owned(),
        });
    }
    // Any other error of the operation, classified as every operation's is.
    cx.g.finish(&cx.s.compute(), &cx.project, op).await?;
    Ok(Launched::Made(true))
}

/// The external address of an instance.
pub fn nat_ip(instance: &Value) -> Option<&str> {
    instance
        .get("networkInterfaces")?
        .get(0)?
        .get("accessConfigs")?
        .get(0)?
        .get("natIP")?
        .as_str()
}

/// Deletes an object of this state's (asked again now) and waits for the operation.
pub async fn delete_ours(
    cx: &Cx<'_>,
    url: &str,
    lineage: &str,
    what: &str,
    labelled: bool,
) -> Result<()> {
    let Some(found) = cx.g.get(url).await? else {
        return Ok(());
    };
    let whose = if labelled {
        owner::of_labels(&found, lineage)
    } else {
        owner::of_description(&found, lineage)
    };
    if !whose.ours() {
        anycloud_provider::output::line(&format!("{what} is not this state's: left as it is"));
        return Ok(());
    }
    if let Some(op) = cx.g.delete(url).await? {
        cx.g.finish(&cx.s.compute(), &cx.project, op).await?;
    }
    Ok(())
}

pub fn instance_url(cx: &Cx<'_>, zone: &str, name: &str) -> String {
    format!("{}/{name}", instances_url(cx, zone))
}

pub fn firewall_of(cx: &Cx<'_>, name: &str) -> String {
    firewall_url(cx, name)
}

/// This state's instances in some zones, by name: one list per zone (by the lineage label),
/// whatever the number of deployments.
pub async fn list(cx: &Cx<'_>, zones: &[String], lineage: &str) -> Result<BTreeMap<String, Value>> {
    let mut found = BTreeMap::new();
    let filter = crate::api::encode(&format!(
        "labels.{}={}",
        crate::owner::LINEAGE,
        crate::owner::label_value(lineage)
    ));
    for zone in zones {
        for i in
            cx.g.list(
                &format!("{}?filter={filter}", instances_url(cx, zone)),
                "items",
            )
            .await?
        {
            if let Some(name) = i.get("name").and_then(|n| n.as_str()) {
                found.insert(name.to_owned(), i);
            }
        }
    }
    Ok(found)
}

/// The project's firewall rules by name (one list, paged): what a refresh compares each
/// VM's rule with.
pub async fn firewalls(cx: &Cx<'_>) -> Result<BTreeMap<String, Value>> {
    Ok(cx
        .g
        .list(
            &format!(
                "{}/projects/{}/global/firewalls",
                cx.s.compute(),
                cx.project
            ),
            "items",
        )
        .await?
        .into_iter()
        .filter_map(|f| Some((f.get("name")?.as_str()?.to_owned(), f)))
        .collect())
}

/// Who a rule admits as `ssh_cidr` says it: its source ranges when it is this state's rule
/// for tcp/22, else nothing (gone, changed or someone else's: the update makes it again).
pub fn admitted(rule: Option<&Value>, lineage: &str) -> String {
    let Some(rule) = rule.filter(|r| owner::of_description(r, lineage).ours()) else {
        return String::new();
    };
    let ssh_only = rule.get("allowed") == Some(&json!([{"IPProtocol": "tcp", "ports": ["22"]}]));
    let ranges: Vec<&str> = rule
        .get("sourceRanges")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if ssh_only {
        ranges.join(",")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod image_tests {
    use super::check_image;

    #[test]
    fn images_are_compute_engine_images() {
        for ok in [
            "projects/debian-cloud/global/images/family/debian-12",
            "projects/deeplearning-platform-release/global/images/family/common-cu121-debian-11",
            "projects/my-project/global/images/train-2024",
            "https://www.googleapis.com/compute/v1/projects/p/global/images/i",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "debian-12",
            "ami-12345678",
            "projects/p/images/x",
            "projects/p/global/images/Bad_Name",
            "",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
