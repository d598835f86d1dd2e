//! Capacity failover on AWS (issue 23, item 2) against moto, behind
//! tests/fixtures/capacity_proxy.py, which answers RunInstances in chosen availability
//! zones as EC2 does when a zone is out of capacity (HTTP 500 InsufficientInstanceCapacity;
//! moto itself always has room). The VM moves to the next zone, then to the next region of
//! the continent; storage stays; the state records where and why; the next plan is empty
//! and says where the VM runs; a capacity error everywhere names every place and leaves
//! nothing behind. The "VM" answering SSH is a test host (sshd in a network namespace).
//!
//! Needs root, sshd, ip, curl and moto (`scripts/prereqs.sh`).

mod common;

#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::path::Path;

use common::moto::{xml_all, Moto};
use common::Project;
use sshd::TestHost;

/// The proxy, stopped when the test ends however it ends.
struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy in front of `moto` refusing RunInstances in `full` (`*`: everywhere); the
/// environment that sends anycloud through it; and the file logging each RunInstances.
fn capacity_proxy(
    moto: &Moto,
    full: &str,
    dir: &Path,
) -> (Proxy, Vec<(String, String)>, std::path::PathBuf) {
    let port = common::moto::free_port("127.0.0.1");
    let log = dir.join("run_instances.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/capacity_proxy.py");
    let proxy = std::process::Command::new("python3")
        .arg(&script)
        .args([&port.to_string(), &moto.url, full])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Proxy(proxy);
    common::wait_for(10, "the capacity proxy to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    (proxy, env, log)
}

fn config(user: &str, deployment: &str, region: &str, regions: &str) -> String {
    format!(
        r#"
project: failover
providers:
  aws: {{ ami: ami-12345678, ssh_cidr: 10.0.0.0/8, ssh_user: {user} }}
deployments:
  {deployment}:
    provider: aws
    region: {region}
    vm: {{ type: t3.micro{regions} }}
    container: {{ image: busybox }}
    buckets: {{ output: {deployment}-results }}
"#
    )
}

/// Instances of a deployment that are pending or running in `region`, with their zones.
fn live_in(moto: &Moto, region: &str, deployment: &str) -> Vec<String> {
    let found = moto.query_in(
        region,
        "ec2",
        &format!(
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:anycloud:deployment&Filter.1.Value.1={deployment}&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running"
        ),
    );
    xml_all(&found, "availabilityZone")
}

/// Whether the deployment's key pair and security group exist in `region`.
fn network_in(moto: &Moto, region: &str, deployment: &str) -> (bool, bool) {
    let name = format!("anycloud-{deployment}");
    let keys = moto.query_in(region, "ec2", "Action=DescribeKeyPairs&Version=2016-11-15");
    let groups = moto.query_in(
        region,
        "ec2",
        "Action=DescribeSecurityGroups&Version=2016-11-15",
    );
    (
        xml_all(&keys, "keyName").contains(&name),
        xml_all(&groups, "groupName").contains(&name),
    )
}

fn tried(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Every zone of us-east-1 is full, and us-east-2a too: the VM lands in us-east-2b, each
/// refused zone asked once (no retry in place), its key pair and security group made in
/// us-east-2 and none left in us-east-1, the bucket in us-east-1. The state records the
/// placement and why; the next plan has no change and says where the VM runs, as `status`
/// does; destroy removes everything from us-east-2.
#[test]
fn no_capacity_moves_the_vm_to_the_next_zone_then_the_next_region() {
    let host = TestHost::start().with_sudo_user();
    let moto = Moto::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let us_east_1: Vec<String> = "abcdef".chars().map(|z| format!("us-east-1{z}")).collect();
    let full = format!("{},us-east-2a", us_east_1.join(","));
    let (_proxy, env, log) = capacity_proxy(&moto, &full, dir.path());
    let mut p = Project::new(&config(
        &host.user,
        "moving-vm",
        "us-east-1",
        ", regions: [us-east-2]",
    ));
    p.env = env;
    p.env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("{}:{}", host.address, host.port),
    ));
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "moving-vm")
            .unwrap();
    host.authorize(&key.public_key);
    let target = ["--target", "deployment.moving-vm.vm"];
    let applied = p.run(&[&["apply", "--auto-approve"][..], &target].concat());
    assert_eq!(applied.code, 0, "{applied:?}");

    let mut expected: Vec<String> = us_east_1.iter().map(|z| format!("{z} refused")).collect();
    expected.push("us-east-2a refused".into());
    expected.push("us-east-2b forwarded".into());
    assert_eq!(tried(&log), expected, "each place once, in order");
    assert_eq!(live_in(&moto, "us-east-2", "moving-vm"), ["us-east-2b"]);
    assert!(live_in(&moto, "us-east-1", "moving-vm").is_empty());
    assert_eq!(network_in(&moto, "us-east-2", "moving-vm"), (true, true));
    assert_eq!(network_in(&moto, "us-east-1", "moving-vm"), (false, false));
    // Storage stays where the deployment is.
    let (_, location) = moto.http("GET", "/moving-vm-results?location", None);
    assert!(!location.contains("us-east-2"), "{location}");

    let state = p.state_json().unwrap();
    let vm = &state["resources"]["deployment.moving-vm.vm"];
    assert!(vm["pending"].is_null(), "{vm}");
    let refused: Vec<String> = expected[..expected.len() - 1]
        .iter()
        .map(|l| l.replace(" refused", ": InsufficientInstanceCapacity"))
        .collect();
    assert_eq!(
        vm["attributes"]["placement"],
        serde_json::json!({
            "region": "us-east-2",
            "zone": "us-east-2b",
            "reason": refused.join(", "),
        }),
        "{vm}"
    );
    assert_eq!(
        vm["attributes"]["region"], "us-east-1",
        "planned, not moved"
    );

    // The next plan: no change, not a replace back to us-east-1a, and it says why.
    let plan = p.run(&[&["plan", "--detailed-exitcode"][..], &target].concat());
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(&format!(
            "moving-vm: its VM runs in us-east-2b (us-east-2), not its first place: no capacity at {}.",
            refused.join(", ")
        )),
        "{plan:?}"
    );
    let markdown = p.ok(&[&["plan", "--format", "markdown"][..], &target].concat());
    assert!(
        markdown
            .stdout
            .contains("- moving-vm: its VM runs in us-east-2b"),
        "{markdown:?}"
    );
    let status = p.ok(&["status"]);
    assert!(
        status
            .stdout
            .contains("placement: runs in us-east-2b (us-east-2) because of no capacity at us-east-1a: InsufficientInstanceCapacity"),
        "{status:?}"
    );

    let gone = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert!(live_in(&moto, "us-east-2", "moving-vm").is_empty());
    assert_eq!(network_in(&moto, "us-east-2", "moving-vm"), (false, false));
}

/// A capacity error in every zone of every region the VM may run in (the deployment's
/// region, then `vm.regions`): the apply fails naming each place with EC2's words, each
/// tried once; no instance, key pair or security group is left in any of them, and destroy
/// has nothing to remove.
#[test]
fn no_capacity_anywhere_fails_naming_every_place_and_leaves_nothing() {
    let host = TestHost::start().with_sudo_user();
    let moto = Moto::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let (_proxy, env, log) = capacity_proxy(&moto, "*", dir.path());
    let mut p = Project::new(&config(
        &host.user,
        "full-vm",
        "us-west-2",
        ", regions: [us-west-1]",
    ));
    p.env = env;
    p.env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("{}:{}", host.address, host.port),
    ));
    let target = ["--target", "deployment.full-vm.vm"];
    let failed = p.run(&[&["apply", "--auto-approve"][..], &target].concat());
    assert_eq!(failed.code, 1, "{failed:?}");
    let places: Vec<String> = tried(&log)
        .iter()
        .map(|l| l.strip_suffix(" refused").unwrap().to_owned())
        .collect();
    let zones_of = |region: &str| {
        let found = moto.query_in(
            region,
            "ec2",
            "Action=DescribeAvailabilityZones&Version=2016-11-15",
        );
        let mut zones = xml_all(&found, "zoneName");
        zones.sort();
        zones
    };
    let every = [zones_of("us-west-2"), zones_of("us-west-1")].concat();
    assert!(every.len() >= 4, "{every:?}");
    assert_eq!(places, every, "every zone of both regions, once each");
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        said.contains("no capacity for the VM in any place it may run"),
        "{said}"
    );
    for zone in &every {
        assert!(
            said.contains(&format!(
                "{zone}: InsufficientInstanceCapacity: We currently do not have sufficient t3.micro capacity in the Availability Zone you requested ({zone})"
            )),
            "{zone}: {said}"
        );
    }
    for region in ["us-west-2", "us-west-1"] {
        assert!(live_in(&moto, region, "full-vm").is_empty(), "{region}");
        assert_eq!(
            network_in(&moto, region, "full-vm"),
            (false, false),
            "{region}"
        );
    }
    // The record says no placement: the next apply tries every place again.
    let state = p.state_json().unwrap();
    let vm = &state["resources"]["deployment.full-vm.vm"];
    assert_eq!(vm["pending"], "create", "{vm}");
    assert!(vm["attributes"]["placement"].is_null(), "{vm}");
    assert!(vm["attributes"]["instance_id"].is_null(), "{vm}");
    let gone = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
}
