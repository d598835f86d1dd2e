//! A continent's shared storage: the resource group `anycloud-storage-{C}` and the storage
//! account `anycloud{C}{subscriptionPrefix}` in the region of the first deployment of the
//! continent (first wins), reused by every later deployment of the continent, whatever its
//! region, and kept on destroy. An account a state recorded under another name (an earlier
//! anycloud took 11 digits of the subscription id, the seed 8) keeps that name: every node
//! naming the account plans with it, and the plan says so.
//!
//! Account names are global across Azure. Two applies may make the same one at once: the
//! PUT is idempotent within a resource group, and the loser of a race across groups finds the
//! account in its own subscription and adopts it. A name taken by another subscription fails
//! with a message naming the account.

use std::collections::BTreeMap;

use anycloud_provider::{
    attr_str, Attrs, ErrorCode, Kind, NodeSpec, Planned, ProviderError, Result, Target,
};
use http::Method;
use serde_json::{json, Value};

use crate::arm::{code_of, Arm};
use crate::{naming, owner};

pub const STORAGE_API: &str = "2025-06-01";
pub const GROUPS_API: &str = "2025-04-01";

pub fn group_path(subscription: &str, group: &str) -> String {
    format!("/subscriptions/{subscription}/resourcegroups/{group}")
}

pub fn account_path(subscription: &str, group: &str, account: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}"
    )
}

/// The continents' accounts a state recorded, by continent: its storage nodes', else its
/// buckets' (a container lives in its continent's account).
pub fn recorded(targets: &[Target<'_>]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kind in [Kind::Storage, Kind::Bucket] {
        for t in targets.iter().filter(|t| t.kind == kind) {
            let text = |k: &str| t.attrs.get(k).and_then(Value::as_str);
            if let (Some(continent), Some(account)) = (text("continent"), text("account")) {
                if naming::is_account_name(account) {
                    out.entry(continent.to_owned())
                        .or_insert_with(|| account.to_owned());
                }
            }
        }
    }
    out
}

/// `account` is the continent's account as the state recorded it, else `seed`, the seed's
/// name for it (`naming::storage_account`).
pub fn plan(node: NodeSpec<'_>, account: &str, seed: &str) -> Planned {
    let d = node.deployment;
    let mut attrs = Attrs::new();
    if let Some(p) = &d.project {
        attrs.insert("project".into(), json!(p));
    }
    attrs.insert("continent".into(), json!(d.continent));
    // The plan names where the account lives: the first deployment's region of the continent.
    attrs.insert("region".into(), json!(d.region));
    attrs.insert(
        "resource_group".into(),
        json!(naming::storage_group(&d.continent)),
    );
    attrs.insert("account".into(), json!(account));
    // Renaming an account means replacing it and moving what it holds: a recorded name stays.
    let warnings = if account == seed {
        vec![]
    } else {
        vec![format!(
            "keeps the storage account '{account}' this state recorded (named by an earlier anycloud); the seed's name for it would be '{seed}'. It is kept as it is: no account is replaced or made, and its containers stay where they are"
        )]
    };
    Planned {
        attrs,
        computed: vec!["blob_endpoint".into()],
        force_new: vec!["account".into()],
        // Shared by every deployment of the continent, and by other states: only forgotten.
        keep_on_destroy: true,
        warnings,
        ..Planned::default()
    }
}

/// Makes (or joins) a resource group, tagged as anycloud's. An existing group is used as it
/// is: groups hold other states' objects too and are never changed or deleted.
pub async fn ensure_group(
    arm: &Arm,
    subscription: &str,
    group: &str,
    region: &str,
    lineage: &str,
) -> Result<()> {
    let path = group_path(subscription, group);
    if arm.get(&path, GROUPS_API).await?.is_some() {
        return Ok(());
    }
    let body = json!({
        "location": region,
        "tags": owner::tags(lineage, None, &[("anycloud-managed", "true")]),
    });
    arm.put(&path, GROUPS_API, &body).await.map(|_| ())
}

/// The accounts of the subscription, by name (one call, paged).
pub async fn list(arm: &Arm, subscription: &str) -> Result<Vec<Value>> {
    arm.list(
        &format!("/subscriptions/{subscription}/providers/Microsoft.Storage/storageAccounts"),
        STORAGE_API,
    )
    .await
}

/// The resource group of an account listed by the subscription (from its id).
pub fn group_of(account: &Value) -> Option<String> {
    let id = account.get("id")?.as_str()?;
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().map(String::from);
        }
    }
    None
}

fn found(t: &Target<'_>, account: &Value) -> Attrs {
    let mut a = t.attrs.clone();
    if let Some(g) = group_of(account) {
        a.insert("resource_group".into(), json!(g));
    }
    let endpoint = account
        .get("properties")
        .and_then(|p| p.get("primaryEndpoints"))
        .and_then(|e| e.get("blob"))
        .cloned()
        .unwrap_or(Value::Null);
    a.insert("blob_endpoint".into(), endpoint);
    a
}

pub fn read(t: &Target<'_>, accounts: &[Value]) -> Result<Option<Attrs>> {
    let name = attr_str(t.attrs, "account")?;
    Ok(accounts
        .iter()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(name))
        .map(|a| found(t, a)))
}

/// Makes the account unless it exists in this subscription already; adopts it when it
/// does (another state's, a concurrent apply's: the continent's storage is shared).
pub async fn create(arm: &Arm, subscription: &str, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let name = attr_str(a, "account")?;
    let group = attr_str(a, "resource_group")?;
    let region = attr_str(a, "region")?;
    if let Some(existing) = find(arm, subscription, name).await? {
        return Ok(found(t, &existing));
    }
    // No name check here (the plan's preflight made it): while a concurrent apply's account
    // provisions it is neither listed nor available, and only the PUT's answer tells a
    // concurrent create of this subscription (same group: the same operation) from another
    // subscription's name (409 StorageAccountAlreadyTaken).
    ensure_group(arm, subscription, group, region, t.lineage).await?;
    let path = account_path(subscription, group, name);
    let body = json!({
        "sku": {"name": "Standard_LRS"},
        "kind": "StorageV2",
        "location": region,
        "tags": owner::tags(
            t.lineage,
            a.get("project").and_then(|p| p.as_str()),
            &[("anycloud-continent", attr_str(a, "continent")?)],
        ),
        "properties": {
            "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": false,
            // Only Entra ID (the VMs' managed identities): no account key is ever used.
            "allowSharedKeyAccess": false,
            "supportsHttpsTrafficOnly": true,
        },
    });
    let reply = arm
        .send(Method::PUT, &path, Some(STORAGE_API), Some(&body))
        .await?;
    if reply.status.as_u16() == 409 {
        return match code_of(&reply) {
            // Someone of this subscription made it in another group meanwhile: use it.
            "StorageAccountAlreadyExists" => match find(arm, subscription, name).await? {
                Some(existing) => Ok(found(t, &existing)),
                None => Err(ProviderError::new(
                    ErrorCode::Busy,
                    format!("storage account '{name}' exists in this subscription but is not listed yet"),
                )),
            },
            "StorageAccountAlreadyTaken" => Err(taken(name, None)),
            _ => Err(crate::arm::error_of(&Method::PUT, &path, &reply)),
        };
    }
    let made = arm.finish_put(&path, STORAGE_API, reply).await?;
    Ok(found(t, &made))
}

/// The account of this name in the subscription, if there is one (one list call).
async fn find(arm: &Arm, subscription: &str, name: &str) -> Result<Option<Value>> {
    Ok(list(arm, subscription)
        .await?
        .into_iter()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(name)))
}

/// Whether an account that is not available (and was not listed) turns up in this
/// subscription within half a minute: a teammate's concurrent apply may be making it right
/// now, and an account is listed only once it is provisioned. Only a name that stays
/// unlisted is another subscription's.
async fn made_meanwhile(arm: &Arm, subscription: &str, name: &str) -> Result<bool> {
    let found = anycloud_provider::retry::wait_for(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(8),
        std::time::Duration::from_secs(30),
        || async {
            match find(arm, subscription, name).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(None),
                Err(e) => Err(Some(e)),
            }
        },
        |e: &Option<ProviderError>| e.is_none(),
        |_, _| {},
    )
    .await;
    match found {
        Ok(()) => Ok(true),
        Err(None) => Ok(false),
        Err(Some(e)) => Err(e),
    }
}

fn taken(name: &str, said: Option<&str>) -> ProviderError {
    ProviderError::new(
        ErrorCode::Conflict,
        format!(
            "storage account '{name}' is taken by another Azure subscription{}: storage account names are global. anycloud derives it from the continent and this subscription's id; use another subscription, or ask its owner",
            said.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
    )
}

/// Before any change: every continent account still to be made must be free or this
/// subscription's (one list, and one name check per new account). Returns the errors, and
/// the notes: an account an earlier anycloud named (11 digits) that this state does not
/// record, beside which the seed's is about to be made.
pub async fn preflight(
    arm: &Arm,
    subscription: &str,
    targets: &[Target<'_>],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut accounts: Option<Vec<Value>> = None;
    for t in targets
        .iter()
        .filter(|t| t.kind == anycloud_provider::Kind::Storage)
    {
        let name = attr_str(t.attrs, "account")?;
        if accounts.is_none() {
            accounts = Some(list(arm, subscription).await?);
        }
        let listed = |name: &str| {
            accounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|a| a.get("name").and_then(|n| n.as_str()) == Some(name))
        };
        if listed(name) {
            continue;
        }
        let continent = attr_str(t.attrs, "continent")?;
        let earlier = naming::earlier_storage_account(continent, subscription);
        if earlier != name && listed(&earlier) {
            notes.push(format!(
                "{}: storage account '{earlier}', named by an earlier anycloud, exists in this subscription but this state records no account for continent {continent}: the seed's '{name}' will be made beside it, and this state's buckets go there (what '{earlier}' holds stays in it)",
                t.address
            ));
        }
        let check = arm
            .post(
                &format!("/subscriptions/{subscription}/providers/Microsoft.Storage/checkNameAvailability"),
                STORAGE_API,
                &json!({"name": name, "type": "Microsoft.Storage/storageAccounts"}),
            )
            .await?;
        if check.get("nameAvailable").and_then(|v| v.as_bool()) == Some(false)
            && !made_meanwhile(arm, subscription, name).await?
        {
            errors.push(format!(
                "{}: {}",
                t.address,
                taken(name, check.get("message").and_then(|m| m.as_str()))
            ));
        }
    }
    Ok((errors, notes))
}
