//! The deployment's role `anycloud-{id}`: EC2 may assume it, its one inline policy names only
//! the deployment's buckets (input read-only), and an instance profile of the same name puts
//! it on the VM. No access key is ever made: the VM's rclone uses the instance role.

use std::collections::BTreeSet;

use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde_json::{json, Value};

use crate::clients::Clients;
use crate::errors::{classify, code};
use crate::owner::{self, Owner, Record};

/// Every role and instance profile anycloud makes lives under this path, so one listing
/// finds them all.
pub const PATH: &str = "/anycloud/";
pub const POLICY_NAME: &str = "anycloud-buckets";

pub fn role_name(deployment: &str) -> String {
    format!("anycloud-{deployment}")
}

pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// Read (list, get) on the input bucket; read and write on the output and checkpoint buckets.
pub fn bucket_policy(input: Option<&str>, writable: &[&str]) -> Value {
    let mut statements = Vec::new();
    if let Some(b) = input {
        statements.push(json!({
            "Sid": "InputReadOnly",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"],
            "Resource": [format!("arn:aws:s3:::{b}"), format!("arn:aws:s3:::{b}/*")]
        }));
    }
    if !writable.is_empty() {
        let mut resources = Vec::new();
        for b in writable {
            resources.push(format!("arn:aws:s3:::{b}"));
            resources.push(format!("arn:aws:s3:::{b}/*"));
        }
        statements.push(json!({
            "Sid": "OutputAndCheckpointReadWrite",
            "Effect": "Allow",
            "Action": [
                "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"
            ],
            "Resource": resources
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Makes (or completes) the role, its policy and its instance profile. Returns the role's ARN.
pub async fn ensure(
    clients: &Clients,
    name: &str,
    policy: &str,
    project: Option<&str>,
    lineage: &str,
) -> Result<String> {
    let iam = clients.iam().await;
    let trust = trust_policy().to_string();
    let mut tags = Vec::new();
    for (k, v) in owner::tags(lineage, project) {
        tags.push(
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ProviderError::permanent(e.to_string()))?,
        );
    }
    let create = iam
        .create_role()
        .role_name(name)
        .path(PATH)
        .assume_role_policy_document(&trust)
        .description("anycloud: the deployment's VM reads and writes its buckets with this role")
        .set_tags(Some(tags.clone()));
    let arn = match create.send().await {
        Ok(out) => out.role().map(|r| r.arn().to_owned()).unwrap_or_default(),
        Err(e) if code(&e) == Some("EntityAlreadyExists") => {
            // A role of another state's, or the user's own, is never adopted: CreateRole tags
            // what it makes, so an untagged role of this name is not this state's. One of
            // ours is completed.
            owner::must_be_ours(
                &ownership(clients, name, lineage).await?,
                &format!("IAM role {name}"),
                lineage,
            )?;
            iam.tag_role()
                .role_name(name)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| classify(&format!("TagRole {name}"), e))?;
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(&trust)
                .send()
                .await
                .map_err(|e| classify(&format!("UpdateAssumeRolePolicy {name}"), e))?;
            let out = iam
                .get_role()
                .role_name(name)
                .send()
                .await
                .map_err(|e| classify(&format!("GetRole {name}"), e))?;
            out.role().map(|r| r.arn().to_owned()).unwrap_or_default()
        }
        Err(e) => return Err(classify(&format!("CreateRole {name}"), e)),
    };
    // IAM refuses a policy without statements: a deployment with no buckets has none.
    let empty = serde_json::from_str::<Value>(policy)
        .ok()
        .and_then(|p| p["Statement"].as_array().map(|s| s.is_empty()))
        .unwrap_or(false);
    if empty {
        match iam
            .delete_role_policy()
            .role_name(name)
            .policy_name(POLICY_NAME)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code(&e) == Some("NoSuchEntity") => {}
            Err(e) => return Err(classify(&format!("DeleteRolePolicy {name}"), e)),
        }
    } else {
        iam.put_role_policy()
            .role_name(name)
            .policy_name(POLICY_NAME)
            .policy_document(policy)
            .send()
            .await
            .map_err(|e| classify(&format!("PutRolePolicy {name}"), e))?;
    }
    match iam
        .create_instance_profile()
        .instance_profile_name(name)
        .path(PATH)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if code(&e) == Some("EntityAlreadyExists") => {}
        Err(e) => return Err(classify(&format!("CreateInstanceProfile {name}"), e)),
    }
    let profile = iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(|e| {
            // Made a moment ago (above): IAM does not show it everywhere yet.
            let e = classify(&format!("GetInstanceProfile {name}"), e);
            if e.is(ErrorCode::NotFound) {
                ProviderError::new(ErrorCode::Propagating, e.message)
            } else {
                e
            }
        })?;
    let has_role = profile
        .instance_profile()
        .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == name));
    if !has_role {
        match iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code(&e) == Some("LimitExceeded") => {}
            Err(e) => return Err(classify(&format!("AddRoleToInstanceProfile {name}"), e)),
        }
    }
    Ok(arn)
}

/// The names of every anycloud role and every anycloud instance profile (one listing each).
pub async fn existing(clients: &Clients) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let iam = clients.iam().await;
    let roles = iam
        .list_roles()
        .path_prefix(PATH)
        .max_items(1000)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("ListRoles", e))?
        .into_iter()
        .map(|r| r.role_name().to_owned())
        .collect();
    let profiles = iam
        .list_instance_profiles()
        .path_prefix(PATH)
        .max_items(1000)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("ListInstanceProfiles", e))?
        .into_iter()
        .map(|p| p.instance_profile_name().to_owned())
        .collect();
    Ok((roles, profiles))
}

/// Whose the role `name` is (by its tags; CreateRole tags it as it makes it, so no record
/// excuses a missing tag).
pub async fn ownership(clients: &Clients, name: &str, lineage: &str) -> Result<Owner> {
    let out = clients
        .iam()
        .await
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| classify(&format!("GetRole {name}"), e))?;
    let tags = out
        .role()
        .map(|r| {
            r.tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(owner::of(&tags, lineage, Record::Nothing))
}

/// Removes the instance profile, the policy and the role (only this state's); what is
/// already gone is fine.
pub async fn delete(clients: &Clients, name: &str, lineage: &str) -> Result<()> {
    match ownership(clients, name, lineage).await {
        Ok(owner) if owner.leaves(&format!("IAM role {name}")) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.is(ErrorCode::NotFound) => {}
        Err(e) => return Err(e),
    }
    let iam = clients.iam().await;
    let gone = |e: &Option<&str>| *e == Some("NoSuchEntity");
    if let Err(e) = iam
        .remove_role_from_instance_profile()
        .instance_profile_name(name)
        .role_name(name)
        .send()
        .await
    {
        if !gone(&code(&e)) {
            return Err(classify(
                &format!("RemoveRoleFromInstanceProfile {name}"),
                e,
            ));
        }
    }
    if let Err(e) = iam
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        if !gone(&code(&e)) {
            return Err(classify(&format!("DeleteInstanceProfile {name}"), e));
        }
    }
    if let Err(e) = iam
        .delete_role_policy()
        .role_name(name)
        .policy_name(POLICY_NAME)
        .send()
        .await
    {
        if !gone(&code(&e)) {
            return Err(classify(&format!("DeleteRolePolicy {name}"), e));
        }
    }
    if let Err(e) = iam.delete_role().role_name(name).send().await {
        if !gone(&code(&e)) {
            return Err(classify(&format!("DeleteRole {name}"), e));
        }
    }
    Ok(())
}
