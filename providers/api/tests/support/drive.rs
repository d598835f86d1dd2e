//! The engine's side of a provider's contract, for a provider's own tests: a deployment's
//! cloud nodes planned as the graph would (storage, buckets, role, grants), created in
//! dependency order under the engine's retry policy, refreshed in one read and deleted in
//! reverse. Included by `#[path]` from each cloud's contract tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use anycloud_provider::{
    Attrs, BucketRole, Dep, DeploymentSpec, Kind, NodeSpec, Provider, ProviderError,
};
use serde_json::Value;

/// A resource as the engine records it.
#[derive(Clone, Debug)]
pub struct Rec {
    pub address: String,
    pub kind: Kind,
    pub attrs: Attrs,
    pub private: Value,
    pub deps: Vec<String>,
}

/// What the engine would hold for one deployment, in dependency order.
pub fn planned(p: &dyn Provider, d: &DeploymentSpec) -> Vec<Rec> {
    let storage = format!("shared.{}.{}.storage", p.name(), d.continent);
    let mut out = Vec::new();
    let mut add = |kind: Kind, bucket: Option<BucketRole>, address: String, deps: Vec<String>| {
        let plan = p
            .plan(NodeSpec {
                kind,
                deployment: d,
                bucket,
            })
            .unwrap();
        out.push(Rec {
            address,
            kind,
            attrs: plan.attrs,
            private: plan.private,
            deps,
        });
    };
    add(Kind::Storage, None, storage.clone(), vec![]);
    let mut buckets = vec![];
    for role in BucketRole::ALL {
        let a = format!("deployment.{}.bucket.{role}", d.id);
        add(Kind::Bucket, Some(role), a.clone(), vec![storage.clone()]);
        buckets.push(a);
    }
    let role = format!("deployment.{}.role", d.id);
    add(Kind::Role, None, role.clone(), buckets);
    for r in BucketRole::ALL {
        add(
            Kind::Grant,
            Some(r),
            format!("deployment.{}.grant.{r}", d.id),
            vec![role.clone(), format!("deployment.{}.bucket.{r}", d.id)],
        );
    }
    out
}

pub struct Engine<'a> {
    pub p: &'a dyn Provider,
    pub lineage: String,
    pub state: BTreeMap<String, Rec>,
}

impl<'a> Engine<'a> {
    pub fn new(p: &'a dyn Provider, lineage: &str) -> Engine<'a> {
        Engine {
            p,
            lineage: lineage.into(),
            state: BTreeMap::new(),
        }
    }

    fn deps_of(&self, r: &Rec) -> Vec<(Kind, Attrs, Value)> {
        r.deps
            .iter()
            .filter_map(|d| self.state.get(d))
            .map(|d| (d.kind, d.attrs.clone(), d.private.clone()))
            .collect()
    }

    pub async fn create(&mut self, r: &Rec) -> Result<Attrs, ProviderError> {
        if let Some(done) = self.state.get(&r.address) {
            return Ok(done.attrs.clone());
        }
        let deps = self.deps_of(r);
        let dep_refs: Vec<Dep> = deps
            .iter()
            .map(|(kind, attrs, private)| Dep {
                kind: *kind,
                attrs,
                private,
            })
            .collect();
        let made = anycloud_provider::retry::with_retries(
            || {
                self.p.create(anycloud_provider::Target {
                    address: &r.address,
                    kind: r.kind,
                    attrs: &r.attrs,
                    private: &r.private,
                    deps: &dep_refs,
                    lineage: &self.lineage,
                })
            },
            |_, _| {},
        )
        .await?;
        let mut rec = r.clone();
        rec.attrs = made.clone();
        self.state.insert(r.address.clone(), rec);
        Ok(made)
    }

    pub async fn apply(&mut self, recs: &[Rec]) -> Result<(), ProviderError> {
        for r in recs {
            self.create(r).await?;
        }
        Ok(())
    }

    /// One refresh of every recorded resource: what it finds, by address.
    pub async fn refresh(&self) -> BTreeMap<String, Option<Attrs>> {
        let recs: Vec<&Rec> = self.state.values().collect();
        let deps: Vec<Vec<(Kind, Attrs, Value)>> = recs.iter().map(|r| self.deps_of(r)).collect();
        let dep_refs: Vec<Vec<Dep>> = deps
            .iter()
            .map(|ds| {
                ds.iter()
                    .map(|(kind, attrs, private)| Dep {
                        kind: *kind,
                        attrs,
                        private,
                    })
                    .collect()
            })
            .collect();
        let targets: Vec<anycloud_provider::Target> = recs
            .iter()
            .zip(&dep_refs)
            .map(|(r, d)| anycloud_provider::Target {
                address: &r.address,
                kind: r.kind,
                attrs: &r.attrs,
                private: &r.private,
                deps: d,
                lineage: &self.lineage,
            })
            .collect();
        let found: Vec<Option<Attrs>> = self
            .p
            .read(&targets)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.expect("every target read"))
            .collect();
        recs.iter().map(|r| r.address.clone()).zip(found).collect()
    }

    pub async fn destroy(&mut self) -> Result<(), ProviderError> {
        // Reverse dependency order: grants, identity, buckets, storage.
        let order = [
            Kind::Vm,
            Kind::Grant,
            Kind::Role,
            Kind::Bucket,
            Kind::Storage,
        ];
        for kind in order {
            let addresses: Vec<String> = self
                .state
                .values()
                .filter(|r| r.kind == kind)
                .map(|r| r.address.clone())
                .collect();
            for a in addresses {
                let r = self.state[&a].clone();
                let deps = self.deps_of(&r);
                let dep_refs: Vec<Dep> = deps
                    .iter()
                    .map(|(kind, attrs, private)| Dep {
                        kind: *kind,
                        attrs,
                        private,
                    })
                    .collect();
                anycloud_provider::retry::with_retries(
                    || {
                        self.p.delete(anycloud_provider::Target {
                            address: &r.address,
                            kind: r.kind,
                            attrs: &r.attrs,
                            private: &r.private,
                            deps: &dep_refs,
                            lineage: &self.lineage,
                        })
                    },
                    |_, _| {},
                )
                .await?;
                self.state.remove(&a);
            }
        }
        Ok(())
    }
}
