//! The deployment's role `anycloud-{id}`: EC2 may assume it, its one inline policy names only
//! the deployment's buckets (input read-only), and an instance profile of the same name puts
//! it on the VM. No access key is ever made.

use std::collections::BTreeSet;

use anycloud_provider::{
    attr_str, Attrs, BucketRole, DeploymentSpec, ErrorCode, Kind, Planned, Result, Target,
};
use serde_json::json;

use crate::clients::Clients;
use crate::{iam, s3};

pub fn plan(spec: &DeploymentSpec) -> Planned {
    let name = iam::role_name(&spec.id);
    let input = spec.bucket(BucketRole::Input).map(|b| b.name.as_str());
    let writable: Vec<&str> = [BucketRole::Output, BucketRole::Checkpoint]
        .iter()
        .filter_map(|r| spec.bucket(*r).map(|b| b.name.as_str()))
        .collect();
    let policy = iam::bucket_policy(input, &writable);
    let mut attrs = Attrs::new();
    if let Some(p) = &spec.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("name".into(), json!(name));
    attrs.insert("instance_profile".into(), json!(name));
    attrs.insert(
        "trust_policy".into(),
        json!(serde_json::to_string_pretty(&iam::trust_policy()).expect("json")),
    );
    attrs.insert(
        "policy".into(),
        json!(serde_json::to_string_pretty(&policy).expect("json")),
    );
    Planned {
        attrs,
        computed: vec!["arn".into()],
        force_new: vec!["name".into()],
        ..Planned::default()
    }
}

/// A role exists when both it and its instance profile are listed.
pub fn read(
    t: &Target<'_>,
    existing: Option<&(BTreeSet<String>, BTreeSet<String>)>,
) -> Option<Attrs> {
    let name = attr_str(t.attrs, "name").ok()?;
    existing
        .filter(|(roles, profiles)| roles.contains(name) && profiles.contains(name))
        .map(|_| t.attrs.clone())
}

pub async fn ensure(clients: &Clients, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "name")?;
    let arn = iam::ensure(
        clients,
        name,
        attr_str(a, "policy")?,
        a.get("project").and_then(|p| p.as_str()),
        t.lineage,
    )
    .await?;
    let mut out = a.clone();
    out.insert("arn".into(), json!(arn));
    Ok(out)
}

/// Removes the role. Its statements in the buckets' policies are the grants', deleted
/// before it; a state from before grants were resources has none, so the role takes any
/// statement of its own still there with it.
pub async fn delete(clients: &Clients, t: &Target<'_>) -> Result<()> {
    let name = attr_str(t.attrs, "name")?;
    match iam::ownership(clients, name, t.lineage).await {
        Ok(owner) if owner.leaves(&format!("IAM role {name}")) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.is(ErrorCode::NotFound) => {}
        Err(e) => return Err(e),
    }
    let sid = crate::grant::statement_id(name);
    for bucket in t.deps_of(Kind::Bucket) {
        if bucket.attrs.get("role").and_then(|r| r.as_str()) == Some("input") {
            continue;
        }
        let Ok(bucket_name) = attr_str(bucket.attrs, "name") else {
            continue;
        };
        let region = match bucket.attrs.get("region").and_then(|r| r.as_str()) {
            Some(r) => r.to_owned(),
            None => match s3::region_of(clients, bucket_name).await {
                Ok(r) => r,
                Err(e) if e.is(ErrorCode::NotFound) => continue,
                Err(e) => return Err(e),
            },
        };
        s3::dismiss(clients, bucket_name, &region, &sid).await?;
    }
    iam::delete(clients, name, t.lineage).await
}
