//! Buckets are blob containers in their continent's storage account, made and read through
//! Resource Manager. The input container must exist and is only read; only the checkpoint
//! container goes with its deployment, and only if this state made it.

use std::collections::BTreeMap;

use anycloud_provider::{
    attr_str, Attrs, BucketRole, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use serde_json::{json, Value};

use crate::arm::Arm;
use crate::naming;
use crate::owner;
use crate::storage::{account_path, STORAGE_API};

/// `account`: the bucket's continent's account (`AzureProvider::account`).
pub fn plan(node: NodeSpec<'_>, account: &str) -> Result<Planned> {
    let (role, bucket) = node.bucket()?;
    let mut attrs = Attrs::new();
    if let Some(p) = &node.deployment.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("name".into(), json!(bucket.name));
    attrs.insert("continent".into(), json!(bucket.continent));
    attrs.insert("role".into(), json!(role));
    attrs.insert("account".into(), json!(account));
    Ok(Planned {
        attrs,
        computed: vec!["managed".into(), "resource_group".into()],
        force_new: vec!["name".into(), "account".into()],
        keep_on_destroy: role != BucketRole::Checkpoint,
        ..Planned::default()
    })
}

fn role_of(t: &Target<'_>) -> Option<BucketRole> {
    serde_json::from_value(t.attrs.get("role")?.clone()).ok()
}

/// The account's resource group, as its storage node recorded it (an adopted account may
/// live in another group than the derived one), else as the subscription lists it, else
/// the derived one (an account still to be made).
fn group(t: &Target<'_>, accounts: &[Value]) -> Result<String> {
    if let Some(g) = t.attrs.get("resource_group").and_then(|g| g.as_str()) {
        return Ok(g.to_owned());
    }
    if let Some(g) = t
        .dep(Kind::Storage)
        .and_then(|s| s.get("resource_group"))
        .and_then(|g| g.as_str())
    {
        return Ok(g.to_owned());
    }
    let account = attr_str(t.attrs, "account")?;
    if let Some(g) = accounts
        .iter()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(account))
        .and_then(crate::storage::group_of)
    {
        return Ok(g);
    }
    Ok(naming::storage_group(attr_str(t.attrs, "continent")?))
}

pub fn container_path(subscription: &str, group: &str, account: &str, name: &str) -> String {
    format!(
        "{}/blobServices/default/containers/{name}",
        account_path(subscription, group, account)
    )
}

/// The containers of each account the targets name: one list per account.
pub async fn list(
    arm: &Arm,
    subscription: &str,
    targets: &[Target<'_>],
    accounts: &[Value],
) -> Result<BTreeMap<String, Vec<Value>>> {
    let mut by_account = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Bucket) {
        let account = attr_str(t.attrs, "account")?;
        if by_account.contains_key(account) {
            continue;
        }
        let group = group(t, accounts)?;
        let path = format!(
            "{}/blobServices/default/containers",
            account_path(subscription, &group, account)
        );
        let listed = match arm.list(&path, STORAGE_API).await {
            Err(e) if e.is(ErrorCode::NotFound) => vec![],
            other => other?,
        };
        by_account.insert(account.to_owned(), listed);
    }
    Ok(by_account)
}

pub fn read(t: &Target<'_>, listed: &BTreeMap<String, Vec<Value>>) -> Result<Option<Attrs>> {
    let name = attr_str(t.attrs, "name")?;
    let account = attr_str(t.attrs, "account")?;
    Ok(listed
        .get(account)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .map(|_| t.attrs.clone()))
}

pub async fn create(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    let account = attr_str(a, "account")?;
    let group = group(t, &[])?;
    let path = container_path(subscription, &group, account, name);
    let role = role_of(t);
    let existing = arm.get(&path, STORAGE_API).await?;
    let mut out = a.clone();
    out.insert("resource_group".into(), json!(group));
    match existing {
        Some(c) => {
            let whose = owner::of_container(&c, t.lineage);
            // A checkpoint container is named after its deployment: another state's holds
            // another job's checkpoints, which this one must neither restore nor overwrite.
            if role == Some(BucketRole::Checkpoint) {
                owner::must_be_ours(
                    &whose,
                    &format!("checkpoint container '{name}' in {account}"),
                    t.lineage,
                )?;
            }
            out.insert("managed".into(), json!(whose.ours()));
        }
        None if role == Some(BucketRole::Input) => {
            return Err(ProviderError::new(
                ErrorCode::NotFound,
                format!("input bucket '{name}' does not exist in storage account {account}: create it and upload the job's input first (anycloud bucket upload {name} DIR)"),
            ));
        }
        None => {
            let body = json!({
                "properties": {
                    "publicAccess": "None",
                    "metadata": owner::metadata(t.lineage, a.get("project").and_then(|p| p.as_str())),
                }
            });
            arm.put(&path, STORAGE_API, &body).await?;
            out.insert("managed".into(), json!(true));
        }
    }
    Ok(out)
}

/// Only the checkpoint container is ever deleted (the engine only forgets the others), and
/// only if this state made it: asked again at delete time, never taken from the record alone.
pub async fn delete(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<()> {
    if role_of(t) != Some(BucketRole::Checkpoint) {
        return Ok(());
    }
    if t.attrs.get("managed").and_then(|m| m.as_bool()) == Some(false) {
        return Ok(());
    }
    let name = attr_str(t.attrs, "name")?;
    let account = attr_str(t.attrs, "account")?;
    let group = group(t, &[])?;
    let path = container_path(subscription, &group, account, name);
    match arm.get(&path, STORAGE_API).await? {
        Some(c) if owner::of_container(&c, t.lineage).ours() => {
            arm.delete(&path, STORAGE_API).await
        }
        Some(_) => {
            anycloud_provider::output::line(&format!(
                "checkpoint container '{name}' is not this state's: left as it is"
            ));
            Ok(())
        }
        None => Ok(()),
    }
}
