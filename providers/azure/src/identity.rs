//! The deployment's identity: a user-assigned managed identity `anycloud-{D}` in the
//! resource group of its region, which its VM carries. The VM's rclone signs in as it
//! (IMDS, by its client id): no key, SAS or connection string exists anywhere.

use std::collections::BTreeMap;

use anycloud_provider::{attr_str, Attrs, DeploymentSpec, Planned, Result, Target};
use serde_json::{json, Value};

use crate::arm::Arm;
use crate::naming;
use crate::owner;
use crate::storage::ensure_group;

pub const MSI_API: &str = "2024-11-30";

pub fn path(subscription: &str, group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

pub fn plan(d: &DeploymentSpec, subscription: &str) -> Planned {
    let name = naming::identity(&d.id);
    let group = naming::region_group(&d.region);
    let mut attrs = Attrs::new();
    if let Some(p) = &d.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("id".into(), json!(path(subscription, &group, &name)));
    attrs.insert("name".into(), json!(name));
    attrs.insert("region".into(), json!(d.region));
    attrs.insert("resource_group".into(), json!(group));
    Planned {
        attrs,
        computed: vec!["client_id".into(), "principal_id".into()],
        force_new: vec!["name".into(), "region".into(), "resource_group".into()],
        ..Planned::default()
    }
}

/// Every user-assigned identity of the subscription, by lower-cased id (one call, paged).
pub async fn list(arm: &Arm, subscription: &str) -> Result<BTreeMap<String, Value>> {
    Ok(arm
        .list(
            &format!("/subscriptions/{subscription}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"),
            MSI_API,
        )
        .await?
        .into_iter()
        .filter_map(|i| Some((i.get("id")?.as_str()?.to_ascii_lowercase(), i)))
        .collect())
}

fn recorded(t: &Target<'_>, identity: &Value) -> Attrs {
    let mut a = t.attrs.clone();
    let props = identity.get("properties");
    for (attr, key) in [("client_id", "clientId"), ("principal_id", "principalId")] {
        if let Some(v) = props.and_then(|p| p.get(key)) {
            a.insert(attr.into(), v.clone());
        }
    }
    a
}

pub fn read(t: &Target<'_>, listed: &BTreeMap<String, Value>) -> Result<Option<Attrs>> {
    let id = attr_str(t.attrs, "id")?.to_ascii_lowercase();
    Ok(listed
        .get(&id)
        .filter(|i| owner::of_resource(i, t.lineage).ours())
        .map(|i| recorded(t, i)))
}

pub async fn ensure(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    let id = attr_str(a, "id")?;
    if let Some(existing) = arm.get(id, MSI_API).await? {
        owner::must_be_ours(
            &owner::of_resource(&existing, t.lineage),
            &format!("managed identity {name}"),
            t.lineage,
        )?;
        return Ok(recorded(t, &existing));
    }
    ensure_group(
        arm,
        subscription,
        attr_str(a, "resource_group")?,
        attr_str(a, "region")?,
        t.lineage,
    )
    .await?;
    let body = json!({
        "location": attr_str(a, "region")?,
        "tags": owner::tags(t.lineage, a.get("project").and_then(|p| p.as_str()), &[]),
    });
    let made = arm.put(id, MSI_API, &body).await?;
    Ok(recorded(t, &made))
}

/// Deletes the identity if it is this state's (asked again now, never taken on trust).
pub async fn delete(arm: &Arm, t: &Target<'_>) -> Result<()> {
    let id = attr_str(t.attrs, "id")?;
    match arm.get(id, MSI_API).await? {
        Some(existing) if owner::of_resource(&existing, t.lineage).ours() => {
            arm.delete(id, MSI_API).await
        }
        Some(_) => {
            anycloud_provider::output::line(&format!(
                "managed identity {} is not this state's: left as it is",
                attr_str(t.attrs, "name")?
            ));
            Ok(())
        }
        None => Ok(()),
    }
}
