//! A grant: a statement of a bucket's policy admitting the deployment's role (read and
//! write on the output and checkpoint buckets). Planned, diffed and deleted on its own, so
//! dropping a bucket from a deployment removes exactly its statement.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::{
    attr_str, Attrs, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use serde_json::json;

use crate::clients::Clients;
use crate::{iam, s3};

/// What the VM's uploads need: `rclone copy` lists, reads and writes, and never deletes.
const ACTIONS: [&str; 3] = ["s3:ListBucket", "s3:GetObject", "s3:PutObject"];

/// Bucket policy statement ids allow only letters and digits: the role's name without its
/// dashes, plus a digest of the whole name so `train-1` and `train1` never share one.
pub fn statement_id(role: &str) -> String {
    let plain: String = role.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!(
        "{plain}{}",
        &anycloud_provider::digest::sha256_hex(role)[..8]
    )
}

pub fn plan(node: NodeSpec<'_>) -> Result<Planned> {
    let (_, bucket) = node.bucket()?;
    let role = iam::role_name(&node.deployment.id);
    let mut attrs = Attrs::new();
    attrs.insert("bucket".into(), json!(bucket.name));
    attrs.insert("role".into(), json!(role));
    attrs.insert("sid".into(), json!(statement_id(&role)));
    attrs.insert("actions".into(), json!(ACTIONS));
    Ok(Planned {
        attrs,
        force_new: vec!["bucket".into(), "role".into(), "sid".into()],
        ..Planned::default()
    })
}

/// Where the grant's bucket lives: as its bucket resource recorded it, else asked.
async fn bucket_region(clients: &Clients, t: &Target<'_>, bucket: &str) -> Result<String> {
    match t
        .dep(Kind::Bucket)
        .and_then(|b| b.get("region"))
        .and_then(|r| r.as_str())
    {
        Some(r) => Ok(r.to_owned()),
        None => s3::region_of(clients, bucket).await,
    }
}

/// Whether anycloud made the grant's bucket: only such a bucket's policy is ever edited. A
/// bucket of the user's own keeps its policy; the role's own policy lets the VM write it.
fn bucket_is_managed(t: &Target<'_>) -> bool {
    t.dep(Kind::Bucket)
        .and_then(|b| b.get("managed"))
        .and_then(|m| m.as_bool())
        .unwrap_or(true)
}

pub async fn create(clients: &Clients, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let bucket = attr_str(a, "bucket")?;
    if !bucket_is_managed(t) {
        anycloud_provider::output::line(&format!(
            "bucket {bucket} is not anycloud's: its policy is left as it is (the role's own policy admits the VM)"
        ));
        return Ok(a.clone());
    }
    let arn = t
        .dep(Kind::Role)
        .and_then(|r| r.get("arn"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| ProviderError::permanent("the role's ARN is not recorded yet"))?;
    let region = bucket_region(clients, t, bucket).await?;
    let statement = json!({
        "Sid": attr_str(a, "sid")?,
        "Effect": "Allow",
        "Principal": {"AWS": arn},
        "Action": a.get("actions").cloned().unwrap_or(json!(ACTIONS)),
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]
    });
    s3::admit(clients, bucket, &region, attr_str(a, "sid")?, statement).await?;
    Ok(a.clone())
}

/// A grant stands while its bucket and its role do (read from the listings a refresh makes
/// anyway: no call per bucket).
pub fn read(
    t: &Target<'_>,
    buckets: Option<&BTreeMap<String, Option<String>>>,
    roles: Option<&(BTreeSet<String>, BTreeSet<String>)>,
) -> Option<Attrs> {
    let bucket = attr_str(t.attrs, "bucket").ok()?;
    let role = attr_str(t.attrs, "role").ok()?;
    let bucket_there = buckets.is_some_and(|b| b.contains_key(bucket));
    let role_there = roles.is_some_and(|(r, _)| r.contains(role));
    (bucket_there && role_there).then(|| t.attrs.clone())
}

pub async fn delete(clients: &Clients, t: &Target<'_>) -> Result<()> {
    let a = t.attrs;
    let bucket = attr_str(a, "bucket")?;
    if !bucket_is_managed(t) {
        return Ok(());
    }
    let region = match bucket_region(clients, t, bucket).await {
        Ok(r) => r,
        Err(e) if e.is(ErrorCode::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    s3::dismiss(clients, bucket, &region, attr_str(a, "sid")?).await
}
