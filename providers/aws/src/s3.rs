//! Buckets: made in the first deploying region of their continent and tagged with it;
//! found with one ListBuckets; deleted (only the checkpoint bucket, only if anycloud made it)
//! in the region GetBucketLocation names.

use std::collections::BTreeMap;

use anycloud_provider::{ErrorCode, ProviderError, Result};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier, Tag, Tagging,
};

use crate::clients::Clients;
use crate::errors::{classify, code};
use crate::owner::{self, Owner, Record};

pub const CONTINENT_TAG: &str = "anycloud:continent";
pub const MANAGED_TAG: &str = "anycloud:managed";

/// Every bucket of the account, with its region where ListBuckets tells it.
pub async fn list(clients: &Clients) -> Result<BTreeMap<String, Option<String>>> {
    // With max_buckets S3 also answers each bucket's region (BucketRegion).
    let buckets = clients
        .s3("us-east-1")
        .await
        .list_buckets()
        .max_buckets(10_000)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("ListBuckets", e))?;
    Ok(buckets
        .into_iter()
        .filter_map(|b| Some((b.name()?.to_owned(), b.bucket_region().map(String::from))))
        .collect())
}

/// The bucket's region (GetBucketLocation: empty means us-east-1, `EU` eu-west-1).
pub async fn region_of(clients: &Clients, name: &str) -> Result<String> {
    let out = clients
        .s3("us-east-1")
        .await
        .get_bucket_location()
        .bucket(name)
        .send()
        .await
        .map_err(|e| classify(&format!("GetBucketLocation {name}"), e))?;
    Ok(match out.location_constraint().map(|c| c.as_str()) {
        None | Some("") => "us-east-1".to_owned(),
        Some("EU") => "eu-west-1".to_owned(),
        Some(r) => r.to_owned(),
    })
}

/// The continent a bucket belongs to: its tag, else its region's continent.
pub async fn continent_of(clients: &Clients, name: &str, region: &str) -> Result<String> {
    let tags = clients
        .s3(region)
        .await
        .get_bucket_tagging()
        .bucket(name)
        .send()
        .await;
    match tags {
        Ok(t) => {
            if let Some(tag) = t.tag_set().iter().find(|t| t.key() == CONTINENT_TAG) {
                return Ok(tag.value().to_owned());
            }
        }
        Err(e) if code(&e) == Some("NoSuchTagSet") => {}
        Err(e) => return Err(classify(&format!("GetBucketTagging {name}"), e)),
    }
    crate::regions::continent(region)
        .map(String::from)
        .ok_or_else(|| {
            ProviderError::permanent(format!(
                "bucket {name} is in {region}, a region anycloud does not know the continent of; tag it {CONTINENT_TAG}"
            ))
        })
}

/// What HeadBucket answers for a name: 200 ours or readable, 301 in another region,
/// 403 someone else's, 404 free.
async fn head_status(clients: &Clients, name: &str) -> Result<u16> {
    match clients
        .s3("us-east-1")
        .await
        .head_bucket()
        .bucket(name)
        .send()
        .await
    {
        Ok(_) => Ok(200),
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            Some(status @ (301 | 403 | 404)) => Ok(status),
            _ => Err(classify(&format!("HeadBucket {name}"), e)),
        },
    }
}

/// Whether a name absent from this account's listing exists all the same: it is another
/// account's (whether or not it lets us in), and CreateBucket would fail.
pub async fn taken_elsewhere(clients: &Clients, name: &str) -> Result<bool> {
    Ok(head_status(clients, name).await? != 404)
}

/// Whether the bucket exists and this account may read it (another region's bucket answers
/// 301 and is read there).
pub async fn readable(clients: &Clients, name: &str) -> Result<bool> {
    Ok(matches!(head_status(clients, name).await?, 200 | 301))
}

/// Whose an existing bucket in `region` is, by its tags (the managed tag alone says
/// nothing: a bucket without this state's lineage is another state's or the user's own),
/// and whether it carries a lineage at all.
pub async fn owner_in(
    clients: &Clients,
    name: &str,
    region: &str,
    lineage: &str,
    record: Record,
) -> Result<(Owner, bool)> {
    let tags = tags_of(clients, name, region).await?;
    Ok((
        owner::of(&tags, lineage, record),
        tags.contains_key(owner::LINEAGE_TAG),
    ))
}

/// Makes the bucket and tags it (continent, managed, project, lineage), unless it exists
/// already: then it is used as it is, and says whose it is. us-east-1 answers CreateBucket
/// with success for a bucket one already owns, so existence is asked first: a bucket of
/// the user's is never claimed (and so never deleted). CreateBucket takes no tags: between
/// it and PutBucketTagging, `made` records that this state made the bucket, so a create
/// cut short there finds its untagged bucket ours (`record`) and tags it.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    clients: &Clients,
    name: &str,
    region: &str,
    continent: &str,
    project: Option<&str>,
    lineage: &str,
    record: Record,
    made: impl Fn(),
) -> Result<Owner> {
    let mut found = None;
    if readable(clients, name).await? {
        found = Some(region_of(clients, name).await?);
    } else {
        let s3 = clients.s3(region).await;
        let mut request = s3.create_bucket().bucket(name);
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => {}
            // Made a moment ago: by an interrupted run of ours if it carries our tags.
            Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => {
                found = Some(region_of(clients, name).await?);
            }
            Err(e) => return Err(classify(&format!("CreateBucket {name}"), e)),
        }
    }
    let region = match found {
        Some(region) => {
            let (whose, tagged) = owner_in(clients, name, &region, lineage, record).await?;
            // Only ours untagged (made by a create of this state cut short before its
            // tags) is tagged now; anyone else's is used as it is.
            if tagged || !whose.ours() {
                return Ok(whose);
            }
            region
        }
        None => region.to_owned(),
    };
    made();
    let mut tags = vec![tag(CONTINENT_TAG, continent)?, tag(MANAGED_TAG, "true")?];
    for (k, v) in owner::tags(lineage, project) {
        tags.push(tag(k, &v)?);
    }
    clients
        .s3(&region)
        .await
        .put_bucket_tagging()
        .bucket(name)
        .tagging(
            Tagging::builder()
                .set_tag_set(Some(tags))
                .build()
                .map_err(|e| ProviderError::permanent(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| classify(&format!("PutBucketTagging {name}"), e))?;
    Ok(Owner::Ours)
}

fn tag(key: &str, value: &str) -> Result<Tag> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|e| ProviderError::permanent(e.to_string()))
}

async fn tags_of(
    clients: &Clients,
    name: &str,
    region: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    match clients
        .s3(region)
        .await
        .get_bucket_tagging()
        .bucket(name)
        .send()
        .await
    {
        Ok(t) => Ok(t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect()),
        Err(e) if code(&e) == Some("NoSuchTagSet") => Ok(Default::default()),
        Err(e) => Err(classify(&format!("GetBucketTagging {name}"), e)),
    }
}

/// Empties and deletes a bucket, in the region it lives in.
pub async fn delete(clients: &Clients, name: &str) -> Result<()> {
    let region = match region_of(clients, name).await {
        Ok(r) => r,
        Err(e) if e.is(ErrorCode::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    empty_in(clients, name, &region).await?;
    let s3 = clients.s3(&region).await;
    match s3.delete_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("NoSuchBucket") => Ok(()),
        Err(e) => Err(classify(&format!("DeleteBucket {name}"), e)),
    }
}

/// Deletes every object of a bucket, with the operator's credentials: a VM's role may
/// delete nothing (`apply --from-scratch` empties a checkpoint this way).
pub async fn empty(clients: &Clients, name: &str) -> Result<()> {
    let region = region_of(clients, name).await?;
    empty_in(clients, name, &region).await
}

async fn empty_in(clients: &Clients, name: &str, region: &str) -> Result<()> {
    let s3 = clients.s3(region).await;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(name)
            .send()
            .await
            .map_err(|e| classify(&format!("ListObjectsV2 {name}"), e))?;
        let keys: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| ObjectIdentifier::builder().key(o.key()?).build().ok())
            .collect();
        if keys.is_empty() {
            break;
        }
        let deleted = s3
            .delete_objects()
            .bucket(name)
            .delete(
                Delete::builder()
                    .set_objects(Some(keys))
                    .build()
                    .map_err(|e| ProviderError::permanent(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| classify(&format!("DeleteObjects {name}"), e))?;
        // Keys S3 would not delete (object lock, permissions) would come back forever.
        if let Some(err) = deleted.errors().first() {
            return Err(ProviderError::permanent(format!(
                "DeleteObjects {name}: {} {}: {}",
                err.key().unwrap_or("?"),
                err.code().unwrap_or("?"),
                err.message().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// Bucket policies are read, changed and written back: deployments sharing a bucket must
/// take turns, or one's statement could overwrite another's.
static POLICY_EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A turn at editing bucket `name`'s policy: this process's threads take turns by the
/// mutex, this user's processes (two applies of two projects sharing an output bucket) by a
/// lock file per bucket.
async fn policy_turn(name: &str) -> Result<(tokio::sync::MutexGuard<'static, ()>, std::fs::File)> {
    let threads = POLICY_EDITS.lock().await;
    let path = anycloud_provider::files::user_lock_dir().join(format!("s3-policy-{name}.lock"));
    let shown = path.display().to_string();
    let processes =
        tokio::task::spawn_blocking(move || anycloud_provider::files::lock_exclusive(&path))
            .await
            .map_err(|e| ProviderError::permanent(e.to_string()))?
            .map_err(|e| ProviderError::permanent(format!("locking {shown}: {e}")))?;
    Ok((threads, processes))
}

/// Adds (or replaces) the statement `sid` of a bucket's policy.
pub async fn admit(
    clients: &Clients,
    name: &str,
    region: &str,
    sid: &str,
    statement: serde_json::Value,
) -> Result<()> {
    let _turn = policy_turn(name).await?;
    let mut policy = policy_of(clients, name, region).await?;
    remove_statement(&mut policy, sid);
    policy["Statement"]
        .as_array_mut()
        .expect("a policy has statements")
        .push(statement);
    put_policy(clients, name, region, &policy).await
}

/// Removes the statement `sid` from a bucket's policy (and the policy if it is then empty).
pub async fn dismiss(clients: &Clients, name: &str, region: &str, sid: &str) -> Result<()> {
    let _turn = policy_turn(name).await?;
    let mut policy = match policy_of(clients, name, region).await {
        Ok(p) => p,
        Err(e) if e.is(ErrorCode::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !remove_statement(&mut policy, sid) {
        return Ok(());
    }
    if policy["Statement"].as_array().is_some_and(|s| s.is_empty()) {
        let s3 = clients.s3(region).await;
        return s3
            .delete_bucket_policy()
            .bucket(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("DeleteBucketPolicy {name}"), e));
    }
    put_policy(clients, name, region, &policy).await
}

fn remove_statement(policy: &mut serde_json::Value, sid: &str) -> bool {
    let Some(statements) = policy["Statement"].as_array_mut() else {
        return false;
    };
    let before = statements.len();
    statements.retain(|s| s["Sid"] != sid);
    statements.len() != before
}

async fn policy_of(clients: &Clients, name: &str, region: &str) -> Result<serde_json::Value> {
    let empty = serde_json::json!({"Version": "2012-10-17", "Statement": []});
    match clients
        .s3(region)
        .await
        .get_bucket_policy()
        .bucket(name)
        .send()
        .await
    {
        Ok(out) => {
            let text = out.policy().unwrap_or("");
            let mut policy: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                ProviderError::permanent(format!(
                    "the policy of bucket {name} is not JSON anycloud can read ({e}); it leaves it alone: add the role's statement by hand"
                ))
            })?;
            // A single statement may be written as an object: keep it, as a list of one.
            match policy.get("Statement").cloned() {
                Some(serde_json::Value::Array(_)) => {}
                Some(one @ serde_json::Value::Object(_)) => {
                    policy["Statement"] = serde_json::Value::Array(vec![one]);
                }
                None => policy["Statement"] = serde_json::json!([]),
                Some(_) => {
                    return Err(ProviderError::permanent(format!(
                        "the policy of bucket {name} has a Statement anycloud cannot read; it leaves it alone"
                    )))
                }
            }
            Ok(policy)
        }
        Err(e) if code(&e) == Some("NoSuchBucketPolicy") => Ok(empty),
        Err(e) => Err(classify(&format!("GetBucketPolicy {name}"), e)),
    }
}

async fn put_policy(
    clients: &Clients,
    name: &str,
    region: &str,
    policy: &serde_json::Value,
) -> Result<()> {
    clients
        .s3(region)
        .await
        .put_bucket_policy()
        .bucket(name)
        .policy(policy.to_string())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&format!("PutBucketPolicy {name}"), e))
}

/// Whose the bucket is; `None` when it is gone.
pub async fn owner_of(
    clients: &Clients,
    name: &str,
    lineage: &str,
    record: Record,
) -> Result<Option<Owner>> {
    let region = match region_of(clients, name).await {
        Ok(r) => r,
        Err(e) if e.is(ErrorCode::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (whose, _) = owner_in(clients, name, &region, lineage, record).await?;
    Ok(Some(whose))
}
