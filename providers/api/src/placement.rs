//! Capacity failover, the same on every cloud: where a VM may run and the one loop that
//! moves its create on when the cloud has no room for it.
//!
//! The places are the deployment's own region first, then `vm.regions` as listed (or, when
//! the config lists none, the other regions of the deployment's continent in DESIGN §6's
//! order); within each region its zones, in the order the cloud lists them. A capacity
//! answer (the provider says which of its cloud's codes are one) is never retried in place:
//! it moves the VM to the next zone, then to the next region, each place tried once. Any
//! other error stops the create where it is. Storage never moves: only the VM and what it
//! needs in its region (network objects, made on entering a region and removed on leaving
//! it, so nothing is left in a region the record no longer names).
//!
//! Where the VM landed, and why there, is recorded on the VM as its computed `placement`
//! attribute (`{region, zone, reason}`, the reason only when it is not the first place), so
//! the next plan compares what was planned, not where capacity was found: no change, never
//! a replace back to the first zone. A create that has entered a region records it at once
//! (`output::made`): a run killed there leaves a record a destroy cleans up.

use serde::{Deserialize, Serialize};

use crate::{Attrs, ErrorCode, ProviderError, Result};

/// The attribute a VM's placement is recorded under.
pub const ATTRIBUTE: &str = "placement";

/// Where a VM runs (or is being made), and why there when it is not the first place tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub region: String,
    pub zone: String,
    /// The places refused before this one, each with its cloud's code
    /// (`us-east-1a: InsufficientInstanceCapacity`); none in the first place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Placement {
    /// The placement recorded in a VM's attributes, if any (a VM recorded before placements
    /// were, or a create that failed everywhere, has none).
    pub fn of(attrs: &Attrs) -> Option<Placement> {
        serde_json::from_value(attrs.get(ATTRIBUTE)?.clone()).ok()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain data")
    }

    /// The region a VM's cloud objects are in: its placement's, else the planned `region`.
    pub fn region_of(attrs: &Attrs) -> Option<String> {
        Placement::of(attrs).map(|p| p.region).or_else(|| {
            attrs
                .get("region")
                .and_then(|r| r.as_str())
                .map(String::from)
        })
    }

    /// What `status` and the plan say of a VM that is not in its deployment's first place.
    pub fn moved(&self) -> Option<String> {
        let reason = self.reason.as_deref()?;
        Some(format!(
            "runs in {} ({}) because of no capacity at {reason}",
            self.zone, self.region
        ))
    }
}

/// The regions a VM may run in, in the order they are tried: `home` (the deployment's
/// region, where its storage is), then `listed` (`vm.regions`), else `continent`'s regions.
/// Each once.
pub fn regions(home: &str, listed: &[String], continent: &[&str]) -> Vec<String> {
    let rest: Vec<String> = if listed.is_empty() {
        continent.iter().map(|r| r.to_string()).collect()
    } else {
        listed.to_vec()
    };
    let mut out = vec![home.to_owned()];
    for r in rest {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The regions of a VM's planned attributes: `region`, then its `regions` list when the
/// config gave one, else `continent`'s.
pub fn regions_of(attrs: &Attrs, continent: &[&str]) -> Result<Vec<String>> {
    let home = crate::attr_str(attrs, "region")?;
    let listed: Vec<String> = attrs
        .get("regions")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(regions(home, &listed, continent))
}

/// The placements of the state's VMs whose create was cut short (recorded, never finished:
/// no `host_key`), by address, from `Provider::recall`: their create goes on from the region
/// it had reached, where its instance may be starting, instead of starting over at the
/// first (a finished VM's placement is not kept: its replacement tries every place again).
#[derive(Default)]
pub struct Recalled(std::sync::RwLock<std::collections::BTreeMap<String, Placement>>);

impl Recalled {
    pub fn recall(&self, recorded: &[crate::Target<'_>]) {
        let found = recorded
            .iter()
            .filter(|t| t.kind == crate::Kind::Vm && !t.attrs.contains_key("host_key"))
            .filter_map(|t| Some((t.address.to_owned(), Placement::of(t.attrs)?)))
            .collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = found;
    }

    pub fn get(&self, address: &str) -> Option<Placement> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned()
    }
}

/// What a launch in one place came to.
pub enum Launched<T> {
    Made(T),
    /// The cloud has no room for this machine there: its own code (the reason recorded) and
    /// words (the error when every place refuses).
    NoCapacity {
        code: String,
        message: String,
    },
}

/// What a cloud does at each step of [`place`].
#[async_trait::async_trait]
pub trait Mover: Send {
    type Made: Send;

    /// The region's zones, in the order they are tried.
    async fn zones(&mut self, region: &str) -> Result<Vec<String>>;

    /// Before the first launch in `region`: record the placement about to be tried, and make
    /// what the VM needs there (key pair, security group, NIC…).
    async fn enter(&mut self, placement: &Placement) -> Result<()>;

    async fn launch(&mut self, placement: &Placement) -> Result<Launched<Self::Made>>;

    /// After every zone of `region` refused: remove what [`Mover::enter`] made there.
    async fn leave(&mut self, region: &str) -> Result<()>;
}

/// Tries every zone of every region once, in order, moving on only on a capacity answer.
/// When every place refuses, the error names each place with its cloud's words (and is not
/// retried: the next apply tries them all again).
pub async fn place<M: Mover>(regions: &[String], mover: &mut M) -> Result<(M::Made, Placement)> {
    let mut refused: Vec<(String, String, String)> = Vec::new();
    for region in regions {
        let zones = mover.zones(region).await?;
        let mut entered = false;
        for zone in zones {
            let reason = (!refused.is_empty()).then(|| {
                refused
                    .iter()
                    .map(|(zone, code, _)| format!("{zone}: {code}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let placement = Placement {
                region: region.clone(),
                zone: zone.clone(),
                reason,
            };
            if !entered {
                mover.enter(&placement).await?;
                entered = true;
            }
            match mover.launch(&placement).await? {
                Launched::Made(made) => return Ok((made, placement)),
                Launched::NoCapacity { code, message } => {
                    crate::output::line(&format!(
                        "no capacity in {zone} ({code}); trying the next place"
                    ));
                    refused.push((zone, code, message));
                }
            }
        }
        if entered {
            mover.leave(region).await?;
        }
    }
    let tried: Vec<String> = refused
        .iter()
        .map(|(zone, code, message)| format!("  {zone}: {code}: {message}"))
        .collect();
    Err(ProviderError::new(
        ErrorCode::Failed,
        format!(
            "no capacity for the VM in any place it may run ({} tried, regions {}):\n{}",
            refused.len(),
            regions.join(", "),
            tried.join("\n")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_home_region_goes_first_and_each_region_once() {
        let us = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"];
        assert_eq!(
            regions("us-west-1", &[], &us),
            ["us-west-1", "us-east-1", "us-east-2", "us-west-2"]
        );
        assert_eq!(
            regions("us-east-1", &["us-west-2".into(), "us-east-1".into()], &us),
            ["us-east-1", "us-west-2"]
        );
    }

    struct Fake {
        full: BTreeSet<&'static str>,
        log: Vec<String>,
    }

    #[async_trait::async_trait]
    impl Mover for Fake {
        type Made = String;
        async fn zones(&mut self, region: &str) -> Result<Vec<String>> {
            Ok(vec![format!("{region}a"), format!("{region}b")])
        }
        async fn enter(&mut self, p: &Placement) -> Result<()> {
            self.log.push(format!("enter {}", p.region));
            Ok(())
        }
        async fn launch(&mut self, p: &Placement) -> Result<Launched<String>> {
            self.log.push(format!("launch {}", p.zone));
            if self.full.contains(p.zone.as_str()) {
                Ok(Launched::NoCapacity {
                    code: "Full".into(),
                    message: format!("no room in {}", p.zone),
                })
            } else {
                Ok(Launched::Made(p.zone.clone()))
            }
        }
        async fn leave(&mut self, region: &str) -> Result<()> {
            self.log.push(format!("leave {region}"));
            Ok(())
        }
    }

    fn run(f: &mut Fake, regions: &[&str]) -> Result<(String, Placement)> {
        let regions: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(place(&regions, f))
    }

    #[test]
    fn a_full_zone_moves_to_the_next_then_to_the_next_region() {
        let mut f = Fake {
            full: ["r1a", "r1b", "r2a"].into(),
            log: vec![],
        };
        let (made, placement) = run(&mut f, &["r1", "r2"]).unwrap();
        assert_eq!(made, "r2b");
        assert_eq!(
            placement,
            Placement {
                region: "r2".into(),
                zone: "r2b".into(),
                reason: Some("r1a: Full, r1b: Full, r2a: Full".into())
            }
        );
        assert_eq!(
            f.log,
            [
                "enter r1",
                "launch r1a",
                "launch r1b",
                "leave r1",
                "enter r2",
                "launch r2a",
                "launch r2b"
            ]
        );
    }

    #[test]
    fn the_first_place_has_no_reason_and_everywhere_full_names_every_place() {
        let mut f = Fake {
            full: [].into(),
            log: vec![],
        };
        assert_eq!(run(&mut f, &["r1"]).unwrap().1.reason, None);
        let mut f = Fake {
            full: ["r1a", "r1b", "r2a", "r2b"].into(),
            log: vec![],
        };
        let e = run(&mut f, &["r1", "r2"]).unwrap_err();
        for zone in ["r1a", "r1b", "r2a", "r2b"] {
            assert!(
                e.message
                    .contains(&format!("  {zone}: Full: no room in {zone}")),
                "{e}"
            );
        }
        assert!(!e.retryable());
        assert_eq!(f.log.iter().filter(|l| l.starts_with("launch")).count(), 4);
        assert_eq!(f.log.last().unwrap(), "leave r2");
    }
}
