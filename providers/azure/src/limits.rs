//! The subscription's limits this plan would meet, checked in the preflight before any
//! change (`anycloud_provider::limits` words them):
//!
//! - Role assignments per subscription: Azure allows 4,000 (a fixed limit no API reports);
//!   usage counted from the subscription's role-assignments list (the list the refresh
//!   reads). Needed: the grants still to be made whose assignment is not listed yet.
//! - Regional vCPUs: Compute's `usages` of the region (`currentValue`, `limit`), asked once
//!   per region with new VMs. An On-Demand VM counts against its size's family
//!   (`standardDSv5Family`, Resource SKUs' `family`) and the region's total (`cores`); a Spot
//!   VM against the region's Spot total (`lowPriorityCores`). A size's vCPUs and family are
//!   Resource SKUs' (its `vCPUs` capability). Needed: the vCPUs of the VMs still to be made.
//!
//! A size the region's Resource SKUs do not list, or a usage the region does not report,
//! is not guessed: the plan notes it was not checked.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::limits::{Limit, Tally};
use anycloud_provider::{attr_str, Kind, Preflight, Result, Target};
use serde_json::Value;

use crate::arm::Arm;
use crate::compute::{COMPUTE_API, SKUS_API};

/// Azure's role assignments per subscription ("Azure subscription and service limits",
/// Azure RBAC limits).
pub const ROLE_ASSIGNMENTS_MAX: u64 = 4000;

/// The usages that count a region's On-Demand and Spot vCPUs in all.
const TOTAL: &str = "cores";
const SPOT_TOTAL: &str = "lowPriorityCores";

pub async fn preflight(
    arm: &Arm,
    subscription: &str,
    targets: &[Target<'_>],
    found: &mut Preflight,
) -> Result<()> {
    let grants: Vec<String> = targets
        .iter()
        .filter(|t| t.kind == Kind::Grant)
        .map(|t| attr_str(t.attrs, "name").map(|n| n.to_ascii_lowercase()))
        .collect::<Result<_>>()?;
    if !grants.is_empty() {
        let listed = crate::grant::list(arm, subscription).await?;
        let needed = grants.iter().filter(|g| !listed.contains_key(*g)).count() as u64;
        let limit = Limit {
            what: format!("role assignments in subscription {subscription}"),
            source: "Azure's limit per subscription; usage from the role assignments list".into(),
            needed,
            used: listed.len() as u64,
            allowed: ROLE_ASSIGNMENTS_MAX,
        };
        found.errors.extend(anycloud_provider::limits::errors([(
            &limit,
            "Azure does not raise this limit: remove role assignments no longer needed, or spread the deployments over more subscriptions (each deployment has one per bucket).",
        )]));
    }
    vcpus(arm, subscription, targets, found).await
}

/// A VM size as Resource SKUs describes it in a region.
struct Size {
    family: String,
    vcpus: u64,
}

async fn vcpus(
    arm: &Arm,
    subscription: &str,
    targets: &[Target<'_>],
    found: &mut Preflight,
) -> Result<()> {
    // region → (size, spot) of each new VM
    let mut new: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Vm) {
        let spot = t.attrs.get("spot").and_then(|s| s.as_bool()) == Some(true);
        new.entry(attr_str(t.attrs, "region")?)
            .or_default()
            .push((attr_str(t.attrs, "size")?, spot));
    }
    let help = "Ask for more in the Azure portal (Subscriptions, Usage + quotas) or `az quota create`, use another size family or region, or fewer deployments at once.";
    for (region, vms) in new {
        let sizes = sizes(arm, subscription, region).await?;
        let mut needed: Tally<String> = Tally::default();
        let mut unlisted = BTreeSet::new();
        for (size, spot) in &vms {
            let Some(s) = sizes.get(&size.to_ascii_lowercase()) else {
                unlisted.insert(*size);
                continue;
            };
            if *spot {
                needed.add(SPOT_TOTAL.into(), s.vcpus);
            } else {
                needed.add(TOTAL.into(), s.vcpus);
                needed.add(s.family.clone(), s.vcpus);
            }
        }
        if !unlisted.is_empty() {
            found.notes.push(format!(
                "the vCPU quota of {} in {region} was not checked: Resource SKUs does not list the size there",
                unlisted.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if needed.is_empty() {
            continue;
        }
        let usages = arm
            .list(
                &format!(
                    "/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{region}/usages"
                ),
                COMPUTE_API,
            )
            .await?;
        let mut limits = Vec::new();
        for (name, needed) in &needed.0 {
            let Some(u) = usages.iter().find(|u| {
                u.pointer("/name/value")
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| v.eq_ignore_ascii_case(name))
            }) else {
                found.notes.push(format!(
                    "the vCPU quota {name} in {region} was not checked: Compute's usages of the region do not report it"
                ));
                continue;
            };
            let figure = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let words = u
                .pointer("/name/localizedValue")
                .and_then(|v| v.as_str())
                .unwrap_or(name);
            limits.push(Limit {
                what: format!("{words} ({name}) in {region}"),
                source: "Compute usages".into(),
                needed: *needed,
                used: figure("currentValue"),
                allowed: figure("limit"),
            });
        }
        found.errors.extend(anycloud_provider::limits::errors(
            limits.iter().map(|l| (l, help)),
        ));
    }
    Ok(())
}

/// The region's VM sizes by lower-cased name: family and vCPUs (one Resource SKUs list).
async fn sizes(arm: &Arm, subscription: &str, region: &str) -> Result<BTreeMap<String, Size>> {
    let path = format!(
        "/subscriptions/{subscription}/providers/Microsoft.Compute/skus?$filter=location%20eq%20%27{region}%27"
    );
    let mut out = BTreeMap::new();
    for sku in arm.list(&path, SKUS_API).await? {
        if sku.get("resourceType").and_then(|t| t.as_str()) != Some("virtualMachines") {
            continue;
        }
        let (Some(name), Some(family)) = (
            sku.get("name").and_then(|n| n.as_str()),
            sku.get("family").and_then(|f| f.as_str()),
        ) else {
            continue;
        };
        let vcpus = sku
            .get("capabilities")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .find(|c| c.get("name").and_then(|n| n.as_str()) == Some("vCPUs"))
            .and_then(|c| c.get("value")?.as_str()?.parse::<u64>().ok());
        if let Some(vcpus) = vcpus {
            out.insert(
                name.to_ascii_lowercase(),
                Size {
                    family: family.to_owned(),
                    vcpus,
                },
            );
        }
    }
    Ok(out)
}
