//! The account's limits this plan would meet, checked in the preflight before any change
//! (`anycloud_provider::limits` words them):
//!
//! - IAM roles and instance profiles in the account (1,000 each by default): IAM
//!   `GetAccountSummary` (`Roles`/`RolesQuota`, `InstanceProfiles`/`InstanceProfilesQuota`).
//!   Needed: the role nodes still to be made whose role is not in IAM yet (a crashed apply's
//!   pending role may already exist and be counted in the usage).
//! - EC2 vCPUs by region and instance family, On-Demand and Spot apart (Running On-Demand
//!   Standard, G and VT, P… instances; All Standard, G and VT, P… Spot Instance Requests):
//!   Service Quotas `GetServiceQuota` (service `ec2`, the family's quota code); usage from
//!   `DescribeInstances` (every pending or running instance of the region, anycloud's or not,
//!   spot by its `InstanceLifecycle`) and each type's vCPUs from `DescribeInstanceTypes`.
//!   Needed: the vCPUs of the VMs still to be made.
//!
//! A quota that cannot be read (no permission for Service Quotas, a family without a quota
//! code here, a region where Service Quotas does not know the code) is not guessed: the
//! plan notes it was not checked.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::limits::{Limit, Tally};
use anycloud_provider::{attr_str, ErrorCode, Kind, Preflight, Result, Target};
use aws_sdk_ec2::types::{Filter, InstanceType};

use crate::clients::Clients;
use crate::errors::classify;

/// An EC2 vCPU quota family: the instance families it covers (the type's letters before its
/// generation digit) and its Service Quotas codes (On-Demand, Spot), as AWS publishes them
/// ("Amazon EC2 service quotas", vCPU-based On-Demand and Spot Instance limits).
struct Family {
    name: &'static str,
    prefixes: &'static [&'static str],
    on_demand: &'static str,
    spot: Option<&'static str>,
}

const FAMILIES: [Family; 9] = [
    Family {
        name: "G and VT",
        prefixes: &["g", "vt"],
        on_demand: "L-DB2E81BA",
        spot: Some("L-3819A6DF"),
    },
    Family {
        name: "P",
        prefixes: &["p"],
        on_demand: "L-417A185B",
        spot: Some("L-7212CCBC"),
    },
    Family {
        name: "X",
        prefixes: &["x"],
        on_demand: "L-7295265B",
        spot: Some("L-E3A00192"),
    },
    Family {
        name: "F",
        prefixes: &["f"],
        on_demand: "L-74FC7D96",
        spot: Some("L-88CF9481"),
    },
    Family {
        name: "Inf",
        prefixes: &["inf"],
        on_demand: "L-1945791B",
        spot: Some("L-B5D1601B"),
    },
    Family {
        name: "Trn",
        prefixes: &["trn"],
        on_demand: "L-2C3B7624",
        spot: Some("L-6B0D517C"),
    },
    Family {
        name: "DL",
        prefixes: &["dl"],
        on_demand: "L-6E869C2A",
        spot: Some("L-85EED4F7"),
    },
    Family {
        name: "High Memory",
        prefixes: &["u"],
        on_demand: "L-43DA4232",
        spot: None,
    },
    // Last: its families are matched by their first letter, once the others had their turn.
    Family {
        name: "Standard (A, C, D, H, I, M, R, T, Z)",
        prefixes: &["a", "c", "d", "h", "i", "m", "r", "t", "z"],
        on_demand: "L-1216C47A",
        spot: Some("L-34B43A08"),
    },
];

/// Families whose letters would pass for another's but have their own quotas, not checked.
const OWN_QUOTAS_UNCHECKED: [&str; 2] = ["hpc", "mac"];

/// The quota family of an instance type (`g5.xlarge`: G and VT), `None` for one not here.
fn family(instance_type: &str) -> Option<&'static Family> {
    let letters: String = instance_type
        .split(['.', '-'])
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    if OWN_QUOTAS_UNCHECKED.contains(&letters.as_str()) {
        return None;
    }
    FAMILIES
        .iter()
        .find(|f| f.prefixes.contains(&letters.as_str()))
        .or_else(|| {
            let first = letters.get(..1)?;
            FAMILIES
                .last()
                .filter(|standard| standard.prefixes.contains(&first))
        })
}

/// The quota code a VM of `instance_type` counts against, and the words for it.
fn quota_of(instance_type: &str, spot: bool) -> Option<(&'static str, String)> {
    let f = family(instance_type)?;
    if spot {
        Some((f.spot?, format!("All {} Spot Instance Requests", f.name)))
    } else {
        Some((
            f.on_demand,
            format!("Running On-Demand {} instances", f.name),
        ))
    }
}

/// Checks the targets' new roles and VMs against the account's limits: each short one is an
/// error in `found`, each that could not be read a note.
pub async fn preflight(
    clients: &Clients,
    targets: &[Target<'_>],
    found: &mut Preflight,
) -> Result<()> {
    let roles: Vec<&str> = targets
        .iter()
        .filter(|t| t.kind == Kind::Role)
        .map(|t| attr_str(t.attrs, "name"))
        .collect::<Result<_>>()?;
    if !roles.is_empty() {
        // A role a crashed apply made before it was recorded is in the usage already.
        let (existing, _) = crate::iam::existing(clients).await?;
        let new_roles = roles.iter().filter(|r| !existing.contains(**r)).count() as u64;
        if new_roles > 0 {
            iam_limits(clients, new_roles, found).await?;
        }
    }
    vcpu_limits(clients, targets, found).await
}

async fn iam_limits(clients: &Clients, new: u64, found: &mut Preflight) -> Result<()> {
    let summary = match clients.iam().await.get_account_summary().send().await {
        Ok(s) => s,
        Err(e) => {
            let e = classify("GetAccountSummary", e);
            if e.is(ErrorCode::Permission) {
                found.notes.push(format!(
                    "the account's IAM role limit was not checked: {}",
                    e.message
                ));
                return Ok(());
            }
            return Err(e);
        }
    };
    let map = summary.summary_map().cloned().unwrap_or_default();
    let figure = |key: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| *v as u64)
    };
    let help = "Ask AWS for a higher IAM quota (Service Quotas, IAM), or destroy deployments you no longer need: each deployment has a role and an instance profile.";
    let mut limits = Vec::new();
    for (what, used_key, quota_key) in [
        ("IAM roles in the account", "Roles", "RolesQuota"),
        (
            "IAM instance profiles in the account",
            "InstanceProfiles",
            "InstanceProfilesQuota",
        ),
    ] {
        let (Some(used), Some(allowed)) = (figure(used_key), figure(quota_key)) else {
            found.notes.push(format!(
                "{what} were not checked: IAM GetAccountSummary did not answer {used_key} and {quota_key}"
            ));
            continue;
        };
        limits.push(Limit {
            what: what.into(),
            source: format!("IAM GetAccountSummary {used_key}/{quota_key}"),
            needed: new,
            used,
            allowed,
        });
    }
    found.errors.extend(anycloud_provider::limits::errors(
        limits.iter().map(|l| (l, help)),
    ));
    Ok(())
}

/// (region, quota code) → the quota's words.
type Quotas = BTreeMap<(String, &'static str), String>;

async fn vcpu_limits(
    clients: &Clients,
    targets: &[Target<'_>],
    found: &mut Preflight,
) -> Result<()> {
    // What the new VMs need, by region and quota code; their types by region.
    let mut needed: Tally<(String, &'static str)> = Tally::default();
    let mut quotas = Quotas::new();
    let mut new_vms: BTreeMap<String, Vec<(String, &'static str)>> = BTreeMap::new();
    let mut unchecked = BTreeSet::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Vm) {
        let region = attr_str(t.attrs, "region")?;
        let instance_type = attr_str(t.attrs, "instance_type")?;
        let spot = t.attrs.get("spot").and_then(|s| s.as_bool()) == Some(true);
        let Some((code, words)) = quota_of(instance_type, spot) else {
            unchecked.insert(format!(
                "{instance_type}{}",
                if spot { " (spot)" } else { "" }
            ));
            continue;
        };
        quotas.insert((region.to_owned(), code), words);
        new_vms
            .entry(region.to_owned())
            .or_default()
            .push((instance_type.to_owned(), code));
    }
    if !unchecked.is_empty() {
        found.notes.push(format!(
            "the EC2 vCPU quota of {} was not checked: anycloud knows no Service Quotas code for it",
            unchecked.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let help = "Ask for an increase of that quota in the region (Service Quotas console, or `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code CODE`), use another family or region, or fewer deployments at once.";
    for (region, vms) in new_vms {
        // The quotas first: a region whose quotas cannot be read needs no usage.
        let mut allowed = BTreeMap::new();
        for code in vms.iter().map(|(_, c)| *c).collect::<BTreeSet<_>>() {
            match quota(clients, &region, code).await? {
                Some(v) => {
                    allowed.insert(code, v);
                }
                None => found.notes.push(format!(
                    "EC2 vCPU quota {code} ({}) in {region} was not checked: Service Quotas did not answer it",
                    quotas[&(region.clone(), code)]
                )),
            }
        }
        if allowed.is_empty() {
            continue;
        }
        let running = running(clients, &region).await?;
        let types: BTreeSet<&str> = vms
            .iter()
            .map(|(t, _)| t.as_str())
            .chain(running.iter().map(|(t, _)| t.as_str()))
            .collect();
        let vcpus = match vcpus_of(clients, &region, &types).await {
            Ok(v) => v,
            Err(e) if e.is(ErrorCode::Permission) => {
                found.notes.push(format!(
                    "the EC2 vCPU quotas in {region} were not checked: {}",
                    e.message
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let cpus = |t: &str| vcpus.get(t).copied().unwrap_or(0);
        for (t, code) in &vms {
            needed.add((region.clone(), code), cpus(t));
        }
        let mut used: Tally<&'static str> = Tally::default();
        for (t, spot) in &running {
            if let Some((code, _)) = quota_of(t, *spot) {
                used.add(code, cpus(t));
            }
        }
        let limits: Vec<Limit> = allowed
            .iter()
            .map(|(code, allowed)| Limit {
                what: format!(
                    "EC2 vCPUs of {} in {region}",
                    quotas[&(region.clone(), *code)]
                ),
                source: format!("Service Quotas ec2/{code}; usage from DescribeInstances"),
                needed: needed.get(&(region.clone(), code)),
                used: used.get(code),
                allowed: *allowed,
            })
            .collect();
        found.errors.extend(anycloud_provider::limits::errors(
            limits.iter().map(|l| (l, help)),
        ));
    }
    Ok(())
}

/// The value of EC2 quota `code` in `region`; `None` where Service Quotas does not say
/// (the code unknown there, or no permission to ask).
async fn quota(clients: &Clients, region: &str, code: &str) -> Result<Option<u64>> {
    let answer = clients
        .service_quotas(region)
        .await
        .get_service_quota()
        .service_code("ec2")
        .quota_code(code)
        .send()
        .await;
    match answer {
        Ok(out) => Ok(out.quota().and_then(|q| q.value()).map(|v| v as u64)),
        Err(e) => {
            let e = classify(&format!("GetServiceQuota ec2/{code}"), e);
            if e.is(ErrorCode::NotFound) || e.is(ErrorCode::Permission) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Every pending or running instance of the region: its type and whether it is spot.
async fn running(clients: &Clients, region: &str) -> Result<Vec<(String, bool)>> {
    let pages = clients
        .ec2(region)
        .await
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("DescribeInstances", e))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.reservations())
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let t = i.instance_type()?.as_str().to_owned();
            let spot = i.instance_lifecycle().map(|l| l.as_str()) == Some("spot");
            Some((t, spot))
        })
        .collect())
}

/// Each type's default vCPUs (`DescribeInstanceTypes`, at most 100 types a call).
async fn vcpus_of(
    clients: &Clients,
    region: &str,
    types: &BTreeSet<&str>,
) -> Result<BTreeMap<String, u64>> {
    let ec2 = clients.ec2(region).await;
    let mut out = BTreeMap::new();
    let types: Vec<&str> = types.iter().copied().collect();
    for chunk in types.chunks(100) {
        let answer = ec2
            .describe_instance_types()
            .set_instance_types(Some(chunk.iter().map(|t| InstanceType::from(*t)).collect()))
            .send()
            .await
            .map_err(|e| classify("DescribeInstanceTypes", e))?;
        for info in answer.instance_types() {
            let (Some(t), Some(cpus)) = (
                info.instance_type(),
                info.v_cpu_info().and_then(|v| v.default_v_cpus()),
            ) else {
                continue;
            };
            out.insert(t.as_str().to_owned(), cpus as u64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{family, quota_of};

    #[test]
    fn each_type_counts_against_its_familys_quota() {
        for (t, name) in [
            ("t3.micro", "Standard (A, C, D, H, I, M, R, T, Z)"),
            ("m7i.large", "Standard (A, C, D, H, I, M, R, T, Z)"),
            ("im4gn.large", "Standard (A, C, D, H, I, M, R, T, Z)"),
            ("d3.xlarge", "Standard (A, C, D, H, I, M, R, T, Z)"),
            ("g5.xlarge", "G and VT"),
            ("vt1.3xlarge", "G and VT"),
            ("p4d.24xlarge", "P"),
            ("x2iedn.xlarge", "X"),
            ("inf2.xlarge", "Inf"),
            ("trn1.2xlarge", "Trn"),
            ("dl1.24xlarge", "DL"),
            ("u-6tb1.56xlarge", "High Memory"),
        ] {
            assert_eq!(family(t).map(|f| f.name), Some(name), "{t}");
        }
        for t in ["hpc7a.96xlarge", "mac2.metal", "q9.large"] {
            assert!(family(t).is_none(), "{t}");
        }
    }

    #[test]
    fn spot_and_on_demand_have_their_own_codes() {
        assert_eq!(quota_of("g5.xlarge", false).unwrap().0, "L-DB2E81BA");
        assert_eq!(quota_of("g5.xlarge", true).unwrap().0, "L-3819A6DF");
        assert_eq!(quota_of("t3.micro", false).unwrap().0, "L-1216C47A");
        assert_eq!(quota_of("t3.micro", true).unwrap().0, "L-34B43A08");
        assert!(quota_of("u-6tb1.56xlarge", true).is_none());
    }
}
