//! The deployment's identity: a service account (id derived from the deployment id, see
//! `naming::account_id`) that its instance carries. The VM's rclone gets its tokens from the
//! metadata server: no key of it is ever made.

use std::collections::BTreeMap;

use anycloud_provider::{attr_str, Attrs, DeploymentSpec, ErrorCode, Planned, Result, Target};
use http::Method;
use serde_json::{json, Value};

use crate::owner;
use crate::{naming, Cx};

pub fn plan(d: &DeploymentSpec, project: &str) -> Planned {
    let mut attrs = Attrs::new();
    if let Some(p) = &d.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("account_id".into(), json!(naming::account_id(&d.id)));
    attrs.insert("email".into(), json!(naming::account_email(&d.id, project)));
    attrs.insert("gcp_project".into(), json!(project));
    Planned {
        attrs,
        computed: vec!["unique_id".into()],
        force_new: vec!["account_id".into(), "gcp_project".into()],
        ..Planned::default()
    }
}

fn accounts_url(cx: &Cx<'_>) -> String {
    format!("{}/projects/{}/serviceAccounts", cx.s.iam(), cx.project)
}

/// The project's service accounts, by email (one call, paged).
pub async fn list(cx: &Cx<'_>) -> Result<BTreeMap<String, Value>> {
    Ok(cx
        .g
        .list(&format!("{}?pageSize=100", accounts_url(cx)), "accounts")
        .await?
        .into_iter()
        .filter_map(|a| Some((a.get("email")?.as_str()?.to_owned(), a)))
        .collect())
}

fn recorded(t: &Target<'_>, account: &Value) -> Attrs {
    let mut a = t.attrs.clone();
    if let Some(id) = account.get("uniqueId") {
        a.insert("unique_id".into(), id.clone());
    }
    a
}

pub fn read(t: &Target<'_>, listed: &BTreeMap<String, Value>) -> Result<Option<Attrs>> {
    let email = attr_str(t.attrs, "email")?;
    Ok(listed
        .get(email)
        .filter(|a| owner::of_description(a, t.lineage).ours())
        .map(|a| recorded(t, a)))
}

pub async fn ensure(cx: &Cx<'_>, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let email = attr_str(a, "email")?;
    let url = format!("{}/{email}", accounts_url(cx));
    if let Some(existing) = cx.g.get(&url).await? {
        owner::must_be_ours(
            &owner::of_description(&existing, t.lineage),
            &format!("service account {email}"),
            owner::DESCRIPTION,
            t.lineage,
        )?;
        return Ok(recorded(t, &existing));
    }
    let deployment = t.address.split('.').nth(1).unwrap_or("?");
    let body = json!({
        "accountId": attr_str(a, "account_id")?,
        "serviceAccount": {
            "displayName": format!("anycloud {deployment}"),
            "description": owner::description(
                &format!("the identity of deployment {deployment}"),
                t.lineage,
                a.get("project").and_then(|p| p.as_str()),
            ),
        }
    });
    let reply =
        cx.g.send(Method::POST, &accounts_url(cx), Some(&body))
            .await?;
    if reply.status.as_u16() == 409 {
        // Made meanwhile (a retried create whose answer was lost): whose is it?
        let existing = cx.g.get(&url).await?.ok_or_else(|| {
            anycloud_provider::ProviderError::new(
                ErrorCode::Propagating,
                format!("service account {email} exists but cannot be read yet"),
            )
        })?;
        owner::must_be_ours(
            &owner::of_description(&existing, t.lineage),
            &format!("service account {email}"),
            owner::DESCRIPTION,
            t.lineage,
        )?;
        return Ok(recorded(t, &existing));
    }
    if !reply.status.is_success() {
        return Err(crate::api::error_of(
            &Method::POST,
            &accounts_url(cx),
            &reply,
        ));
    }
    Ok(recorded(t, &reply.body))
}

/// Deletes the account if it is this state's (asked again now, never taken on trust).
pub async fn delete(cx: &Cx<'_>, t: &Target<'_>) -> Result<()> {
    let email = attr_str(t.attrs, "email")?;
    let url = format!("{}/{email}", accounts_url(cx));
    match cx.g.get(&url).await? {
        Some(existing) if owner::of_description(&existing, t.lineage).ours() => {
            cx.g.delete(&url).await.map(|_| ())
        }
        Some(_) => {
            anycloud_provider::output::line(&format!(
                "service account {email} is not this state's: left as it is"
            ));
            Ok(())
        }
        None => Ok(()),
    }
}
