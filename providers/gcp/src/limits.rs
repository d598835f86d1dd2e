//! The project's regional CPU and GPU quotas this plan would meet, checked in the preflight
//! before any change (`anycloud_provider::limits` words them; the bucket policy's 100
//! conditional bindings are checked in `binding.rs`).
//!
//! Per region with new VMs, one `regions.get` (its `quotas[]`: metric, limit, usage) and one
//! `machineTypes.get` per type (`guestCpus`, `accelerators`). A VM's vCPUs count against its
//! family's metric where the region reports one (`N2_CPUS`, `A2_CPUS`…), else `CPUS`; a
//! Spot VM's against `PREEMPTIBLE_CPUS` where the project has that quota (Compute Engine
//! counts Spot VMs against the standard quotas otherwise). Its GPUs count against
//! `NVIDIA_{MODEL}_GPUS` (or `PREEMPTIBLE_NVIDIA_{MODEL}_GPUS`, likewise). Usage is the
//! region's own figure. A metric the region does not report is not guessed: the plan notes
//! it was not checked.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::limits::{Limit, Tally};
use anycloud_provider::{attr_str, Kind, Preflight, ProviderError, Result, Target};
use serde_json::Value;

use crate::Cx;

/// A region's quotas by metric: (usage, limit).
type Quotas = BTreeMap<String, (u64, u64)>;

pub async fn preflight(cx: &Cx<'_>, targets: &[Target<'_>], found: &mut Preflight) -> Result<()> {
    // region → (machine type, spot) of each new VM; its zone is chosen at create (capacity
    // failover), so a type is read in the region's first zone.
    let mut new: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind == Kind::Vm) {
        let spot = t.attrs.get("spot").and_then(|s| s.as_bool()) == Some(true);
        new.entry(attr_str(t.attrs, "region")?)
            .or_default()
            .push((attr_str(t.attrs, "machine_type")?, spot));
    }
    let help = "Ask for more in the console (IAM & Admin, Quotas) or with `gcloud alpha services quota update`, use another machine family or region, or fewer deployments at once.";
    for (region, vms) in new {
        let quotas = region_quotas(cx, region).await?;
        let zone = crate::compute::zones(cx, region).await?.remove(0);
        let mut types = BTreeMap::new();
        for (machine_type, _) in &vms {
            if !types.contains_key(machine_type) {
                types.insert(
                    *machine_type,
                    machine_type_of(cx, &zone, machine_type).await?,
                );
            }
        }
        let mut needed: Tally<String> = Tally::default();
        let mut unreported = BTreeSet::new();
        for (machine_type, spot) in &vms {
            let t = &types[machine_type];
            let mut count = |metric: Option<String>, n: u64, what: String| match metric {
                Some(m) => needed.add(m, n),
                None => {
                    unreported.insert(what);
                }
            };
            count(
                cpu_metric(&quotas, machine_type, *spot),
                t.cpus,
                format!("the vCPUs of {machine_type}"),
            );
            for (model, n) in &t.gpus {
                count(
                    gpu_metric(&quotas, model, *spot),
                    *n,
                    format!("{model} GPUs"),
                );
            }
        }
        if !unreported.is_empty() {
            found.notes.push(format!(
                "the quota of {} in {region} was not checked: regions.get reports no metric for it",
                unreported.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let limits: Vec<Limit> = needed
            .0
            .iter()
            .map(|(metric, n)| Limit {
                what: format!("quota {metric} in {region}"),
                source: "Compute Engine regions.get".into(),
                needed: *n,
                used: quotas[metric].0,
                allowed: quotas[metric].1,
            })
            .collect();
        found.errors.extend(anycloud_provider::limits::errors(
            limits.iter().map(|l| (l, help)),
        ));
    }
    Ok(())
}

/// The metric a VM's vCPUs count against, where the region reports it.
fn cpu_metric(quotas: &Quotas, machine_type: &str, spot: bool) -> Option<String> {
    if spot && quotas.get("PREEMPTIBLE_CPUS").is_some_and(|(_, l)| *l > 0) {
        return Some("PREEMPTIBLE_CPUS".into());
    }
    let family = machine_type
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    [format!("{family}_CPUS"), "CPUS".to_owned()]
        .into_iter()
        .find(|m| quotas.contains_key(m))
}

/// The metric a VM's GPUs of `model` (`nvidia-l4`, `nvidia-tesla-a100`) count against.
fn gpu_metric(quotas: &Quotas, model: &str, spot: bool) -> Option<String> {
    let name = model
        .trim_start_matches("nvidia-tesla-")
        .trim_start_matches("nvidia-")
        .to_ascii_uppercase()
        .replace('-', "_");
    let standard = format!("NVIDIA_{name}_GPUS");
    let preemptible = format!("PREEMPTIBLE_{standard}");
    if spot && quotas.get(&preemptible).is_some_and(|(_, l)| *l > 0) {
        return Some(preemptible);
    }
    quotas.contains_key(&standard).then_some(standard)
}

async fn region_quotas(cx: &Cx<'_>, region: &str) -> Result<Quotas> {
    let url = format!(
        "{}/projects/{}/regions/{region}",
        cx.s.compute(),
        cx.project
    );
    let Some(found) = cx.g.get(&url).await? else {
        return Err(ProviderError::permanent(format!(
            "Compute Engine does not know region {region}"
        )));
    };
    let figure = |q: &Value, k: &str| q.get(k).and_then(Value::as_f64).unwrap_or(0.0) as u64;
    Ok(found
        .get("quotas")
        .and_then(|q| q.as_array())
        .into_iter()
        .flatten()
        .filter_map(|q| {
            let metric = q.get("metric")?.as_str()?.to_owned();
            Some((metric, (figure(q, "usage"), figure(q, "limit"))))
        })
        .collect())
}

struct MachineType {
    cpus: u64,
    /// (accelerator type, count)
    gpus: Vec<(String, u64)>,
}

async fn machine_type_of(cx: &Cx<'_>, zone: &str, machine_type: &str) -> Result<MachineType> {
    let url = format!(
        "{}/projects/{}/zones/{zone}/machineTypes/{machine_type}",
        cx.s.compute(),
        cx.project
    );
    let Some(found) = cx.g.get(&url).await? else {
        return Err(ProviderError::permanent(format!(
            "Compute Engine does not know machine type {machine_type} in zone {zone}"
        )));
    };
    Ok(MachineType {
        cpus: found.get("guestCpus").and_then(Value::as_u64).unwrap_or(0),
        gpus: found
            .get("accelerators")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let kind = a.get("guestAcceleratorType")?.as_str()?;
                let n = a
                    .get("guestAcceleratorCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                Some((kind.rsplit('/').next().unwrap_or(kind).to_owned(), n))
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(metrics: &[(&str, u64)]) -> Quotas {
        metrics
            .iter()
            .map(|(m, l)| ((*m).to_owned(), (0, *l)))
            .collect()
    }

    #[test]
    fn vcpus_count_against_the_familys_metric_else_the_regions() {
        let q = quotas(&[("CPUS", 24), ("N2_CPUS", 24), ("PREEMPTIBLE_CPUS", 0)]);
        assert_eq!(cpu_metric(&q, "n2-standard-4", false).unwrap(), "N2_CPUS");
        assert_eq!(cpu_metric(&q, "e2-small", false).unwrap(), "CPUS");
        // No Spot quota: Spot VMs use the standard one.
        assert_eq!(cpu_metric(&q, "e2-small", true).unwrap(), "CPUS");
        let q = quotas(&[("CPUS", 24), ("PREEMPTIBLE_CPUS", 8)]);
        assert_eq!(
            cpu_metric(&q, "e2-small", true).unwrap(),
            "PREEMPTIBLE_CPUS"
        );
        assert!(cpu_metric(&quotas(&[]), "e2-small", false).is_none());
    }

    #[test]
    fn gpus_count_against_their_models_metric() {
        let q = quotas(&[
            ("NVIDIA_L4_GPUS", 1),
            ("NVIDIA_A100_80GB_GPUS", 1),
            ("PREEMPTIBLE_NVIDIA_L4_GPUS", 4),
        ]);
        assert_eq!(
            gpu_metric(&q, "nvidia-l4", false).unwrap(),
            "NVIDIA_L4_GPUS"
        );
        assert_eq!(
            gpu_metric(&q, "nvidia-l4", true).unwrap(),
            "PREEMPTIBLE_NVIDIA_L4_GPUS"
        );
        assert_eq!(
            gpu_metric(&q, "nvidia-a100-80gb", false).unwrap(),
            "NVIDIA_A100_80GB_GPUS"
        );
        assert!(gpu_metric(&q, "nvidia-tesla-t4", false).is_none());
    }
}
