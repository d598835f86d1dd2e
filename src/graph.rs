//! The resource graph (DESIGN §4): one node per thing that exists, edges for real needs.
//! Built from the config and the providers' declarations ([`anycloud_provider::Shape`]):
//! whether a deployment has an identity, which buckets get a grant, whether buckets live on
//! the VM. Names no cloud.
//!
//! The contract with providers, written once (ARCHITECTURE.md repeats it):
//! - `shared.<provider>.<continent>.storage`: no dependencies.
//! - `deployment.D.bucket.<role>`: the storage; and the VM when buckets live on the VM.
//! - `deployment.D.role` (with an identity): the deployment's buckets (it names them; and so
//!   the VM, which carries it, goes before them, with its last upload into them).
//! - `deployment.D.grant.<role>` (for the declared roles): the role and that bucket.
//! - `deployment.D.vm`: the role and its grants, when there is one (in reverse the VM's
//!   last upload goes before the grants it needs do).
//! - everything hosted on the VM depends on the VM first, so its provider reaches the
//!   machine through the VM's recorded attributes; `rclone` also on the storage and every
//!   grant (its check lists a bucket with the identity's access); a download and an upload
//!   program on their bucket; the checkpoint upload after the restore; the container on
//!   the downloads and the upload programs (in reverse it stops, and flushes, first).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use anycloud_provider::{BucketRole, DeploymentSpec, Kind, NodeSpec, Shape};

use crate::config::Config;
use crate::registry::Providers;

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
    /// The deployment it is made for (for shared storage: the first that needed it).
    pub deployment: Arc<DeploymentSpec>,
    /// For a bucket or a grant: which of the deployment's buckets.
    pub bucket: Option<BucketRole>,
    pub deps: Vec<String>,
    /// The VM this node lives on: replacing that VM replaces this node.
    pub host: Option<String>,
}

impl Node {
    /// What its provider plans it from.
    pub fn spec(&self) -> NodeSpec<'_> {
        NodeSpec {
            kind: self.kind,
            deployment: &self.deployment,
            bucket: self.bucket,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Keyed by address; [`Graph::order`] gives the deterministic topological order.
    pub nodes: BTreeMap<String, Node>,
}

pub fn storage_address(provider: &str, continent: &str) -> String {
    format!("shared.{provider}.{continent}.storage")
}

/// The shape a provider declared; a provider this build does not know gets the plainest
/// (the plan then says it is not available).
fn shape_of(registry: &Providers, provider: &str) -> Shape {
    registry
        .declaration(provider)
        .map(|d| d.shape())
        .unwrap_or(Shape {
            identity: false,
            grants: &[],
            buckets_on_vm: false,
        })
}

/// Compiles the config into its graph.
pub fn compile(config: &Config, registry: &Providers) -> Graph {
    let mut g = Graph::default();
    // First-wins: the first deployment (by id) to use a bucket name fixes the region it is
    // made in. (Its continent is the same for every user: the config checks refuse a bucket
    // shared across continents.)
    let mut bucket_home: BTreeMap<(String, String), String> = BTreeMap::new();
    for d in &config.deployments {
        let shape = shape_of(registry, &d.provider);
        let mut spec = d.clone();
        for (role, bucket) in &d.buckets {
            let home = bucket_home
                .entry((d.provider.clone(), bucket.name.clone()))
                .or_insert_with(|| d.region.clone());
            if bucket.region != *home {
                // Copied only where a bucket lives elsewhere: otherwise the node shares it.
                let region = home.clone();
                if let Some(b) = Arc::make_mut(&mut spec).buckets.get_mut(role) {
                    b.region = region;
                }
            }
        }
        DeploymentNodes {
            g: &mut g,
            spec,
            shape,
        }
        .add();
    }
    g
}

/// Adds one deployment's nodes.
struct DeploymentNodes<'a> {
    g: &'a mut Graph,
    spec: Arc<DeploymentSpec>,
    shape: Shape,
}

impl DeploymentNodes<'_> {
    fn address(&self, rest: &str) -> String {
        format!("deployment.{}.{rest}", self.spec.id)
    }

    fn node(&mut self, address: String, kind: Kind, deps: Vec<String>, bucket: Option<BucketRole>) {
        let mode = if kind == Kind::Bucket && bucket == Some(BucketRole::Input) {
            Mode::Data
        } else {
            Mode::Managed
        };
        self.g.nodes.insert(
            address.clone(),
            Node {
                address,
                kind,
                provider: self.spec.provider.clone(),
                mode,
                deployment: self.spec.clone(),
                bucket,
                deps,
                host: None,
            },
        );
    }

    /// A node on the VM: it names its VM first.
    fn hosted(&mut self, rest: &str, kind: Kind, mut deps: Vec<String>) {
        let vm = self.address("vm");
        if !deps.contains(&vm) {
            deps.insert(0, vm.clone());
        }
        let address = self.address(rest);
        self.node(address.clone(), kind, deps, None);
        self.g.nodes.get_mut(&address).expect("just added").host = Some(vm);
    }

    fn add(mut self) {
        let d = self.spec.clone();
        let storage = storage_address(&d.provider, &d.continent);
        if !self.g.nodes.contains_key(&storage) {
            self.node(storage.clone(), Kind::Storage, vec![], None);
        }
        let vm = self.address("vm");
        for role in d.buckets.keys() {
            let mut deps = vec![storage.clone()];
            if self.shape.buckets_on_vm {
                deps.push(vm.clone());
            }
            let address = self.address(&format!("bucket.{role}"));
            self.node(address, Kind::Bucket, deps, Some(*role));
        }
        let bucket = |role: BucketRole| {
            d.buckets
                .contains_key(&role)
                .then(|| format!("deployment.{}.bucket.{role}", d.id))
        };
        let mut vm_deps = vec![];
        let mut grants = vec![];
        if self.shape.identity {
            // The role names its buckets, and the VM carries it: so in reverse the VM (and
            // its last upload into them) goes before any bucket does.
            let role = self.address("role");
            let buckets: Vec<String> = d
                .buckets
                .keys()
                .map(|r| self.address(&format!("bucket.{r}")))
                .collect();
            self.node(role.clone(), Kind::Role, buckets, None);
            for granted in self.shape.grants {
                if let Some(b) = bucket(*granted) {
                    let address = self.address(&format!("grant.{granted}"));
                    self.node(
                        address.clone(),
                        Kind::Grant,
                        vec![role.clone(), b],
                        Some(*granted),
                    );
                    grants.push(address);
                }
            }
            vm_deps.push(role);
            // The VM uses its grants until its last upload: in reverse they go after it.
            vm_deps.extend(grants.iter().cloned());
        }
        self.node(vm.clone(), Kind::Vm, vm_deps, None);
        let (vm_init, rclone) = (self.address("vm_init"), self.address("rclone"));
        self.hosted("vm_init", Kind::VmInit, vec![vm]);
        let mut rclone_deps = vec![vm_init.clone(), storage];
        rclone_deps.extend(grants);
        self.hosted("rclone", Kind::Rclone, rclone_deps);
        let mut container_deps = vec![vm_init];
        if let Some(b) = bucket(BucketRole::Input) {
            self.hosted("sync.input", Kind::SyncInput, vec![rclone.clone(), b]);
            container_deps.push(self.address("sync.input"));
        }
        if let Some(b) = bucket(BucketRole::Checkpoint) {
            let restore = self.address("sync.checkpoint_restore");
            self.hosted(
                "sync.checkpoint_restore",
                Kind::SyncCheckpointRestore,
                vec![rclone.clone(), b.clone()],
            );
            // Upload only after the restore, or an empty disk could be uploaded first.
            self.hosted(
                "service.checkpoint",
                Kind::ServiceCheckpoint,
                vec![rclone.clone(), b, restore.clone()],
            );
            container_deps.push(restore);
            container_deps.push(self.address("service.checkpoint"));
        }
        if let Some(b) = bucket(BucketRole::Output) {
            self.hosted("service.output", Kind::ServiceOutput, vec![rclone, b]);
            container_deps.push(self.address("service.output"));
        }
        self.hosted("container", Kind::Container, container_deps);
    }
}

impl Graph {
    /// Topological order, ties broken by address, so every rendering is byte-stable.
    pub fn order(&self) -> Vec<String> {
        // Keyed by address, so already sorted and unique: no copy of the edges.
        let edges: Vec<(&str, &[String])> = self
            .nodes
            .iter()
            .map(|(a, n)| (a.as_str(), n.deps.as_slice()))
            .collect();
        topo_order_sorted(&edges)
    }

    /// The nodes `keep` picks and everything they need, transitively.
    pub fn restricted_to(self, keep: impl Fn(&str) -> bool) -> Graph {
        let mut wanted: Vec<&str> = self
            .nodes
            .keys()
            .filter(|a| keep(a))
            .map(String::as_str)
            .collect();
        let mut kept: std::collections::BTreeSet<&str> = wanted.iter().copied().collect();
        while let Some(a) = wanted.pop() {
            for d in &self.nodes[a].deps {
                if self.nodes.contains_key(d) && kept.insert(d) {
                    wanted.push(d);
                }
            }
        }
        let kept: std::collections::BTreeSet<String> = kept.into_iter().map(String::from).collect();
        let mut nodes = self.nodes;
        nodes.retain(|a, _| kept.contains(a));
        Graph { nodes }
    }

    /// Nodes in order, each with its kind, provider and dependencies, one JSON document.
    pub fn to_json(&self) -> String {
        let nodes: Vec<serde_json::Value> = self
            .order()
            .iter()
            .map(|a| {
                let n = &self.nodes[a];
                serde_json::json!({
                    "address": a,
                    "kind": n.kind.as_str(),
                    "provider": n.provider,
                    "deployment": n.deployment.id,
                    "data": n.mode == Mode::Data,
                    "dependencies": n.deps,
                })
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&serde_json::json!({ "nodes": nodes }))
            .expect("json values serialise");
        s.push('\n');
        s
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn graph(yaml: &str) -> Graph {
        let registry = Providers::builtin(Path::new("/nonexistent/keys"));
        let config = crate::config::parse("t.yaml", yaml, Path::new("/tmp"), "d", &registry)
            .unwrap_or_else(|e| panic!("{}", e[0]));
        compile(&config, &registry)
    }

    fn deps(g: &Graph, address: &str) -> Vec<String> {
        g.nodes[address].deps.clone()
    }

    #[test]
    fn a_cloud_with_an_identity_gets_a_role_and_a_grant_per_declared_bucket() {
        let g = graph(
            "deployments:\n  dep:\n    provider: aws\n    region: us-east-1\n    vm: { type: t3.micro }\n    container: { image: x }\n    buckets: { input: in-b, output: out-b, checkpoint: true }\n",
        );
        assert_eq!(
            deps(&g, "deployment.dep.role"),
            vec![
                "deployment.dep.bucket.input",
                "deployment.dep.bucket.output",
                "deployment.dep.bucket.checkpoint"
            ]
        );
        assert_eq!(
            deps(&g, "deployment.dep.grant.output"),
            vec!["deployment.dep.role", "deployment.dep.bucket.output"]
        );
        assert!(g.nodes.contains_key("deployment.dep.grant.checkpoint"));
        // AWS reads the input through the role's own policy: no grant node for it.
        assert!(!g.nodes.contains_key("deployment.dep.grant.input"));
        // The VM's last upload needs its grants: in reverse they go after it.
        assert_eq!(
            deps(&g, "deployment.dep.vm"),
            vec![
                "deployment.dep.role",
                "deployment.dep.grant.output",
                "deployment.dep.grant.checkpoint",
            ]
        );
        assert_eq!(
            deps(&g, "deployment.dep.rclone"),
            vec![
                "deployment.dep.vm",
                "deployment.dep.vm_init",
                "shared.aws.us.storage",
                "deployment.dep.grant.output",
                "deployment.dep.grant.checkpoint",
            ]
        );
        assert_eq!(g.nodes["deployment.dep.bucket.input"].mode, Mode::Data);
    }

    #[test]
    fn buckets_on_the_machine_wait_for_it_and_the_local_cloud_has_no_identity() {
        let g = graph(
            "deployments:\n  byo:\n    provider: ssh\n    vm: { host: 10.0.0.5 }\n    container: { image: x }\n    buckets: { output: out-b }\n  loc:\n    container: { image: x }\n    buckets: { output: out-c }\n",
        );
        assert_eq!(
            deps(&g, "deployment.byo.bucket.output"),
            vec!["shared.ssh.ssh.storage", "deployment.byo.vm"]
        );
        assert_eq!(
            deps(&g, "deployment.loc.bucket.output"),
            vec!["shared.local.local.storage"]
        );
        assert!(!g
            .nodes
            .keys()
            .any(|a| a.contains(".role") || a.contains(".grant.")));
        for (a, n) in &g.nodes {
            if n.kind.is_hosted() {
                assert_eq!(n.deps[0], n.host.clone().unwrap(), "{a} names its VM first");
            }
        }
    }

    #[test]
    fn a_shared_bucket_lives_where_it_was_first_used() {
        let g = graph(
            "defaults: { provider: aws, vm: { type: t3.micro } }\ndeployments:\n  a-first:\n    region: us-west-2\n    container: { image: x }\n    buckets: { output: shared-out }\n  b-second:\n    region: us-east-1\n    container: { image: x }\n    buckets: { output: shared-out }\n",
        );
        let second = &g.nodes["deployment.b-second.bucket.output"].deployment;
        let bucket = second.bucket(BucketRole::Output).unwrap();
        assert_eq!(bucket.region, "us-west-2");
        assert_eq!(bucket.continent, "us");
        assert_eq!(
            g.nodes.keys().filter(|a| a.starts_with("shared.")).count(),
            1,
            "one storage per continent"
        );
    }

    #[test]
    fn topological_order_puts_dependencies_first_and_breaks_ties_by_address() {
        let order = topo_order([
            ("c".to_owned(), vec!["a".to_owned()]),
            ("b".to_owned(), vec![]),
            ("a".to_owned(), vec![]),
        ]);
        assert_eq!(order, vec!["a", "b", "c"]);
    }
}
