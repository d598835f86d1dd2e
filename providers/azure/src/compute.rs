//! The VM's Azure objects, all in the resource group `anycloud-{region}`: the region's
//! virtual network and subnet (shared by the region's deployments, kept), and the
//! deployment's own network security group (tcp/22 from `ssh_cidr` only), public IP,
//! network interface and Linux VM carrying its managed identity (Spot with eviction policy
//! Delete when asked). Each is tagged with the state's lineage; another lineage's is never
//! changed or deleted.

use std::collections::BTreeMap;

use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde_json::{json, Value};

use crate::arm::Arm;
use crate::owner;

pub const NETWORK_API: &str = "2026-01-01";
pub const COMPUTE_API: &str = "2025-04-01";

/// The region's address space; each deployment's NIC takes an address of the subnet.
const VNET_PREFIX: &str = "10.77.0.0/16";
const SUBNET_PREFIX: &str = "10.77.0.0/20";
pub const SUBNET: &str = "anycloud";

/// Debian 12 (what the VM steps are written and tested for), gen2, latest.
pub const IMAGE: (&str, &str, &str) = ("Debian", "debian-12", "12-gen2");
/// With GPUs asked and no `vm.image`: Azure's HPC image for Ubuntu 22.04, which carries
/// NVIDIA's driver (the N-series sizes need it; the Debian image has none).
pub const GPU_IMAGE: (&str, &str, &str) = ("microsoft-dsvm", "ubuntu-hpc", "2204");
/// What [`GPU_IMAGE`] is, for the plan.
pub const GPU_IMAGE_NAME: &str = "Azure HPC image, Ubuntu 22.04, with NVIDIA's driver";
/// Resource SKUs: what each VM size is and has (`capabilities`, among them `GPUs`).
pub const SKUS_API: &str = "2021-07-01";

/// The URN of an image: `publisher:offer:sku:version`.
pub fn urn(image: (&str, &str, &str)) -> String {
    format!("{}:{}:{}:latest", image.0, image.1, image.2)
}

/// A Marketplace image as Azure names it: `publisher:offer:sku:version` (version `latest` or
/// a version number).
pub fn check_image(image: &str) -> Result<(), String> {
    let parts: Vec<&str> = image.split(':').collect();
    let word = |t: &&str| {
        !t.is_empty()
            && t.len() <= 64
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let version_ok = |v: &str| {
        v == "latest"
            || (!v.is_empty()
                && v.split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
    };
    if parts.len() == 4 && parts.iter().all(word) && version_ok(parts[3]) {
        Ok(())
    } else {
        Err("is not an image URN (publisher:offer:sku:version, e.g. Debian:debian-12:12-gen2:latest)".into())
    }
}

/// The `imageReference` of a URN [`check_image`] accepted.
fn image_reference(urn: &str) -> Value {
    let mut parts = urn.splitn(4, ':');
    let mut next = || parts.next().unwrap_or_default();
    json!({"publisher": next(), "offer": next(), "sku": next(), "version": next()})
}

/// A VM size's GPUs as Resource SKUs describe it in `region` (its `GPUs` capability);
/// `None` when it has none. A size the region does not list is an error.
pub async fn gpus_of_size(
    arm: &Arm,
    subscription: &str,
    region: &str,
    size: &str,
) -> Result<Option<u64>> {
    let path = format!(
        "/subscriptions/{subscription}/providers/Microsoft.Compute/skus?$filter=location%20eq%20%27{region}%27"
    );
    let skus = arm.list(&path, SKUS_API).await?;
    let Some(sku) = skus.iter().find(|s| {
        s.get("resourceType").and_then(|t| t.as_str()) == Some("virtualMachines")
            && s.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.eq_ignore_ascii_case(size))
    }) else {
        return Err(ProviderError::permanent(format!(
            "Azure lists no VM size {size} in {region} (Resource SKUs)"
        )));
    };
    let gpus = sku
        .get("capabilities")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .find(|c| c.get("name").and_then(|n| n.as_str()) == Some("GPUs"))
        .and_then(|c| c.get("value")?.as_str()?.parse::<u64>().ok())
        .filter(|n| *n > 0);
    Ok(gpus)
}

/// The image's login user by default: not root, with passwordless sudo.
pub const ADMIN_USER: &str = "azureuser";

pub fn group_prefix(subscription: &str, group: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{group}/providers")
}

pub fn network_id(subscription: &str, group: &str, kind: &str, name: &str) -> String {
    format!(
        "{}/Microsoft.Network/{kind}/{name}",
        group_prefix(subscription, group)
    )
}

pub fn vm_id(subscription: &str, group: &str, name: &str) -> String {
    format!(
        "{}/Microsoft.Compute/virtualMachines/{name}",
        group_prefix(subscription, group)
    )
}

/// Fails unless an existing object is this state's; `None` when there is none.
async fn existing_ours(
    arm: &Arm,
    id: &str,
    api: &str,
    lineage: &str,
    what: &str,
) -> Result<Option<Value>> {
    match arm.get(id, api).await? {
        Some(found) => {
            owner::must_be_ours(&owner::of_resource(&found, lineage), what, lineage)?;
            Ok(Some(found))
        }
        None => Ok(None),
    }
}

/// The region's virtual network: made once, shared by every deployment (of any state) in
/// the region, never deleted by anycloud.
pub async fn ensure_vnet(
    arm: &Arm,
    subscription: &str,
    group: &str,
    region: &str,
    tags: &Value,
) -> Result<String> {
    let id = network_id(subscription, group, "virtualNetworks", "anycloud");
    if arm.get(&id, NETWORK_API).await?.is_none() {
        let body = json!({
            "location": region,
            "tags": tags,
            "properties": {
                "addressSpace": {"addressPrefixes": [VNET_PREFIX]},
                "subnets": [{"name": SUBNET, "properties": {"addressPrefix": SUBNET_PREFIX}}],
            },
        });
        arm.put(&id, NETWORK_API, &body).await?;
    }
    Ok(format!("{id}/subnets/{SUBNET}"))
}

/// The deployment's NSG: tcp/22 from `ssh_cidr`, nothing else inbound (Azure's default
/// rules deny the rest). Rewritten when the CIDR changes.
pub async fn ensure_nsg(
    arm: &Arm,
    id: &str,
    region: &str,
    ssh_cidr: &str,
    tags: &Value,
    lineage: &str,
    name: &str,
) -> Result<()> {
    existing_ours(
        arm,
        id,
        NETWORK_API,
        lineage,
        &format!("network security group {name}"),
    )
    .await?;
    let body = json!({
        "location": region,
        "tags": tags,
        "properties": {
            "securityRules": [{
                "name": "ssh",
                "properties": {
                    "protocol": "Tcp",
                    "sourceAddressPrefix": ssh_cidr,
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": "*",
                    "destinationPortRange": "22",
                    "access": "Allow",
                    "priority": 1000,
                    "direction": "Inbound",
                },
            }],
        },
    });
    arm.put(id, NETWORK_API, &body).await.map(|_| ())
}

pub async fn ensure_public_ip(
    arm: &Arm,
    id: &str,
    region: &str,
    tags: &Value,
    lineage: &str,
    name: &str,
) -> Result<()> {
    if existing_ours(arm, id, NETWORK_API, lineage, &format!("public IP {name}"))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let body = json!({
        "location": region,
        "tags": tags,
        "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
    });
    arm.put(id, NETWORK_API, &body).await.map(|_| ())
}

pub struct Nic<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub region: &'a str,
    pub subnet: &'a str,
    pub public_ip: &'a str,
    pub nsg: &'a str,
}

pub async fn ensure_nic(arm: &Arm, nic: &Nic<'_>, tags: &Value, lineage: &str) -> Result<()> {
    if existing_ours(
        arm,
        nic.id,
        NETWORK_API,
        lineage,
        &format!("network interface {}", nic.name),
    )
    .await?
    .is_some()
    {
        return Ok(());
    }
    let body = json!({
        "location": nic.region,
        "tags": tags,
        "properties": {
            "ipConfigurations": [{
                "name": "primary",
                "properties": {
                    "subnet": {"id": nic.subnet},
                    "publicIPAddress": {"id": nic.public_ip},
                    "privateIPAllocationMethod": "Dynamic",
                },
            }],
            "networkSecurityGroup": {"id": nic.nsg},
        },
    });
    arm.put(nic.id, NETWORK_API, &body).await.map(|_| ())
}

pub struct Machine<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub region: &'a str,
    pub size: &'a str,
    /// A URN, `publisher:offer:sku:version`.
    pub image: &'a str,
    pub spot: bool,
    pub disk_gb: Option<u64>,
    pub nic: &'a str,
    pub identity: &'a str,
    pub public_key: &'a str,
    pub admin_user: &'a str,
}

/// The VM, made once: an existing one of this state is kept as it is (a changed size or
/// Spot setting replaces the VM through the plan, never here).
pub async fn ensure_vm(arm: &Arm, m: &Machine<'_>, tags: &Value, lineage: &str) -> Result<Value> {
    if let Some(found) = existing_ours(
        arm,
        m.id,
        COMPUTE_API,
        lineage,
        &format!("virtual machine {}", m.name),
    )
    .await?
    {
        return Ok(found);
    }
    let mut os_disk = json!({
        "createOption": "FromImage",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
    });
    if let Some(gb) = m.disk_gb {
        os_disk["diskSizeGB"] = json!(gb);
    }
    let mut properties = json!({
        "hardwareProfile": {"vmSize": m.size},
        "storageProfile": {
            "imageReference": image_reference(m.image),
            "osDisk": os_disk,
        },
        "osProfile": {
            "computerName": m.name,
            "adminUsername": m.admin_user,
            "linuxConfiguration": {
                "disablePasswordAuthentication": true,
                "ssh": {"publicKeys": [{
                    "path": format!("/home/{}/.ssh/authorized_keys", m.admin_user),
                    "keyData": m.public_key,
                }]},
            },
        },
        "networkProfile": {"networkInterfaces": [{"id": m.nic, "properties": {"primary": true}}]},
    });
    if m.spot {
        // Evicted VMs are deleted (not kept deallocated, still billed for their disk); -1:
        // never evicted for price, only for capacity.
        properties["priority"] = json!("Spot");
        properties["evictionPolicy"] = json!("Delete");
        properties["billingProfile"] = json!({"maxPrice": -1});
    }
    let body = json!({
        "location": m.region,
        "tags": tags,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {m.identity: {}}},
        "properties": properties,
    });
    arm.put(m.id, COMPUTE_API, &body).await
}

/// Deletes an object of this state; another's is left (and said so), a missing one is fine.
pub async fn delete_ours(arm: &Arm, id: &str, api: &str, lineage: &str, what: &str) -> Result<()> {
    match arm.get(id, api).await? {
        Some(found) if owner::of_resource(&found, lineage).ours() => arm.delete(id, api).await,
        Some(_) => {
            anycloud_provider::output::line(&format!("{what} is not this state's: left as it is"));
            Ok(())
        }
        None => Ok(()),
    }
}

/// What a refresh needs of the subscription's VMs and addresses: two calls, whatever their
/// number. VMs by lower-cased id, with their power state; public IPs by lower-cased id.
pub struct Fleet {
    pub vms: BTreeMap<String, Value>,
    pub addresses: BTreeMap<String, String>,
}

impl Fleet {
    pub async fn list(arm: &Arm, subscription: &str) -> Result<Fleet> {
        let vms = arm
            .list(
                &format!("/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines?statusOnly=true"),
                COMPUTE_API,
            )
            .await?
            .into_iter()
            .filter_map(|v| Some((v.get("id")?.as_str()?.to_ascii_lowercase(), v)))
            .collect();
        let addresses = arm
            .list(
                &format!(
                    "/subscriptions/{subscription}/providers/Microsoft.Network/publicIPAddresses"
                ),
                NETWORK_API,
            )
            .await?
            .into_iter()
            .filter_map(|ip| {
                let id = ip.get("id")?.as_str()?.to_ascii_lowercase();
                let address = ip.get("properties")?.get("ipAddress")?.as_str()?.to_owned();
                Some((id, address))
            })
            .collect();
        Ok(Fleet { vms, addresses })
    }

    /// `running`, `deallocated`, `stopped`…, from the VM's instance view; `None` when the
    /// VM is gone (deleted, or evicted with policy Delete).
    pub fn power_state(&self, id: &str) -> Option<String> {
        let vm = self.vms.get(&id.to_ascii_lowercase())?;
        let statuses = vm
            .get("properties")
            .and_then(|p| p.get("instanceView"))
            .and_then(|v| v.get("statuses"))
            .and_then(|s| s.as_array());
        let state = statuses
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("code")?.as_str())
            .find_map(|c| c.strip_prefix("PowerState/"))
            .unwrap_or("unknown");
        Some(state.to_owned())
    }

    pub fn address(&self, public_ip_id: &str) -> Option<&str> {
        self.addresses
            .get(&public_ip_id.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// The public address of a public IP, once allocated.
pub async fn address_of(arm: &Arm, id: &str) -> Result<String> {
    arm.get(id, NETWORK_API)
        .await?
        .and_then(|ip| {
            ip.get("properties")?
                .get("ipAddress")?
                .as_str()
                .map(String::from)
        })
        .ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Propagating,
                format!("public IP {id} has no address yet"),
            )
        })
}

#[cfg(test)]
mod image_tests {
    use super::{check_image, image_reference};

    #[test]
    fn images_are_urns() {
        for ok in [
            "Debian:debian-12:12-gen2:latest",
            "microsoft-dsvm:ubuntu-hpc:2204:latest",
            "Canonical:ubuntu-24_04-lts:server:24.04.202501010",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "debian-12",
            "a:b:c",
            "a:b:c:d:e",
            "a:b::latest",
            "a:b:c:v1",
            "a b:c:d:latest",
            "",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
        assert_eq!(
            image_reference("microsoft-dsvm:ubuntu-hpc:2204:latest"),
            serde_json::json!({"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"})
        );
    }
}
