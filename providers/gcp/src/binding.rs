//! A grant: a binding in the continent bucket's IAM policy for the deployment's service
//! account, conditioned on the deployment's prefix: Storage Object Viewer on input, Storage
//! Object Admin on output and checkpoint. The condition lets the account touch objects under
//! its prefix only, and list only with that prefix, so one deployment can neither read nor
//! overwrite another's results (least privilege, beyond the seed's single role).
//!
//! The policy is shared by every deployment of the continent and by other states: each edit
//! reads it, changes only this grant's binding and writes it back with the etag it read
//! (IAM policy version 3, which keeps conditions), and starts over when someone wrote in
//! between (412, or 409 ABORTED). Nobody else's binding is ever dropped. Within one process
//! the edits of a bucket's policy take turns, so the grants of many deployments do not
//! stumble over each other's etags.

use std::collections::BTreeMap;
use std::time::Duration;

use anycloud_provider::{
    attr_str, Attrs, BucketRole, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use http::Method;
use serde_json::{json, Value};

use crate::{naming, Cx};

/// Read-modify-write rounds before a contended policy is left to the engine's retries.
const ROUNDS: usize = 8;

pub const OBJECT_VIEWER: &str = "roles/storage.objectViewer";
pub const OBJECT_ADMIN: &str = "roles/storage.objectAdmin";

/// The condition confining a binding to the objects under `prefix` of `bucket`, and to
/// listings of that prefix.
pub fn expression(bucket: &str, prefix: &str) -> String {
    format!(
        "resource.name.startsWith(\"projects/_/buckets/{bucket}/objects/{prefix}\") || (resource.type == \"storage.googleapis.com/Bucket\" && api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"{prefix}\"))"
    )
}

/// What names a binding: its role and prefix (at most 8 + 7 + 1 + 63 + 1 characters, under
/// the 100 Google allows a title).
fn title(role: &str, bucket: &str) -> String {
    let short = role
        .trim_start_matches("roles/storage.object")
        .to_ascii_lowercase();
    format!("anycloud {short} {bucket}/")
}

/// How many conditional bindings Google keeps in one policy.
pub const CONDITIONAL_BINDINGS_MAX: usize = 100;

pub fn plan(node: NodeSpec<'_>, project: &str) -> Result<Planned> {
    let (role, bucket) = node.bucket()?;
    let d = node.deployment;
    let storage = naming::continent_bucket(&bucket.continent, project);
    let prefix = naming::prefix(&bucket.name);
    let iam_role = match role {
        BucketRole::Input => OBJECT_VIEWER,
        BucketRole::Output | BucketRole::Checkpoint => OBJECT_ADMIN,
    };
    let mut attrs = Attrs::new();
    attrs.insert("bucket".into(), json!(bucket.name));
    attrs.insert("storage_bucket".into(), json!(storage));
    attrs.insert(
        "member".into(),
        json!(format!(
            "serviceAccount:{}",
            naming::account_email(&d.id, project)
        )),
    );
    attrs.insert("role".into(), json!(iam_role));
    // One binding per role and prefix, found again by its title among everyone's: the
    // deployments sharing an input or output bucket are members of the same binding.
    attrs.insert("title".into(), json!(title(iam_role, &bucket.name)));
    attrs.insert("condition".into(), json!(expression(&storage, &prefix)));
    Ok(Planned {
        attrs,
        force_new: vec![
            "storage_bucket".into(),
            "member".into(),
            "role".into(),
            "condition".into(),
        ],
        ..Planned::default()
    })
}

fn policy_url(cx: &Cx<'_>, bucket: &str) -> String {
    format!("{}/b/{bucket}/iam", cx.s.storage())
}

async fn read_policy(cx: &Cx<'_>, bucket: &str) -> Result<Option<Value>> {
    cx.g.get(&format!(
        "{}?optionsRequestedPolicyVersion=3",
        policy_url(cx, bucket)
    ))
    .await
}

/// Whether `binding` is the one of `role` and `title`.
fn is(binding: &Value, role: &str, title: &str) -> bool {
    binding.get("role").and_then(|r| r.as_str()) == Some(role)
        && binding
            .get("condition")
            .and_then(|c| c.get("title"))
            .and_then(|t| t.as_str())
            == Some(title)
}

/// Before any change: the grants still to be made must leave every continent bucket's policy
/// within Google's limit of conditional bindings (one policy read per bucket).
pub async fn preflight(cx: &Cx<'_>, targets: &[Target<'_>]) -> Result<Vec<String>> {
    let mut wanted: BTreeMap<&str, std::collections::BTreeSet<(&str, &str)>> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Grant) {
        wanted
            .entry(attr_str(t.attrs, "storage_bucket")?)
            .or_default()
            .insert((attr_str(t.attrs, "role")?, attr_str(t.attrs, "title")?));
    }
    let mut errors = Vec::new();
    for (bucket, new) in wanted {
        let policy = match read_policy(cx, bucket).await {
            Ok(Some(p)) => p,
            Ok(None) => Value::Null,
            // A bucket of another project: the storage preflight says so.
            Err(e) if e.is(ErrorCode::Permission) => continue,
            Err(e) => return Err(e),
        };
        let existing: Vec<&Value> = policy
            .get("bindings")
            .and_then(|b| b.as_array())
            .map(|b| b.iter().filter(|b| b.get("condition").is_some()).collect())
            .unwrap_or_default();
        let added = new
            .iter()
            .filter(|(role, title)| !existing.iter().any(|b| is(b, role, title)))
            .count();
        let total = existing.len() + added;
        if total > CONDITIONAL_BINDINGS_MAX {
            errors.push(format!(
                "bucket {bucket}: its IAM policy would hold {total} conditional bindings ({} there, {added} more for this config's prefixes); Google keeps at most {CONDITIONAL_BINDINGS_MAX} in one policy. Share input and output buckets between deployments (they share a binding), or spread the deployments over more projects",
                existing.len()
            ));
        }
    }
    Ok(errors)
}

/// Whether `policy` has this grant's binding.
fn holds(policy: &Value, a: &Attrs) -> bool {
    let field = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    policy
        .get("bindings")
        .and_then(|b| b.as_array())
        .is_some_and(|bindings| {
            bindings.iter().any(|b| {
                b.get("role").and_then(|r| r.as_str()) == Some(field("role"))
                    && b.get("condition")
                        .and_then(|c| c.get("title"))
                        .and_then(|t| t.as_str())
                        == Some(field("title"))
                    && b.get("members")
                        .and_then(|m| m.as_array())
                        .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(field("member"))))
            })
        })
}

/// Each continent bucket's policy the targets use: one read per bucket, whatever the number
/// of grants.
pub async fn policies(
    cx: &Cx<'_>,
    targets: &[Target<'_>],
    buckets: &[Value],
) -> Result<BTreeMap<String, Value>> {
    let mut read = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Grant) {
        let bucket = attr_str(t.attrs, "storage_bucket")?;
        if read.contains_key(bucket) {
            continue;
        }
        let exists = buckets
            .iter()
            .any(|b| b.get("name").and_then(|n| n.as_str()) == Some(bucket));
        let policy = if exists {
            read_policy(cx, bucket).await?.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        read.insert(bucket.to_owned(), policy);
    }
    Ok(read)
}

pub fn read(t: &Target<'_>, policies: &BTreeMap<String, Value>) -> Result<Option<Attrs>> {
    let bucket = attr_str(t.attrs, "storage_bucket")?;
    Ok(policies
        .get(bucket)
        .filter(|p| holds(p, t.attrs))
        .map(|_| t.attrs.clone()))
}

/// Reads the policy, lets `change` edit it (false: nothing to write) and writes it back with
/// the etag read, starting over while someone else writes in between.
async fn edit(cx: &Cx<'_>, bucket: &str, change: impl Fn(&mut Value) -> bool) -> Result<()> {
    let url = policy_url(cx, bucket);
    let lock = cx.policy_locks.of(bucket);
    let _turn = lock.lock().await;
    for round in 0..ROUNDS {
        let Some(mut policy) = read_policy(cx, bucket).await? else {
            return Err(ProviderError::new(
                ErrorCode::NotFound,
                format!("bucket {bucket} is gone: its IAM policy cannot be edited"),
            ));
        };
        if !change(&mut policy) {
            return Ok(());
        }
        // Conditions are kept only by version 3.
        policy["version"] = json!(3);
        let reply = cx.g.send(Method::PUT, &url, Some(&policy)).await?;
        let status = reply.status.as_u16();
        if reply.status.is_success() {
            return Ok(());
        }
        let contended = status == 412 || (status == 409 && reply.reason() == "ABORTED");
        if contended && round + 1 < ROUNDS {
            tokio::time::sleep(Duration::from_millis(100 << round.min(5))).await;
            continue;
        }
        let mut e = crate::api::error_of(&Method::PUT, &url, &reply);
        if contended {
            e.code = ErrorCode::Busy;
            e.retry = true;
        } else if status == 400 && reply.message().contains("does not exist") {
            // A service account made a moment ago is not known to IAM everywhere yet.
            e.code = ErrorCode::Propagating;
            e.retry = true;
        }
        return Err(e);
    }
    unreachable!("the last round returns")
}

pub async fn create(cx: &Cx<'_>, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs.clone();
    let bucket = attr_str(&a, "storage_bucket")?.to_owned();
    let prefix_bucket = attr_str(&a, "bucket")?.to_owned();
    let binding = json!({
        "role": attr_str(&a, "role")?,
        "members": [attr_str(&a, "member")?],
        "condition": {
            "title": attr_str(&a, "title")?,
            "description": format!("anycloud: only objects under {prefix_bucket}/"),
            "expression": attr_str(&a, "condition")?,
        },
    });
    let (role, title) = (
        attr_str(&a, "role")?.to_owned(),
        attr_str(&a, "title")?.to_owned(),
    );
    let member = attr_str(&a, "member")?.to_owned();
    edit(cx, &bucket, |policy| {
        if holds(policy, &a) {
            return false;
        }
        if policy.get("bindings").and_then(|b| b.as_array()).is_none() {
            policy["bindings"] = json!([]);
        }
        let bindings = policy["bindings"].as_array_mut().expect("an array");
        match bindings.iter_mut().find(|b| is(b, &role, &title)) {
            Some(shared) => match shared.get_mut("members").and_then(|m| m.as_array_mut()) {
                Some(members) => members.push(json!(member)),
                None => shared["members"] = json!([member]),
            },
            None => bindings.push(binding.clone()),
        }
        true
    })
    .await?;
    Ok(a)
}

/// Removes this grant's member from its binding (and the binding once empty): nothing else.
pub async fn delete(cx: &Cx<'_>, t: &Target<'_>) -> Result<()> {
    let a = t.attrs.clone();
    let bucket = attr_str(&a, "storage_bucket")?.to_owned();
    let result = edit(cx, &bucket, |policy| {
        if !holds(policy, &a) {
            return false;
        }
        let field = |k: &str| {
            a.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (role, title, member) = (field("role"), field("title"), field("member"));
        if let Some(bindings) = policy.get_mut("bindings").and_then(|b| b.as_array_mut()) {
            for b in bindings.iter_mut() {
                let ours = b.get("role").and_then(|r| r.as_str()) == Some(&role)
                    && b.get("condition")
                        .and_then(|c| c.get("title"))
                        .and_then(|t| t.as_str())
                        == Some(&title);
                if ours {
                    if let Some(members) = b.get_mut("members").and_then(|m| m.as_array_mut()) {
                        members.retain(|m| m.as_str() != Some(&member));
                    }
                }
            }
            bindings.retain(|b| {
                b.get("members")
                    .and_then(|m| m.as_array())
                    .is_some_and(|m| !m.is_empty())
            });
        }
        true
    })
    .await;
    match result {
        Err(e) if e.is(ErrorCode::NotFound) => Ok(()),
        other => other,
    }
}
