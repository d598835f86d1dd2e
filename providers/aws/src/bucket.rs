//! Buckets: made in the first deploying region of their continent and tagged with it; the
//! input bucket is only read; only the checkpoint bucket goes with its deployment, and only
//! if anycloud made it.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::ownership::UntaggedCreates;
use anycloud_provider::{
    attr_str, write_private, Attrs, BucketRole, ErrorCode, Kind, NodeSpec, Planned, Preflight,
    Result, Target,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::Clients;
use crate::{owner, s3};

/// What anycloud keeps of a bucket for itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct BucketPrivate {
    /// Where a bucket that does not exist yet is made.
    home_region: String,
}

/// The seed's words for a bucket that lives in another continent.
pub fn continent_error(bucket: &str, exists_in: &str, deploying_to: &str) -> String {
    format!(
        "Error: Bucket '{bucket}' already exists in continent '{exists_in}' but you are deploying to continent '{deploying_to}'.\nPlease use a different bucket name in anycloud.yaml."
    )
}

/// A continent's storage on AWS is its buckets: nothing to make of its own.
pub fn plan_storage(node: NodeSpec<'_>) -> Planned {
    let mut attrs = Attrs::new();
    if let Some(p) = &node.deployment.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("continent".into(), json!(node.deployment.continent));
    Planned {
        attrs,
        ..Planned::default()
    }
}

pub fn plan(node: NodeSpec<'_>) -> Result<Planned> {
    let (role, bucket) = node.bucket()?;
    let mut attrs = Attrs::new();
    if let Some(p) = &node.deployment.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("name".into(), json!(bucket.name));
    attrs.insert("continent".into(), json!(bucket.continent));
    attrs.insert("role".into(), json!(role));
    Ok(Planned {
        attrs,
        private: write_private(&BucketPrivate {
            home_region: bucket.region.clone(),
        }),
        computed: vec!["region".into(), "managed".into()],
        force_new: vec!["name".into()],
        // Only the checkpoint bucket goes with its deployment (and only if anycloud made
        // it); input and output outlive it.
        keep_on_destroy: role != BucketRole::Checkpoint,
        warnings: vec![],
    })
}

fn role_of(t: &Target<'_>) -> Option<BucketRole> {
    serde_json::from_value(t.attrs.get("role")?.clone()).ok()
}

/// Checks every bucket still to be made against the live account before any change: its
/// continent, and that a checkpoint bucket that exists is this state's.
pub async fn preflight(
    clients: &Clients,
    targets: &[Target<'_>],
    untagged: &UntaggedCreates,
) -> Result<Preflight> {
    let mut found = Preflight::default();
    let buckets: Vec<&Target> = targets.iter().filter(|t| t.kind == Kind::Bucket).collect();
    if buckets.is_empty() {
        return Ok(found);
    }
    let existing = s3::list(clients).await?;
    let mut seen = BTreeSet::new();
    for t in buckets {
        let name = attr_str(t.attrs, "name")?;
        let continent = attr_str(t.attrs, "continent")?;
        if !seen.insert(name) {
            continue;
        }
        let input = role_of(t) == Some(BucketRole::Input);
        match existing.get(name) {
            Some(listed_region) => {
                let region = match listed_region {
                    Some(r) => r.clone(),
                    None => s3::region_of(clients, name).await?,
                };
                let theirs = s3::continent_of(clients, name, &region).await?;
                if theirs != continent {
                    found.errors.push(continent_error(name, &theirs, continent));
                    continue;
                }
                if role_of(t) == Some(BucketRole::Checkpoint) {
                    let record = untagged.record(t);
                    let (whose, _) =
                        s3::owner_in(clients, name, &region, t.lineage, record).await?;
                    let what = format!("checkpoint bucket '{name}'");
                    if let Err(e) = owner::must_be_ours(&whose, &what, t.lineage) {
                        found.errors.push(format!("Error: {}", e.message));
                        continue;
                    }
                }
                if !input {
                    found.notes.push(format!(
                        "{}: bucket '{name}' already exists in {region} (continent '{theirs}'): it will be used as it is",
                        t.address
                    ));
                }
            }
            // A new name: free, or another account's (CreateBucket would fail later).
            None => {
                if !input && s3::taken_elsewhere(clients, name).await? {
                    found.errors.push(format!(
                        "Error: Bucket '{name}' is taken by another AWS account.\nPlease use a different bucket name in anycloud.yaml."
                    ));
                }
            }
        }
    }
    Ok(found)
}

pub async fn read(
    clients: &Clients,
    t: &Target<'_>,
    listed: Option<&BTreeMap<String, Option<String>>>,
) -> Result<Option<Attrs>> {
    let name = attr_str(t.attrs, "name")?;
    let input = role_of(t) == Some(BucketRole::Input);
    Ok(match listed.and_then(|b| b.get(name)) {
        // Another account's input bucket is not in our listing, yet readable.
        None if input && s3::readable(clients, name).await? => Some(t.attrs.clone()),
        None => None,
        Some(region) => {
            let mut a = t.attrs.clone();
            let region = match (region, a.get("region")) {
                (Some(r), _) => Some(r.clone()),
                (None, Some(prior)) => prior.as_str().map(String::from),
                (None, None) => Some(s3::region_of(clients, name).await?),
            };
            a.insert("region".into(), json!(region));
            Some(a)
        }
    })
}

pub async fn create(
    clients: &Clients,
    t: &Target<'_>,
    untagged: &UntaggedCreates,
) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    let private: BucketPrivate = t.private()?;
    let whose = s3::create(
        clients,
        name,
        &private.home_region,
        attr_str(a, "continent")?,
        a.get("project").and_then(|p| p.as_str()),
        t.lineage,
        untagged.record(t),
        || untagged.made(t),
    )
    .await?;
    // A checkpoint bucket is named after its deployment: another state's of the same name
    // holds another job's checkpoints, the user's own bucket of that name something else
    // again, which this job must neither restore nor overwrite. An input or output bucket
    // not ours is used as it is, and never changed or deleted.
    if role_of(t) == Some(BucketRole::Checkpoint) {
        owner::must_be_ours(&whose, &format!("checkpoint bucket '{name}'"), t.lineage)?;
    }
    let mut out = a.clone();
    out.insert("region".into(), json!(s3::region_of(clients, name).await?));
    out.insert("managed".into(), json!(whose.ours()));
    Ok(out)
}

/// Only the checkpoint bucket is ever deleted (the engine only forgets the others), and
/// only if it is this state's.
pub async fn delete(clients: &Clients, t: &Target<'_>, untagged: &UntaggedCreates) -> Result<()> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    if role_of(t) != Some(BucketRole::Checkpoint) {
        return Ok(());
    }
    // A create cut short recorded no answer: the bucket's tags (or the record of a create
    // cut short before them) say whose it is. Only this state's bucket is ever deleted (its
    // tags are asked again: never another's).
    let recorded = a.get("managed").and_then(|m| m.as_bool());
    if recorded == Some(false) {
        return Ok(());
    }
    match s3::owner_of(clients, name, t.lineage, untagged.record(t)).await? {
        Some(whose) if !whose.leaves(&format!("checkpoint bucket '{name}'")) => {}
        _ => return Ok(()),
    }
    match s3::delete(clients, name).await {
        Err(e) if e.is(ErrorCode::NotFound) => Ok(()),
        other => other,
    }
}
