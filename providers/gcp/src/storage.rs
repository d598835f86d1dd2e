//! A continent's shared storage: the Cloud Storage bucket `anycloud-{C}-{projectPrefix}` in
//! the region of the first deployment of the continent (first wins), uniform bucket-level
//! access, labelled with its continent, project and the lineage of the state that made it;
//! reused by every later deployment of the continent, whatever its region, and kept on
//! destroy. The deployments' buckets are top-level prefixes in it (see `prefix.rs`).
//!
//! Bucket names are global across Google Cloud. One of this project (listed by
//! `buckets.list?project=`) is adopted; one that exists elsewhere fails the plan naming it.

use anycloud_provider::{
    attr_str, Attrs, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use http::Method;
use serde_json::{json, Value};

use crate::{naming, owner, Cx};

pub fn plan(node: NodeSpec<'_>, project: &str) -> Planned {
    let d = node.deployment;
    let mut attrs = Attrs::new();
    if let Some(p) = &d.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("continent".into(), json!(d.continent));
    // The plan names where the bucket lives: the first deployment's region of the continent.
    attrs.insert("region".into(), json!(d.region));
    attrs.insert("gcp_project".into(), json!(project));
    attrs.insert(
        "bucket".into(),
        json!(naming::continent_bucket(&d.continent, project)),
    );
    Planned {
        attrs,
        computed: vec!["location".into()],
        force_new: vec!["bucket".into()],
        // Shared by every deployment of the continent, and by other states: only forgotten.
        keep_on_destroy: true,
        ..Planned::default()
    }
}

/// The project's buckets (one call, paged).
pub async fn list(cx: &Cx<'_>) -> Result<Vec<Value>> {
    cx.g.list(
        &format!(
            "{}/b?project={}",
            cx.s.storage(),
            crate::api::encode(&cx.project)
        ),
        "items",
    )
    .await
}

fn found(t: &Target<'_>, bucket: &Value) -> Attrs {
    let mut a = t.attrs.clone();
    a.insert(
        "location".into(),
        bucket.get("location").cloned().unwrap_or(Value::Null),
    );
    a
}

pub fn read(t: &Target<'_>, buckets: &[Value]) -> Result<Option<Attrs>> {
    let name = attr_str(t.attrs, "bucket")?;
    Ok(buckets
        .iter()
        .find(|b| b.get("name").and_then(|n| n.as_str()) == Some(name))
        .map(|b| found(t, b)))
}

/// Makes the bucket unless this project has it already; adopts it when it does (another
/// state's, a concurrent apply's: the continent's storage is shared).
pub async fn create(cx: &Cx<'_>, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let made = ensure(
        cx,
        &Bucket {
            name: attr_str(a, "bucket")?,
            region: attr_str(a, "region")?,
            continent: attr_str(a, "continent")?,
            project: a.get("project").and_then(|p| p.as_str()),
            lineage: Some(t.lineage),
        },
    )
    .await?;
    Ok(found(t, &made))
}

/// A continent bucket to make.
pub struct Bucket<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub continent: &'a str,
    /// The config's project, for the label.
    pub project: Option<&'a str>,
    /// The state making it; none when `anycloud bucket upload` makes it before any apply
    /// (the first apply adopts it: the continent's bucket is shared, never deleted).
    pub lineage: Option<&'a str>,
}

/// The bucket as this project has it, made first if it has not.
pub async fn ensure(cx: &Cx<'_>, b: &Bucket<'_>) -> Result<Value> {
    if let Some(existing) = find(cx, b.name).await? {
        return Ok(existing);
    }
    let mut labels = match b.lineage {
        Some(lineage) => owner::labels(lineage, b.project, &[("anycloud-continent", b.continent)]),
        None => json!({"anycloud-continent": b.continent}),
    };
    if let (None, Some(p)) = (b.lineage, b.project) {
        labels[owner::PROJECT] = json!(owner::label_value(p));
    }
    let body = json!({
        "name": b.name,
        "location": b.region,
        "storageClass": "STANDARD",
        "labels": labels,
        "iamConfiguration": {
            // IAM only (the deployments' prefix-conditioned bindings): no object ACLs.
            "uniformBucketLevelAccess": {"enabled": true},
            "publicAccessPrevention": "enforced",
        },
    });
    let url = format!(
        "{}/b?project={}",
        cx.s.storage(),
        crate::api::encode(&cx.project)
    );
    let reply = cx.g.send(Method::POST, &url, Some(&body)).await?;
    if reply.status.as_u16() == 409 {
        // A concurrent apply of this project made it meanwhile (use it), or the name is
        // another project's.
        return match find(cx, b.name).await? {
            Some(existing) => Ok(existing),
            None => Err(taken(b.name, &cx.project)),
        };
    }
    if !reply.status.is_success() {
        return Err(crate::api::error_of(&Method::POST, &url, &reply));
    }
    Ok(reply.body)
}

/// The bucket of this name in the project, if there is one.
async fn find(cx: &Cx<'_>, name: &str) -> Result<Option<Value>> {
    Ok(list(cx)
        .await?
        .into_iter()
        .find(|b| b.get("name").and_then(|n| n.as_str()) == Some(name)))
}

fn taken(name: &str, project: &str) -> ProviderError {
    ProviderError::new(
        ErrorCode::Conflict,
        format!(
            "bucket '{name}' belongs to another Google Cloud project than {project}: bucket names are global. anycloud derives it from the continent and this project's id; use another project, or ask the bucket's owner"
        ),
    )
}

/// Before any change: every continent bucket still to be made must be free or this
/// project's (one list, and one look per new bucket name).
pub async fn preflight(cx: &Cx<'_>, targets: &[Target<'_>]) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    let mut ours: Option<Vec<Value>> = None;
    for t in targets.iter().filter(|t| t.kind == Kind::Storage) {
        let name = attr_str(t.attrs, "bucket")?;
        if ours.is_none() {
            ours = Some(list(cx).await?);
        }
        let listed = ours
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|b| b.get("name").and_then(|n| n.as_str()) == Some(name));
        if listed {
            continue;
        }
        // Not this project's: free only if nobody has it (404); a 403 is someone's.
        let url = format!("{}/b/{name}", cx.s.storage());
        let reply = cx.g.send(Method::GET, &url, None).await?;
        match reply.status.as_u16() {
            404 => {}
            200 | 403 => errors.push(format!("{}: {}", t.address, taken(name, &cx.project))),
            _ => return Err(crate::api::error_of(&Method::GET, &url, &reply)),
        }
    }
    Ok(errors)
}
