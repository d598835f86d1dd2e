//! A deployment's buckets are top-level prefixes of its continent's bucket (DESIGN §4):
//! `gs://anycloud-{C}-{project}/{name}/`. The input prefix must hold objects and is only
//! read; output is never deleted; the checkpoint prefix goes with its deployment, and only
//! if this state made it.
//!
//! A prefix anycloud makes is marked by an object outside every prefix,
//! `.anycloud/prefixes/{name}`, holding the lineage and project of the state that made it:
//! two states with a deployment of one name share a project's checkpoint prefix name, and
//! the second must neither restore nor delete the first's checkpoints.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::{
    attr_str, Attrs, BucketRole, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::api::{encode, segment};
use crate::owner::{self, Owner};
use crate::{naming, Cx};

pub fn plan(node: NodeSpec<'_>, project: &str) -> Result<Planned> {
    let (role, bucket) = node.bucket()?;
    let mut attrs = Attrs::new();
    if let Some(p) = &node.deployment.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("name".into(), json!(bucket.name));
    attrs.insert("continent".into(), json!(bucket.continent));
    attrs.insert("role".into(), json!(role));
    attrs.insert(
        "bucket".into(),
        json!(naming::continent_bucket(&bucket.continent, project)),
    );
    attrs.insert("prefix".into(), json!(naming::prefix(&bucket.name)));
    Ok(Planned {
        attrs,
        computed: vec!["managed".into()],
        force_new: vec!["name".into(), "bucket".into()],
        keep_on_destroy: role != BucketRole::Checkpoint,
        ..Planned::default()
    })
}

fn role_of(t: &Target<'_>) -> Option<BucketRole> {
    serde_json::from_value(t.attrs.get("role")?.clone()).ok()
}

fn objects_url(cx: &Cx<'_>, bucket: &str) -> String {
    format!("{}/b/{bucket}/o", cx.s.storage())
}

/// The names of the prefixes marked in each continent bucket the targets use: one list per
/// bucket whatever the number of deployments.
pub async fn markers(
    cx: &Cx<'_>,
    targets: &[Target<'_>],
    buckets: &[Value],
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut marked = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Bucket) {
        let bucket = attr_str(t.attrs, "bucket")?;
        if marked.contains_key(bucket) {
            continue;
        }
        let exists = buckets
            .iter()
            .any(|b| b.get("name").and_then(|n| n.as_str()) == Some(bucket));
        if !exists {
            continue;
        }
        let names: BTreeSet<String> = {
            cx.g.list(
                &format!(
                    "{}?prefix={}",
                    objects_url(cx, bucket),
                    encode(&naming::marker(""))
                ),
                "items",
            )
            .await?
            .iter()
            .filter_map(|o| {
                o.get("name")?
                    .as_str()?
                    .strip_prefix(&naming::marker(""))
                    .map(String::from)
            })
            .collect()
        };
        marked.insert(bucket.to_owned(), names);
    }
    Ok(marked)
}

/// A prefix is there while its continent bucket is (a bucket that is gone has no entry); one
/// this state made, while its marker is.
pub fn read(t: &Target<'_>, marked: &BTreeMap<String, BTreeSet<String>>) -> Result<Option<Attrs>> {
    let bucket = attr_str(t.attrs, "bucket")?;
    let name = attr_str(t.attrs, "name")?;
    let Some(names) = marked.get(bucket) else {
        return Ok(None);
    };
    let managed = t.attrs.get("managed").and_then(|m| m.as_bool()) == Some(true);
    Ok((!managed || names.contains(name)).then(|| t.attrs.clone()))
}

async fn has_objects(cx: &Cx<'_>, bucket: &str, prefix: &str) -> Result<bool> {
    let url = format!(
        "{}?prefix={}&maxResults=1",
        objects_url(cx, bucket),
        encode(prefix)
    );
    let reply = cx.g.ok(Method::GET, &url, None).await?;
    Ok(reply
        .get("items")
        .and_then(|i| i.as_array())
        .is_some_and(|i| !i.is_empty()))
}

/// Who marked `name` in `bucket`, if anyone.
async fn marker_owner(
    cx: &Cx<'_>,
    bucket: &str,
    name: &str,
    lineage: &str,
) -> Result<Option<Owner>> {
    let url = format!(
        "{}/{}?alt=media",
        objects_url(cx, bucket),
        segment(&naming::marker(name))
    );
    let (status, _, bytes) = cx.g.raw(Method::GET, &url, &[], Bytes::new()).await?;
    match status.as_u16() {
        404 => Ok(None),
        200 => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Some(owner::of_labels(&json!({"labels": v}), lineage)))
        }
        s => Err(ProviderError::new(
            crate::api::classify(s, ""),
            format!("Google: reading the marker of prefix '{name}/' in {bucket}: {status}"),
        )),
    }
}

pub async fn create(cx: &Cx<'_>, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    let bucket = attr_str(a, "bucket")?;
    let prefix = attr_str(a, "prefix")?;
    let mut out = a.clone();
    let marked = marker_owner(cx, bucket, name, t.lineage).await?;
    match role_of(t) {
        Some(BucketRole::Checkpoint) => {
            let managed = match marked {
                Some(whose) => {
                    owner::must_be_ours(
                        &whose,
                        &format!("checkpoint prefix gs://{bucket}/{prefix}"),
                        owner::LABEL,
                        t.lineage,
                    )?;
                    true
                }
                // Objects nobody marked as a checkpoint (another deployment's output, say):
                // restoring them or writing among them could cost someone their results.
                None if has_objects(cx, bucket, prefix).await? => {
                    return Err(ProviderError::new(
                        ErrorCode::Conflict,
                        format!("gs://{bucket}/{prefix} holds objects that are no anycloud checkpoint (another bucket of that name?): give deployment '{name}' another id, or move those objects"),
                    ));
                }
                None => mark(cx, t, bucket, name).await?,
            };
            out.insert("managed".into(), json!(managed));
        }
        role => {
            // A checkpoint prefix (anyone's) is never another deployment's input or output.
            if let Some(owner) = marked {
                return Err(ProviderError::new(
                    ErrorCode::Conflict,
                    format!(
                        "gs://{bucket}/{prefix} is the checkpoint prefix of a deployment named '{name}' ({}): use another bucket name",
                        match owner {
                            Owner::Ours => "of this state".to_owned(),
                            Owner::AnotherState { lineage, .. } => format!("of the state with lineage {lineage}"),
                            Owner::Stranger => "marked by anycloud".to_owned(),
                        }
                    ),
                ));
            }
            if role == Some(BucketRole::Input) && !has_objects(cx, bucket, prefix).await? {
                return Err(ProviderError::new(
                    ErrorCode::NotFound,
                    format!("input bucket '{name}' has nothing in gs://{bucket}/{prefix}: upload the job's input first (anycloud bucket upload {name} DIR)"),
                ));
            }
            out.insert("managed".into(), json!(false));
        }
    }
    Ok(out)
}

/// Writes the marker unless one exists (`ifGenerationMatch=0`); whether this state's it is.
async fn mark(cx: &Cx<'_>, t: &Target<'_>, bucket: &str, name: &str) -> Result<bool> {
    let content = owner::labels(
        t.lineage,
        t.attrs.get("project").and_then(|p| p.as_str()),
        &[],
    );
    let url = format!(
        "{}/b/{bucket}/o?uploadType=media&name={}&ifGenerationMatch=0",
        cx.s.upload(),
        encode(&naming::marker(name))
    );
    let (status, _, _) =
        cx.g.raw(
            Method::POST,
            &url,
            &[("content-type", "application/json".to_owned())],
            Bytes::from(content.to_string()),
        )
        .await?;
    match status.as_u16() {
        200 | 201 => Ok(true),
        // Another apply marked it a moment ago: whose is it?
        412 => match marker_owner(cx, bucket, name, t.lineage).await? {
            Some(whose) => owner::must_be_ours(
                &whose,
                &format!("checkpoint prefix gs://{bucket}/{name}/"),
                owner::LABEL,
                t.lineage,
            )
            .map(|_| true),
            None => Err(ProviderError::new(
                ErrorCode::Busy,
                format!("the marker of gs://{bucket}/{name}/ is being written"),
            )),
        },
        s => Err(ProviderError::new(
            crate::api::classify(s, ""),
            format!("Google: marking prefix gs://{bucket}/{name}/: {status}"),
        )),
    }
}

/// Only the checkpoint prefix is ever deleted (the engine only forgets the others), and only
/// if this state made it: its marker is read again now, never taken from the record alone.
pub async fn delete(cx: &Cx<'_>, t: &Target<'_>) -> Result<()> {
    if role_of(t) != Some(BucketRole::Checkpoint)
        || t.attrs.get("managed").and_then(|m| m.as_bool()) != Some(true)
    {
        return Ok(());
    }
    let name = attr_str(t.attrs, "name")?;
    let bucket = attr_str(t.attrs, "bucket")?;
    let prefix = attr_str(t.attrs, "prefix")?;
    match marker_owner(cx, bucket, name, t.lineage).await {
        Ok(Some(Owner::Ours)) => {}
        Ok(Some(_)) => {
            anycloud_provider::output::line(&format!(
                "checkpoint prefix gs://{bucket}/{prefix} is not this state's: left as it is"
            ));
            return Ok(());
        }
        Ok(None) => return Ok(()),
        Err(e) if e.is(ErrorCode::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    }
    let objects =
        cx.g.list(
            &format!("{}?prefix={}", objects_url(cx, bucket), encode(prefix)),
            "items",
        )
        .await?;
    for o in &objects {
        if let Some(n) = o.get("name").and_then(|n| n.as_str()) {
            cx.g.delete(&format!("{}/{}", objects_url(cx, bucket), segment(n)))
                .await?;
        }
    }
    cx.g.delete(&format!(
        "{}/{}",
        objects_url(cx, bucket),
        segment(&naming::marker(name))
    ))
    .await?;
    Ok(())
}
