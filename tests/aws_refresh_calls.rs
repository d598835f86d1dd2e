//! A refresh of many AWS deployments costs a fixed number of API calls: one ListBuckets,
//! one listing each of roles and instance profiles, one DescribeInstances per region —
//! however many deployments there are. Counted by `plan -v` against moto's server.

mod common;

use common::moto::{xml_all, Moto};
use common::Project;

fn config(n: usize) -> String {
    let mut text = String::from(
        "project: many\nproviders:\n  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }\ndeployments:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "  d{i:03}:\n    provider: aws\n    region: us-east-1\n    vm: {{ type: t3.micro }}\n    container: {{ image: busybox }}\n    buckets: {{ output: out-{i:03}, checkpoint: true }}\n"
        ));
    }
    text
}

/// Makes `n` deployments' buckets, roles, profiles and instances in moto, and a state that
/// records them (the hosted steps left out: there is no machine behind moto's instances).
fn deployments_in_moto(moto: &Moto, p: &Project, n: usize) {
    let config = common::parse(&config(n));
    let plan = common::plan(&config, &common::fixed_state());
    let mut state = common::state_after(&plan, common::fixed_state());
    state.resources.retain(|_, r| {
        ![
            "vm_init",
            "rclone",
            "sync_input",
            "sync_checkpoint_restore",
            "service_output",
            "service_checkpoint",
            "container",
        ]
        .contains(&r.kind.as_str())
    });
    let run = moto.query(
        "ec2",
        &format!(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-12345678&MinCount={n}&MaxCount={n}&InstanceType=t3.micro&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=anycloud:project&TagSpecification.1.Tag.1.Value=many"
        ),
    );
    let ids = xml_all(&run, "instanceId");
    assert_eq!(ids.len(), n, "{run}");
    for (i, id) in ids.iter().enumerate() {
        for bucket in [format!("out-{i:03}"), format!("d{i:03}")] {
            assert!(moto.http("PUT", &format!("/{bucket}"), None).0 < 300);
        }
        let role = format!("anycloud-d{i:03}");
        moto.query("iam", &format!("Action=CreateRole&Version=2010-05-08&RoleName={role}&Path=/anycloud/&AssumeRolePolicyDocument=%7B%7D"));
        moto.query("iam", &format!("Action=CreateInstanceProfile&Version=2010-05-08&InstanceProfileName={role}&Path=/anycloud/"));
        let vm = state
            .resources
            .get_mut(&format!("deployment.d{i:03}.vm"))
            .unwrap();
        vm.attributes
            .insert("instance_id".into(), serde_json::json!(id));
    }
    std::fs::create_dir_all(p.path().join(".anycloud")).unwrap();
    anycloud_state::LocalStore::save_unchecked(&p.path().join(".anycloud/state.json"), &state)
        .unwrap();
}

fn refresh_calls(n: usize) -> (u64, usize) {
    let moto = Moto::start("127.0.0.1");
    let p = Project::new(&config(n));
    deployments_in_moto(&moto, &p, n);
    let out = p
        .command(&["plan", "-v"])
        .envs(moto.env())
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // plan: … refresh of N resources X ms (aws: C remote calls), diff …
    let resources: usize = stderr
        .split("refresh of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no refresh figure in {stderr}"));
    let calls: u64 = stderr
        .split("(aws: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no call count in {stderr}"));
    eprintln!("{n} deployments: refresh of {resources} resources took {calls} AWS API calls");
    // Nothing to destroy: moto goes with the test, and its instances have no machine behind.
    std::fs::remove_file(p.path().join(".anycloud/state.json")).unwrap();
    (calls, resources)
}

#[test]
fn refresh_calls_do_not_grow_with_the_deployments() {
    let (few, few_resources) = refresh_calls(10);
    let (many, many_resources) = refresh_calls(200);
    // Per deployment: 2 buckets, their 2 grants, role, VM; plus one shared storage node.
    assert_eq!((few_resources, many_resources), (10 * 6 + 1, 200 * 6 + 1));
    assert_eq!(few, many, "10 deployments: {few} calls; 200: {many}");
    assert!(many <= 5, "{many} calls");
}
