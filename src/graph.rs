//! The resource graph (DESIGN §4): one node per thing that exists, edges for real needs.
//! Cloud-free: nodes carry the config's inputs; a provider turns them into attributes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use anycloud_provider::{Attrs, Kind};
use serde_json::json;

use crate::config::{Config, Deployment};

/// Whether the engine manages a node or only reads it (the input bucket must already exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Managed,
    Data,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub address: String,
    pub kind: Kind,
    pub provider: String,
    pub mode: Mode,
    /// Shared: every node of a deployment gets the same inputs.
    pub inputs: Arc<Attrs>,
    pub deps: Vec<String>,
    /// The VM this node lives on: replacing that VM replaces this node.
    pub host: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Keyed by address; [`Graph::order`] gives the deterministic topological order.
    pub nodes: BTreeMap<String, Node>,
    /// Cross-continent data paths, for the plan's warnings.
    pub warnings: Vec<String>,
}

pub fn storage_address(provider: &str, continent: &str) -> String {
    format!("shared.{provider}.{continent}.storage")
}

/// Compiles the config into its graph.
pub fn compile(config: &Config) -> Graph {
    let mut g = Graph::default();
    // First-wins: the first deployment (by id) to use a bucket name fixes its continent.
    // (continent, first deployment, its region): a new bucket is made where it is first used.
    let mut bucket_home: BTreeMap<(String, String), (String, String, String)> = BTreeMap::new();
    for d in &config.deployments {
        let storage = storage_address(&d.provider, &d.continent);
        g.nodes.entry(storage.clone()).or_insert_with(|| Node {
            address: storage.clone(),
            kind: Kind::Storage,
            provider: d.provider.clone(),
            mode: Mode::Managed,
            inputs: Arc::new(storage_inputs(config, d)),
            deps: vec![],
            host: None,
        });
        let p = |rest: &str| format!("deployment.{}.{rest}", d.id);
        let mut bucket_addrs = Vec::new();
        let mut bucket_regions: BTreeMap<&str, String> = BTreeMap::new();
        for (role, name) in roles(d) {
            let addr = p(&format!("bucket.{role}"));
            let key = (d.provider.clone(), name.clone());
            let (home, first, home_region) = bucket_home
                .entry(key)
                .or_insert_with(|| (d.continent.clone(), d.id.clone(), d.region.clone()))
                .clone();
            if home != d.continent {
                g.warnings.push(format!(
                    "{addr}: bucket '{name}' lives in continent '{home}' (first used by deployment '{first}') but deployment '{}' runs in '{}': its data crosses continents (70-150 ms, about $0.05-0.12/GB instead of $0.01-0.02/GB)",
                    d.id, d.continent
                ));
            }
            let mut inputs = storage_inputs(config, d);
            machine_inputs(d, &mut inputs);
            inputs.insert("name".into(), json!(name));
            inputs.insert("role".into(), json!(role));
            inputs.insert("continent".into(), json!(home));
            inputs.insert("home_region".into(), json!(home_region));
            bucket_regions.insert(role, home_region);
            g.add(Node {
                address: addr.clone(),
                kind: Kind::Bucket,
                provider: d.provider.clone(),
                mode: if role == "input" {
                    Mode::Data
                } else {
                    Mode::Managed
                },
                inputs: Arc::new(inputs),
                deps: if buckets_on_vm(&d.provider) {
                    vec![storage.clone(), p("vm")]
                } else {
                    vec![storage.clone()]
                },
                host: None,
            });
            bucket_addrs.push((role, addr));
        }
        let bucket = |role: &str| {
            bucket_addrs
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, a)| a.clone())
        };
        let mut host_inputs = host_inputs(config, d);
        // Where each bucket is made (a VM's rclone needs its region).
        host_inputs.insert("bucket_regions".into(), json!(bucket_regions));
        let host_inputs = Arc::new(host_inputs);
        let vm = p("vm");
        let mut vm_deps = vec![];
        if has_role(&d.provider) {
            let role = p("role");
            g.add(Node {
                address: role.clone(),
                kind: Kind::Role,
                provider: d.provider.clone(),
                mode: Mode::Managed,
                inputs: host_inputs.clone(),
                deps: bucket_addrs.iter().map(|(_, a)| a.clone()).collect(),
                host: None,
            });
            vm_deps.push(role);
        }
        let hosted = |g: &mut Graph,
                      address: String,
                      kind: Kind,
                      mut deps: Vec<String>,
                      host: Option<String>| {
            // A hosted node names its VM directly: its provider reaches the machine through
            // the VM's attributes (address, key, pinned host key).
            if let Some(vm) = &host {
                if !deps.contains(vm) {
                    deps.insert(0, vm.clone());
                }
            }
            g.add(Node {
                address,
                kind,
                provider: d.provider.clone(),
                mode: Mode::Managed,
                inputs: host_inputs.clone(),
                deps,
                host,
            });
        };
        hosted(&mut g, vm.clone(), Kind::Vm, vm_deps, None);
        let on_vm = Some(vm.clone());
        hosted(
            &mut g,
            p("vm_init"),
            Kind::VmInit,
            vec![vm.clone()],
            on_vm.clone(),
        );
        hosted(
            &mut g,
            p("rclone"),
            Kind::Rclone,
            vec![p("vm_init"), storage.clone()],
            on_vm.clone(),
        );
        // The container starts once its data is down and the upload loops run; in reverse, it
        // stops (and flushes) before the upload programs go, so nothing it wrote is missed.
        let mut container_deps = vec![p("vm_init")];
        if let Some(b) = bucket("input") {
            hosted(
                &mut g,
                p("sync.input"),
                Kind::SyncInput,
                vec![p("rclone"), b],
                on_vm.clone(),
            );
            container_deps.push(p("sync.input"));
        }
        if let Some(b) = bucket("checkpoint") {
            hosted(
                &mut g,
                p("sync.checkpoint_restore"),
                Kind::SyncCheckpointRestore,
                vec![p("rclone"), b.clone()],
                on_vm.clone(),
            );
            // Upload only after the restore, or an empty disk could be uploaded first.
            hosted(
                &mut g,
                p("service.checkpoint"),
                Kind::ServiceCheckpoint,
                vec![p("rclone"), b, p("sync.checkpoint_restore")],
                on_vm.clone(),
            );
            container_deps.push(p("sync.checkpoint_restore"));
            container_deps.push(p("service.checkpoint"));
        }
        if let Some(b) = bucket("output") {
            hosted(
                &mut g,
                p("service.output"),
                Kind::ServiceOutput,
                vec![p("rclone"), b],
                on_vm.clone(),
            );
            container_deps.push(p("service.output"));
        }
        hosted(
            &mut g,
            p("container"),
            Kind::Container,
            container_deps,
            on_vm,
        );
    }
    g
}

fn roles(d: &Deployment) -> Vec<(&'static str, String)> {
    let b = &d.buckets;
    [
        ("input", &b.input),
        ("output", &b.output),
        ("checkpoint", &b.checkpoint),
    ]
    .into_iter()
    .filter_map(|(r, n)| n.clone().map(|n| (r, n)))
    .collect()
}

/// Clouds whose VMs get their bucket access from an identity of their own.
fn has_role(provider: &str) -> bool {
    matches!(provider, "aws" | "azure" | "gcp")
}

/// On a machine of the user's own, buckets are directories on that machine: made once it is
/// reachable (and its host key pinned).
fn buckets_on_vm(provider: &str) -> bool {
    provider == "ssh"
}

/// How to reach the machine of a `provider: ssh` deployment.
fn machine_inputs(d: &Deployment, a: &mut Attrs) {
    let Some(m) = &d.vm.machine else { return };
    a.insert("ssh_host".into(), json!(m.host));
    a.insert("ssh_port".into(), json!(m.port));
    a.insert("ssh_user".into(), json!(m.user));
    if let Some(i) = &m.identity_file {
        a.insert("ssh_identity_file".into(), json!(i));
    }
    if let Some(k) = &m.host_key {
        a.insert("ssh_host_key".into(), json!(k));
    }
    a.insert("root".into(), json!(m.root));
    a.insert("deployment".into(), json!(d.id));
}

fn storage_inputs(config: &Config, d: &Deployment) -> Attrs {
    let mut a = Attrs::new();
    a.insert("continent".into(), json!(d.continent));
    a.insert("region".into(), json!(d.region));
    if d.provider == "local" {
        a.insert("root".into(), json!(config.local_root));
    }
    if let Some(p) = &config.project {
        a.insert("project".into(), json!(p));
    }
    a
}

fn host_inputs(config: &Config, d: &Deployment) -> Attrs {
    let mut a = storage_inputs(config, d);
    machine_inputs(d, &mut a);
    a.insert("deployment".into(), json!(d.id));
    let buckets: BTreeMap<&str, String> = roles(d).into_iter().collect();
    a.insert("buckets".into(), json!(buckets));
    a.insert("sync_interval_secs".into(), json!(d.sync_interval_secs));
    a.insert("check_retries".into(), json!(d.check_retries));
    a.insert(
        "check_retries_sleep_secs".into(),
        json!(d.check_retries_sleep_secs),
    );
    a.insert("image".into(), json!(d.container.image));
    a.insert("command".into(), json!(d.container.command));
    a.insert("env".into(), json!(d.container.env));
    if let Some(g) = &d.container.gpus {
        a.insert("gpus".into(), json!(g));
    }
    if let Some(s) = &d.container.shm_size {
        a.insert("shm_size".into(), json!(s));
    }
    if let Some(t) = &d.vm.machine_type {
        a.insert("vm_type".into(), json!(t));
    }
    a.insert("spot".into(), json!(d.vm.spot));
    if let Some(disk) = d.vm.disk_gb {
        a.insert("disk_gb".into(), json!(disk));
    }
    a
}

impl Graph {
    fn add(&mut self, node: Node) {
        self.nodes.insert(node.address.clone(), node);
    }

    /// Topological order, ties broken by address, so every rendering is byte-stable.
    pub fn order(&self) -> Vec<String> {
        // Keyed by address (see `add`), so already sorted and unique: no copy of the edges.
        let edges: Vec<(&str, &[String])> = self
            .nodes
            .iter()
            .map(|(a, n)| (a.as_str(), n.deps.as_slice()))
            .collect();
        topo_order_sorted(&edges)
    }

    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph anycloud {\n  rankdir=LR;\n  node [shape=box];\n");
        for a in self.order() {
            let n = &self.nodes[&a];
            out.push_str(&format!("  \"{a}\" [label=\"{a}\\n({})\"];\n", n.kind));
        }
        for a in self.order() {
            for d in &self.nodes[&a].deps {
                out.push_str(&format!("  \"{d}\" -> \"{a}\";\n"));
            }
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self) -> String {
        let order = self.order();
        let id: BTreeMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i))
            .collect();
        let mut out = String::from("flowchart LR\n");
        for a in &order {
            out.push_str(&format!(
                "  n{}[\"{a}<br/>({})\"]\n",
                id[a.as_str()],
                self.nodes[a].kind
            ));
        }
        for a in &order {
            for d in &self.nodes[a].deps {
                out.push_str(&format!("  n{} --> n{}\n", id[d.as_str()], id[a.as_str()]));
            }
        }
        out
    }
}

/// Kahn's algorithm with a min-heap on the address: dependencies first, ties alphabetical.
/// Dependencies on addresses outside the set are ignored.
pub fn topo_order(edges: impl IntoIterator<Item = (String, Vec<String>)>) -> Vec<String> {
    let edges: BTreeMap<String, Vec<String>> = edges.into_iter().collect();
    let edges: Vec<(&str, &[String])> = edges
        .iter()
        .map(|(a, d)| (a.as_str(), d.as_slice()))
        .collect();
    topo_order_sorted(&edges)
}

/// [`topo_order`] of edges already sorted by address, without duplicates (a graph's or a
/// plan's map, borrowed). Nodes are their index in that order, so the min-heap on the index
/// is the min-heap on the address, and no address is copied but into the result.
pub(crate) fn topo_order_sorted(edges: &[(&str, &[String])]) -> Vec<String> {
    debug_assert!(
        edges.windows(2).all(|w| w[0].0 < w[1].0),
        "edges sorted and unique"
    );
    let index = |a: &str| edges.binary_search_by(|(k, _)| (*k).cmp(a)).ok();
    let mut indegree = vec![0usize; edges.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    let mut deps: Vec<usize> = Vec::new();
    for (node, (_, node_deps)) in edges.iter().enumerate() {
        deps.clear();
        deps.extend(node_deps.iter().filter_map(|d| index(d)));
        deps.sort_unstable();
        deps.dedup();
        indegree[node] = deps.len();
        for &d in &deps {
            dependents[d].push(node);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| Reverse(n))
        .collect();
    let mut done = vec![false; edges.len()];
    let mut out = Vec::with_capacity(edges.len());
    while let Some(Reverse(n)) = ready.pop() {
        out.push(edges[n].0.to_owned());
        done[n] = true;
        for &m in &dependents[n] {
            indegree[m] -= 1;
            if indegree[m] == 0 {
                ready.push(Reverse(m));
            }
        }
    }
    // A cycle cannot come from the compiler; a hand-edited state could make one. Keep the rest.
    if out.len() < edges.len() {
        out.extend(
            edges
                .iter()
                .zip(&done)
                .filter(|(_, d)| !**d)
                .map(|((a, _), _)| (*a).to_owned()),
        );
    }
    out
}
