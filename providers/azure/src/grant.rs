//! A grant: a role assignment scoped to one blob container, for the deployment's identity:
//! Storage Blob Data Contributor on output and checkpoint, Storage Blob Data Reader on
//! input (least privilege, nothing wider than a container). Its name is derived from what it
//! grants, so a repeated create is the same PUT; one that exists under another name
//! (`RoleAssignmentExists`) is found and recorded, not an error.

use std::collections::BTreeMap;

use anycloud_provider::{
    attr_str, Attrs, BucketRole, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use http::Method;
use serde_json::{json, Value};

use crate::arm::{code_of, Arm};
use crate::container::container_path;
use crate::{identity, naming};

pub const AUTHORIZATION_API: &str = "2022-04-01";

fn role_definition(subscription: &str, role: BucketRole) -> (String, &'static str) {
    let (guid, shown) = match role {
        BucketRole::Input => (naming::BLOB_DATA_READER, "Storage Blob Data Reader"),
        BucketRole::Output | BucketRole::Checkpoint => (
            naming::BLOB_DATA_CONTRIBUTOR,
            "Storage Blob Data Contributor",
        ),
    };
    (
        format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        shown,
    )
}

/// `account`: the bucket's continent's account (`AzureProvider::account`).
pub fn plan(node: NodeSpec<'_>, subscription: &str, account: &str) -> Result<Planned> {
    let (role, bucket) = node.bucket()?;
    let d = node.deployment;
    let scope = container_path(
        subscription,
        &naming::storage_group(&bucket.continent),
        account,
        &bucket.name,
    );
    let identity_id = identity::path(
        subscription,
        &naming::region_group(&d.region),
        &naming::identity(&d.id),
    );
    let (definition, shown) = role_definition(subscription, role);
    let mut attrs = Attrs::new();
    attrs.insert("bucket".into(), json!(bucket.name));
    attrs.insert("identity".into(), json!(identity_id));
    attrs.insert("role".into(), json!(shown));
    attrs.insert("role_definition".into(), json!(definition));
    attrs.insert(
        "name".into(),
        json!(naming::role_assignment(&scope, &identity_id, &definition)),
    );
    attrs.insert("scope".into(), json!(scope));
    Ok(Planned {
        attrs,
        force_new: vec![
            "bucket".into(),
            "identity".into(),
            "role_definition".into(),
            "scope".into(),
        ],
        ..Planned::default()
    })
}

/// The scope as it really is: the account may have been adopted in another resource group.
fn scope(t: &Target<'_>, subscription: &str) -> Result<String> {
    let planned = attr_str(t.attrs, "scope")?;
    let Some(bucket) = t.dep(Kind::Bucket) else {
        return Ok(planned.to_owned());
    };
    match (
        bucket.get("resource_group").and_then(|g| g.as_str()),
        bucket.get("account").and_then(|a| a.as_str()),
        bucket.get("name").and_then(|n| n.as_str()),
    ) {
        (Some(g), Some(a), Some(n)) => Ok(container_path(subscription, g, a, n)),
        _ => Ok(planned.to_owned()),
    }
}

fn assignment_path(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
}

/// Every role assignment of the subscription (at any scope within it), by lower-cased
/// name: one call, paged.
pub async fn list(arm: &Arm, subscription: &str) -> Result<BTreeMap<String, Value>> {
    Ok(arm
        .list(
            &format!(
                "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleAssignments"
            ),
            AUTHORIZATION_API,
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r.get("name")?.as_str()?.to_ascii_lowercase(), r)))
        .collect())
}

pub fn read(t: &Target<'_>, listed: &BTreeMap<String, Value>) -> Result<Option<Attrs>> {
    let name = attr_str(t.attrs, "name")?.to_ascii_lowercase();
    Ok(listed.get(&name).map(|_| t.attrs.clone()))
}

pub async fn create(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let principal = t
        .dep(Kind::Role)
        .and_then(|r| r.get("principal_id"))
        .and_then(|p| p.as_str())
        .ok_or_else(|| {
            ProviderError::permanent("the identity's principal id is not recorded yet")
        })?;
    let scope = scope(t, subscription)?;
    let name = attr_str(a, "name")?;
    let path = assignment_path(&scope, name);
    let body = json!({
        "properties": {
            "roleDefinitionId": attr_str(a, "role_definition")?,
            "principalId": principal,
            // A managed identity: no lookup of a user, and no failure while Entra ID
            // replicates the new principal.
            "principalType": "ServicePrincipal",
            "description": format!("anycloud: {} on {}", attr_str(a, "role")?, attr_str(a, "bucket")?),
        }
    });
    let reply = arm
        .send(Method::PUT, &path, Some(AUTHORIZATION_API), Some(&body))
        .await?;
    let mut out = a.clone();
    if reply.status.as_u16() == 409 && code_of(&reply) == "RoleAssignmentExists" {
        // The same grant under another name: record that one, so destroy removes it.
        let existing = find(arm, &scope, principal, attr_str(a, "role_definition")?).await?;
        out.insert("name".into(), json!(existing));
        return Ok(out);
    }
    arm.finish_put(&path, AUTHORIZATION_API, reply).await?;
    Ok(out)
}

/// The name of the assignment of `definition` to `principal` exactly at `scope`.
async fn find(arm: &Arm, scope: &str, principal: &str, definition: &str) -> Result<String> {
    let listed = arm
        .list(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"),
            AUTHORIZATION_API,
        )
        .await?;
    listed
        .iter()
        .find(|r| {
            let p = r.get("properties");
            let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str());
            field("principalId") == Some(principal)
                && field("roleDefinitionId").is_some_and(|d| d.eq_ignore_ascii_case(definition))
                && field("scope").is_some_and(|s| s.eq_ignore_ascii_case(scope))
        })
        .and_then(|r| r.get("name")?.as_str().map(String::from))
        .ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Propagating,
                format!(
                    "Azure says the role assignment on {scope} exists, but it is not listed yet"
                ),
            )
        })
}

pub async fn delete(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<()> {
    let scope = scope(t, subscription)?;
    let name = attr_str(t.attrs, "name")?;
    arm.delete(&assignment_path(&scope, name), AUTHORIZATION_API)
        .await
}
