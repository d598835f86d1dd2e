//! The AWS provider against moto's server (S3, IAM, EC2): buckets by continent, the role and
//! its policy, a spot instance whose address is mapped to a test host (a network namespace
//! with sshd, through the documented test-only override `ANYCLOUD_TEST_SSH_ADDRESS`), so the
//! whole VM bootstrap runs for real and rclone on that host copies to and from moto's S3.
//!
//! The end-to-end test runs with IAM enforced (`Moto::start_enforcing`): anycloud signs in
//! as an admin user, and rclone on the test host as the deployment's role, with credentials
//! from an instance metadata service on the host (tests/common/imds.rs), so every VM step
//! runs under exactly the policy anycloud wrote. What the harness maps, and what moto still
//! checks less than AWS: tests/fixtures/moto_iam.py.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl and moto (`scripts/prereqs.sh`).

mod common;

#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

#[path = "common/imds.rs"]
mod imds;

use common::relay::Relay;

fn set_env(env: &mut [(String, String)], key: &str, value: &str) {
    for (k, v) in env.iter_mut() {
        if k == key {
            *v = value.to_owned();
        }
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::moto::{xml_all, Moto};
use common::{build_image, containers_of, read, wait_for, Project, Run};
use imds::Imds;
use sshd::TestHost;

fn run(p: &Project, env: &[(String, String)], args: &[&str]) -> Run {
    let out = p
        .command(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // This machine points the SDKs at a CA bundle moto does not need.
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(p: &Project, env: &[(String, String)], args: &[&str]) -> Run {
    let r = run(p, env, args);
    assert_eq!(r.code, 0, "anycloud {args:?} failed: {r:?}");
    r
}

/// An object in moto's S3, if there is one.
fn object(moto: &Moto, bucket: &str, key: &str) -> Option<String> {
    let (status, body) = moto.http("GET", &format!("/{bucket}/{key}"), None);
    (status == 200).then(|| body.trim().to_owned())
}

/// The keys of a bucket under `prefix`.
fn keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let (status, body) = moto.http(
        "GET",
        &format!(
            "/{bucket}?list-type=2&prefix={}",
            urlencoding::encode(prefix)
        ),
        None,
    );
    assert_eq!(status, 200, "{body}");
    xml_all(&body, "Key")
}

/// What the output upload kept of `name` before overwriting it: each
/// `.anycloud-replaced/<run>/<name>` with its content.
fn kept(moto: &Moto, name: &str) -> Vec<(String, String)> {
    keys(moto, "aws-results", ".anycloud-replaced/")
        .into_iter()
        .filter(|k| k.ends_with(&format!("/{name}")))
        .filter_map(|k| object(moto, "aws-results", &k).map(|c| (k, c)))
        .collect()
}

/// What the VM's uploads logged of their errors (for a failure's message).
fn vm_logs(vm_root: &Path) -> String {
    let mut out = String::new();
    for file in common::files_under(&vm_root.join("var/log/anycloud")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines() {
            out.push_str(&format!("{}: {line}\n", file.display()));
        }
    }
    out
}

fn config(user: &str) -> String {
    config_with_cidr(user, "10.0.0.0/8")
}

fn config_with_cidr(user: &str, cidr: &str) -> String {
    format!(
        r#"
project: e2e-aws
providers:
  aws: {{ ami: ami-12345678, ssh_user: {user}, ssh_cidr: {cidr} }}
defaults:
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  aws-alpha:
    provider: aws
    region: us-east-1
    vm: {{ type: t3.micro, spot: true }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ input: aws-input, output: aws-results, checkpoint: true }}
"#
    )
}

/// The role's principal in moto's refusal log (imds.py's session name).
const ROLE_SESSION: &str =
    "arn:aws:sts::123456789012:assumed-role/anycloud-aws-alpha/anycloud-test-host";

/// What rclone on the VM said of each copy it found corrupted and could not remove, from
/// its upload logs so far: `seen` gathers the lines (file, line) as the test goes, since a
/// new VM starts new logs. A file the job rewrites while it goes up (the checkpoint's
/// counter, tick.txt) arrives with another hash than the file has by then ("corrupted on
/// transfer"); rclone then removes the copy it made, a DeleteObject the role may not make
/// (refused, on AWS too: "Failed to remove failed copy: AccessDenied"), and its next
/// attempt overwrites the object.
fn gather_failed_copies(vm_root: &Path, seen: &mut BTreeSet<(String, String)>) {
    for file in common::files_under(&vm_root.join("var/log/anycloud")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(FAILED_REMOVAL)) {
            seen.insert((file.display().to_string(), line.to_owned()));
        }
    }
}

const FAILED_REMOVAL: &str = ": Failed to remove failed copy: AccessDenied";

/// How many refused removals of a failed copy each `bucket/key` had: one per log line
/// `INFO  : KEY: Failed to remove failed copy: AccessDenied…`, in the bucket of the program
/// that logged it.
fn failed_copy_budget(seen: &BTreeSet<(String, String)>) -> BTreeMap<String, usize> {
    let mut budget = BTreeMap::new();
    for (file, line) in seen {
        let Some((_, rest)) = line.split_once(" : ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once(FAILED_REMOVAL) else {
            continue;
        };
        let file = file.rsplit('/').next().unwrap_or_default();
        let buckets: &[&str] = if file.contains("checkpoint") {
            &["aws-alpha"]
        } else if file.contains("output") {
            &["aws-results"]
        } else {
            &["aws-alpha", "aws-results"]
        };
        for bucket in buckets {
            *budget.entry(format!("{bucket}/{name}")).or_insert(0) += 1;
        }
    }
    budget
}

/// moto's refusals so far, but for
/// - the metadata service's own AssumeRole when another request took its free pass
///   (imds.py: refused, then tried again);
/// - the role's removals of copies rclone found corrupted (`gather_failed_copies`): as
///   many as rclone logged refused, of that object.
fn unexpected_refusals(
    moto: &Moto,
    failed_copies: &BTreeSet<(String, String)>,
) -> Vec<serde_json::Value> {
    let mut budget = failed_copy_budget(failed_copies);
    moto.refusals()
        .into_iter()
        .filter(|r| r["principal"] != "harness-imds")
        .filter(|r| {
            let object = r["resource"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("arn:aws:s3:::");
            let left = budget.get_mut(object);
            let failed_copy = r["principal"] == ROLE_SESSION
                && r["action"] == "s3:DeleteObject"
                && left.as_ref().is_some_and(|n| **n > 0);
            if failed_copy {
                *left.unwrap() -= 1;
                eprintln!("refused (rclone removing a copy it found corrupted): {r}");
            }
            !failed_copy
        })
        .collect()
}

#[test]
fn aws_against_moto_end_to_end() {
    common::remove_leftover_containers(&["aws-alpha"]);
    build_image("anycloud-e2e:v1");
    // The test host's sessions carry no credentials, only where the instance metadata
    // service is: rclone's env_auth gets the role's credentials there, as on EC2. Its login
    // user is not root and uses sudo (which keeps the variable), as on Debian's and Ubuntu's
    // images.
    let host = TestHost::start_with_env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds::ENDPOINT)])
        .with_sudo_user();
    assert_ne!(host.user, "root");
    // On the host's link, so rclone on the "VM" reaches it as well as anycloud does. IAM is
    // enforced: anycloud signs in as an admin user, the VM as the deployment's role.
    let moto = Moto::start_enforcing(&host.gateway);
    let imds = Imds::start(
        &host.namespace,
        &moto.url,
        "arn:aws:iam::123456789012:role/anycloud/anycloud-aws-alpha",
        &common::moto::python_path(),
        host.dir.path(),
    );
    let vm_root = host.dir.path().join("vm");
    let p = Project::new(&config(&host.user));
    // moto at a loopback URL from here and from the VM alike: anycloud sends requests over
    // plain http only to loopback.
    let relay = Relay::start(&host.namespace, &moto.url);
    let mut env = moto.env();
    set_env(&mut env, "AWS_ENDPOINT_URL", &relay.url);
    env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("{}:{}", host.address, host.port),
    ));
    env.push((
        "ANYCLOUD_TEST_VM_ROOT".into(),
        vm_root.display().to_string(),
    ));

    // The input bucket exists already, with data in it; so does another deployment's
    // output bucket, which this deployment's role must not read.
    assert_eq!(moto.http("PUT", "/aws-input", None).0, 200);
    assert!(
        moto.http(
            "PUT",
            "/aws-input/data.txt",
            Some("hello from the input bucket")
        )
        .0 < 300
    );
    assert_eq!(moto.http("PUT", "/aws-beta-results", None).0, 200);
    assert!(
        moto.http("PUT", "/aws-beta-results/result.txt", Some("not yours"))
            .0
            < 300
    );

    // On EC2 the imported key pair is installed by cloud-init; the test host stands in for
    // that by authorising the deployment's key (made here as anycloud makes it, and then
    // used by anycloud as it finds it).
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "aws-alpha")
            .unwrap();
    host.authorize(&key.public_key);
    let plan = ok(&p, &env, &["plan"]);
    assert!(plan.stdout.contains("aws-results"), "{plan:?}");

    let applied = ok(&p, &env, &["apply", "--auto-approve"]);
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");

    // Buckets, tagged with their continent; the input bucket untouched.
    for bucket in ["aws-results", "aws-alpha"] {
        let (status, tags) = moto.http("GET", &format!("/{bucket}?tagging"), None);
        assert_eq!(status, 200, "{bucket}: {tags}");
        assert!(
            tags.contains("<Key>anycloud:continent</Key><Value>us</Value>"),
            "{bucket}: {tags}"
        );
    }

    // The role: its one policy names only this deployment's buckets, the input read-only.
    let policy = moto.query(
        "iam",
        "Action=GetRolePolicy&Version=2010-05-08&RoleName=anycloud-aws-alpha&PolicyName=anycloud-buckets",
    );
    let document = urlencoding::decode(&xml_all(&policy, "PolicyDocument")[0])
        .unwrap()
        .into_owned();
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let mut named = BTreeSet::new();
    for statement in document["Statement"].as_array().unwrap() {
        let actions: Vec<&str> = statement["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        // Least privilege: `rclone copy` never deletes.
        assert!(!actions.contains(&"s3:DeleteObject"), "{actions:?}");
        for resource in statement["Resource"].as_array().unwrap() {
            let arn = resource.as_str().unwrap();
            let bucket = arn
                .trim_start_matches("arn:aws:s3:::")
                .trim_end_matches("/*");
            named.insert(bucket.to_owned());
            if bucket == "aws-input" {
                for a in &actions {
                    assert!(
                        ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"].contains(a),
                        "the input bucket must be read-only, found {a}"
                    );
                }
            }
        }
    }
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["aws-alpha", "aws-input", "aws-results"]
    );
    // That policy is all the role has: the harness adds nothing to it (moto_iam.py checks
    // each S3 call under AWS's action instead), so the VM runs under exactly it.
    let inline = moto.query(
        "iam",
        "Action=ListRolePolicies&Version=2010-05-08&RoleName=anycloud-aws-alpha",
    );
    assert_eq!(xml_all(&inline, "member"), ["anycloud-buckets"], "{inline}");
    let attached = moto.query(
        "iam",
        "Action=ListAttachedRolePolicies&Version=2010-05-08&RoleName=anycloud-aws-alpha",
    );
    assert!(xml_all(&attached, "PolicyArn").is_empty(), "{attached}");
    let profile = moto.query(
        "iam",
        "Action=GetInstanceProfile&Version=2010-05-08&InstanceProfileName=anycloud-aws-alpha",
    );
    assert!(
        profile.contains("<RoleName>anycloud-aws-alpha</RoleName>"),
        "{profile}"
    );
    // SSH only, from ssh_cidr only.
    let groups = moto.query(
        "ec2",
        "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=anycloud-aws-alpha",
    );
    let ingress = xml_all(&groups, "ipPermissions").concat();
    assert_eq!(xml_all(&ingress, "fromPort"), ["22"], "{groups}");
    assert_eq!(xml_all(&ingress, "cidrIp"), ["10.0.0.0/8"], "{groups}");
    // No credentials anywhere anycloud wrote: not in state, not on the VM.
    let state = std::fs::read_to_string(p.path().join(".anycloud/state.json")).unwrap();
    for secret in [
        "AWS_SECRET_ACCESS_KEY",
        "aws_secret_access_key",
        "secret_access_key",
        "AKIA",
    ] {
        assert!(!state.contains(secret), "{secret} in state");
    }

    // A spot instance with the profile, the key pair and the deployment's tags.
    let instances = moto.query("ec2", "Action=DescribeInstances&Version=2016-11-15");
    assert!(
        instances.contains("<instanceLifecycle>spot</instanceLifecycle>"),
        "{instances}"
    );
    assert!(instances.contains("anycloud-aws-alpha"), "{instances}");
    // IMDSv2 only, one hop: the job's container (a hop further, on Docker's bridge) cannot
    // reach the instance role's credentials. A client token makes RunInstances idempotent.
    assert_eq!(
        xml_all(&instances, "httpTokens"),
        ["required"],
        "{instances}"
    );
    assert_eq!(
        xml_all(&instances, "httpPutResponseHopLimit"),
        ["1"],
        "{instances}"
    );
    assert!(
        xml_all(&instances, "clientToken")
            .first()
            .is_some_and(|t| t.len() >= 32 && t != "ABCDE"),
        "{instances}"
    );
    let network = common::sh(
        "docker inspect -f '{{.HostConfig.NetworkMode}}' $(docker ps -q --filter label=anycloud.deployment=aws-alpha)",
    );
    assert_eq!(network, "bridge");
    // Every object says whose it is: the state's lineage and the project.
    let lineage = p.state_json().unwrap()["lineage"]
        .as_str()
        .unwrap()
        .to_owned();
    let tagged = |listing: &str| {
        listing.contains("<key>anycloud:lineage</key>") && listing.contains(&lineage)
            || listing.contains("<Key>anycloud:lineage</Key>") && listing.contains(&lineage)
    };
    assert!(tagged(&instances), "{instances}");
    let key_pairs = moto.query(
        "ec2",
        "Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=anycloud-aws-alpha",
    );
    assert!(tagged(&key_pairs), "{key_pairs}");
    let group = moto.query(
        "ec2",
        "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=anycloud-aws-alpha",
    );
    assert!(tagged(&group), "{group}");
    let role_tags = moto.query(
        "iam",
        "Action=ListRoleTags&Version=2010-05-08&RoleName=anycloud-aws-alpha",
    );
    assert!(tagged(&role_tags), "{role_tags}");
    let (_, bucket_tags) = moto.http("GET", "/aws-alpha?tagging", None);
    assert!(tagged(&bucket_tags), "{bucket_tags}");
    let first_instance = xml_all(&instances, "instanceId")[0].clone();

    // Data through moto's S3, by rclone on the test host signed in as the role (the
    // connectivity check, the input sync and the checkpoint restore ran in the apply).
    let copy = wait_for(60, "the input copy in the output bucket", || {
        object(&moto, "aws-results", "input-copy.txt").filter(|c| !c.is_empty())
    });
    assert_eq!(copy, "hello from the input bucket");
    let checkpoint = wait_for(60, "a checkpoint in the checkpoint bucket", || {
        object(&moto, "aws-alpha", "counter").and_then(|c| c.parse::<u64>().ok())
    });
    // The job's own output goes up with it: .anycloud-logs/<container>/<run>.log.
    let job_log = wait_for(60, "the job's log in the output bucket", || {
        keys(&moto, "aws-results", ".anycloud-logs/")
            .into_iter()
            .find(|k| k.ends_with(".log"))
    });
    assert_eq!(job_log.split('/').count(), 3, "{job_log}");
    assert!(
        object(&moto, "aws-results", &job_log)
            .unwrap_or_default()
            .contains("resuming from 0"),
        "{job_log}"
    );
    wait_for(
        60,
        "the first run's resume point in the output bucket",
        || (object(&moto, "aws-results", "resumed-from.txt").as_deref() == Some("0")).then_some(()),
    );
    let conf = std::fs::read_to_string(vm_root.join("etc/anycloud/rclone.conf")).unwrap();
    assert!(conf.contains("env_auth = true"), "{conf}");
    assert!(
        !conf.contains("secret") && !conf.contains("access_key"),
        "{conf}"
    );
    // All of it as the role, with credentials minted once (moto STS), and nothing refused.
    assert_eq!(imds.mints(), 1, "{}", imds.log_text());
    let mut failed_copies = BTreeSet::new();
    gather_failed_copies(&vm_root, &mut failed_copies);
    let refused = unexpected_refusals(&moto, &failed_copies);
    assert!(refused.is_empty(), "{refused:?}\n{}", vm_logs(&vm_root));
    let again = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "a second plan must be clean: {again:?}");

    // What the role may not do is refused: a write into the input bucket, a read of another
    // deployment's output bucket (rclone on the host, as the VM's programs run it).
    let rclone = |args: &[&str]| {
        let out = imds
            .on_host("/usr/bin/rclone")
            .arg("--config")
            .arg(vm_root.join("etc/anycloud/rclone.conf"))
            .args(["--retries", "1", "--low-level-retries", "1"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let probe = host.dir.path().join("forbidden.txt");
    std::fs::write(&probe, "must not land\n").unwrap();
    let (written, said) = rclone(&[
        "copyto",
        probe.to_str().unwrap(),
        "s3-us-east-1:aws-input/forbidden.txt",
    ]);
    assert!(!written, "{said}");
    assert!(
        said.contains("AccessDenied") && said.contains("403"),
        "{said}"
    );
    assert_eq!(object(&moto, "aws-input", "forbidden.txt"), None);
    // `cat` lists first (refused: s3:ListBucket), `copyto` reads the object (refused:
    // s3:GetObject, on its HEAD).
    let (read_it, said) = rclone(&["cat", "s3-us-east-1:aws-beta-results/result.txt"]);
    assert!(!read_it, "{said}");
    assert!(
        said.contains("AccessDenied") && said.contains("403"),
        "{said}"
    );
    let stolen = host.dir.path().join("stolen.txt");
    let (read_it, said) = rclone(&[
        "copyto",
        "s3-us-east-1:aws-beta-results/result.txt",
        stolen.to_str().unwrap(),
    ]);
    assert!(!read_it, "{said}");
    assert!(said.contains("403"), "{said}");
    assert!(!stolen.exists());
    let forbidden = [
        ("s3:PutObject", "arn:aws:s3:::aws-input/forbidden.txt"),
        ("s3:ListBucket", "arn:aws:s3:::aws-beta-results"),
        ("s3:GetObject", "arn:aws:s3:::aws-beta-results/result.txt"),
    ];
    gather_failed_copies(&vm_root, &mut failed_copies);
    let refused = unexpected_refusals(&moto, &failed_copies);
    for r in &refused {
        assert_eq!(r["refusal"], "AccessDenied", "{r}");
        assert_eq!(r["principal"], ROLE_SESSION, "{r}");
        assert!(
            forbidden.contains(&(
                r["action"].as_str().unwrap_or_default(),
                r["resource"].as_str().unwrap_or_default()
            )),
            "an unexpected refusal: {r}"
        );
    }
    for (action, resource) in forbidden {
        assert!(
            refused
                .iter()
                .any(|r| r["action"] == action && r["resource"] == resource),
            "{action} on {resource} was not refused: {refused:?}"
        );
    }
    let probes_refused = refused;

    gather_failed_copies(&vm_root, &mut failed_copies);
    // Spot recovery: the instance is terminated (and its disk lost with it). The refresh
    // plans a new VM and everything on it; the new one restores the checkpoint.
    moto.query(
        "ec2",
        &format!("Action=TerminateInstances&Version=2016-11-15&InstanceId.1={first_instance}"),
    );
    common::sh(&format!("docker rm -f $(docker ps -aq --filter label=anycloud.deployment=aws-alpha) >/dev/null 2>&1; pkill -f 'supervisord -c {}/' ; true", vm_root.display()));
    std::fs::remove_dir_all(vm_root.join("mnt")).unwrap();
    let recovery = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(recovery.code, 2, "{recovery:?}");
    assert!(
        recovery
            .stdout
            .contains("deployment.aws-alpha.vm will be created"),
        "{recovery:?}"
    );
    assert!(
        recovery
            .stdout
            .contains("deployment.aws-alpha.sync.checkpoint_restore will be created"),
        "{recovery:?}"
    );
    ok(&p, &env, &["apply", "--auto-approve"]);
    let restored = read(&vm_root.join("mnt/checkpoint/counter"))
        .and_then(|c| c.parse::<u64>().ok())
        .expect("the checkpoint is back on the new VM");
    assert!(restored >= checkpoint, "restored {restored} < {checkpoint}");
    let resumed = wait_for(60, "the new VM's job to resume", || {
        read(&vm_root.join("mnt/output/resumed-from.txt")).and_then(|c| c.parse::<u64>().ok())
    });
    assert!(resumed >= checkpoint);
    assert_eq!(containers_of("aws-alpha"), 1);
    assert_eq!(run(&p, &env, &["plan", "--detailed-exitcode"]).code, 0);
    // The new run rewrote names the first run wrote: their earlier versions were copied
    // aside (server-side, by the role) before the new ones went up, with no delete.
    wait_for(
        60,
        "the new run's resume point in the output bucket",
        || {
            (object(&moto, "aws-results", "resumed-from.txt") == Some(resumed.to_string()))
                .then_some(())
        },
    );
    let kept_first = kept(&moto, "resumed-from.txt");
    assert!(
        kept_first.iter().any(|(_, c)| c == "0"),
        "the first run's resumed-from.txt is kept: {kept_first:?}"
    );
    wait_for(60, "the first run's tick.txt kept", || {
        (!kept(&moto, "tick.txt").is_empty()).then_some(())
    });

    gather_failed_copies(&vm_root, &mut failed_copies);
    // -replace of the container: a new run on the same disk rewrites them again.
    ok(
        &p,
        &env,
        &[
            "apply",
            "--auto-approve",
            "--replace",
            "deployment.aws-alpha.container",
        ],
    );
    let rerun = wait_for(60, "the replaced container's job to start", || {
        read(&vm_root.join("mnt/output/resumed-from.txt"))
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|n| *n != resumed)
    });
    wait_for(60, "the replaced job's resume point in the bucket", || {
        (object(&moto, "aws-results", "resumed-from.txt") == Some(rerun.to_string())).then_some(())
    });
    let kept_again = kept(&moto, "resumed-from.txt");
    assert!(
        kept_again.iter().any(|(_, c)| *c == resumed.to_string()),
        "the spot run's resumed-from.txt is kept: {kept_again:?}"
    );
    assert_eq!(containers_of("aws-alpha"), 1);

    // --from-scratch: the checkpoint bucket is emptied with the operator's credentials (the
    // role may delete nothing), the machine's copy too, and the job starts from 0.
    assert!(
        moto.http("PUT", "/aws-alpha/old-epoch.pt", Some("weights"))
            .0
            < 300
    );
    let fresh = ok(
        &p,
        &env,
        &["apply", "--from-scratch", "aws-alpha", "--auto-approve"],
    );
    assert!(
        fresh.stdout.contains("job stopped; its checkpoint (")
            && fresh.stdout.contains(") emptied"),
        "{fresh:?}"
    );
    wait_for(60, "the job to start from scratch", || {
        (read(&vm_root.join("mnt/output/resumed-from.txt")).as_deref() == Some("0")).then_some(())
    });
    wait_for(60, "the fresh run's resume point in the bucket", || {
        (object(&moto, "aws-results", "resumed-from.txt").as_deref() == Some("0")).then_some(())
    });
    let kept_last = kept(&moto, "resumed-from.txt");
    assert!(
        kept_last.iter().any(|(_, c)| *c == rerun.to_string()),
        "the replaced run's resumed-from.txt is kept: {kept_last:?}"
    );
    // Several upload rounds later the old file has not come back.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(object(&moto, "aws-alpha", "old-epoch.pt"), None);
    assert!(!vm_root.join("mnt/checkpoint/old-epoch.pt").exists());

    // A narrower ssh_cidr closes what the old one opened.
    p.write_config(&config_with_cidr(&host.user, "10.200.0.0/16"));
    ok(&p, &env, &["apply", "--auto-approve"]);
    let groups = moto.query(
        "ec2",
        "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=anycloud-aws-alpha",
    );
    let ingress = xml_all(&groups, "ipPermissions").concat();
    assert_eq!(xml_all(&ingress, "cidrIp"), ["10.200.0.0/16"], "{groups}");

    // Destroy: the last output reaches S3; instance, role, profile, security group, key pair
    // and the checkpoint bucket go; the input and output buckets stay.
    std::fs::write(
        vm_root.join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    gather_failed_copies(&vm_root, &mut failed_copies);
    let destroyed = ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(
        object(&moto, "aws-results", "last-words.txt").as_deref(),
        Some("written just before destroy")
    );
    // Every VM step ran as the role under its one policy: nothing refused but the probes.
    gather_failed_copies(&vm_root, &mut failed_copies);
    let refused = unexpected_refusals(&moto, &failed_copies);
    assert_eq!(
        refused,
        probes_refused,
        "refused besides the probes\n{}",
        vm_logs(&vm_root)
    );
    assert_eq!(imds.mints(), 1, "{}", imds.log_text());
    let instances = moto.query("ec2", "Action=DescribeInstances&Version=2016-11-15");
    for state in xml_all(&instances, "name") {
        assert!(
            !["pending", "running"].contains(&state.as_str()),
            "an instance is still {state}"
        );
    }
    let roles = moto.query("iam", "Action=ListRoles&Version=2010-05-08");
    assert!(!roles.contains("anycloud-aws-alpha"), "{roles}");
    let profiles = moto.query("iam", "Action=ListInstanceProfiles&Version=2010-05-08");
    assert!(!profiles.contains("anycloud-aws-alpha"), "{profiles}");
    let groups = moto.query("ec2", "Action=DescribeSecurityGroups&Version=2016-11-15");
    assert!(!groups.contains("anycloud-aws-alpha"), "{groups}");
    let key_pairs = moto.query("ec2", "Action=DescribeKeyPairs&Version=2016-11-15");
    assert!(!key_pairs.contains("anycloud-aws-alpha"), "{key_pairs}");
    assert_eq!(
        moto.http("HEAD", "/aws-alpha", None).0,
        404,
        "the checkpoint bucket goes: {destroyed:?}"
    );
    assert_eq!(
        moto.http("HEAD", "/aws-results", None).0,
        200,
        "output stays"
    );
    assert_eq!(moto.http("HEAD", "/aws-input", None).0, 200, "input stays");
    assert_eq!(containers_of("aws-alpha"), 0);
}

/// A bucket name that lives in another continent fails the plan before any change, with
/// the seed's exact words.
#[test]
fn a_bucket_of_another_continent_fails_the_plan() {
    let moto = Moto::start("127.0.0.1");
    assert_eq!(moto.http("PUT", "/my-results", None).0, 200);
    let tagging = "<Tagging><TagSet><Tag><Key>anycloud:continent</Key><Value>us</Value></Tag></TagSet></Tagging>";
    assert!(moto.http("PUT", "/my-results?tagging", Some(tagging)).0 < 300);
    let p = Project::new(
        r#"
project: continents
providers:
  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }
deployments:
  train-sg:
    provider: aws
    region: ap-southeast-1
    vm: { type: t3.micro }
    container: { image: busybox }
    buckets: { output: my-results, checkpoint: true }
"#,
    );
    let env = moto.env();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let r = run(&p, &env, args);
        assert_eq!(r.code, 1, "{r:?}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(
            lines.contains(&"Error: Bucket 'my-results' already exists in continent 'us' but you are deploying to continent 'apac'."),
            "{r:?}"
        );
        assert!(
            lines.contains(&"Please use a different bucket name in anycloud.yaml."),
            "{r:?}"
        );
    }
    // Nothing was made: no state, no new bucket.
    assert!(!p.path().join(".anycloud/state.json").exists());
    let (_, list) = moto.http("GET", "/", None);
    assert_eq!(xml_all(&list, "Name"), ["my-results"]);
}

/// With a proxy in front of moto answering every third call with 503 SlowDown, apply still
/// converges: the SDK retries, then the engine does.
/// tests/fixtures/flaky_proxy.py in front of moto (every `every`-th request answered 503,
/// `refuse` answered 403), and the environment that sends anycloud through it.
fn flaky_proxy(
    moto: &Moto,
    every: u32,
    count: &Path,
    refuse: Option<&str>,
) -> (std::process::Child, Vec<(String, String)>) {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flaky_proxy.py");
    let proxy = std::process::Command::new("python3")
        .arg(&proxy_script)
        .args([&port.to_string(), &moto.url, &every.to_string()])
        .arg(count)
        .args(refuse)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    (proxy, env)
}

#[test]
fn transient_faults_are_retried_until_apply_converges() {
    let moto = Moto::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("faults");
    let (mut proxy, env) = flaky_proxy(&moto, 3, &count, None);
    let p = Project::new(
        r#"
project: flaky
providers:
  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }
deployments:
  flaky-a:
    provider: aws
    region: eu-west-1
    vm: { type: t3.micro }
    container: { image: busybox }
    buckets: { output: flaky-results, checkpoint: true }
"#,
    );
    // Buckets, the grants in their policies, the role, its policy and profile: the cloud
    // side, no VM.
    let target = ["--target", "deployment.flaky-a.grant"];
    let applied = run(
        &p,
        &env,
        &[&["apply", "--auto-approve"][..], &target].concat(),
    );
    let faults: u32 = std::fs::read_to_string(&count)
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(faults >= 3, "only {faults} faults were injected");
    eprintln!("apply converged through {faults} injected 503 SlowDown answers");
    let again = run(
        &p,
        &moto.env(),
        &[&["plan", "--detailed-exitcode"][..], &target].concat(),
    );
    assert_eq!(again.code, 0, "{again:?}");
    let (status, tags) = moto.http("GET", "/flaky-results?tagging", None);
    assert!(
        status == 200 && tags.contains("anycloud:continent"),
        "{tags}"
    );
    let profile = moto.query(
        "iam",
        "Action=GetInstanceProfile&Version=2010-05-08&InstanceProfileName=anycloud-flaky-a",
    );
    assert!(
        profile.contains("<RoleName>anycloud-flaky-a</RoleName>"),
        "{profile}"
    );
    // Everything it made goes while moto is here (the project's drop has no endpoint).
    let gone = run(&p, &moto.env(), &["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert!(p.ok(&["state", "list"]).stdout.trim().is_empty());
}

/// A grant is a resource of its own: dropping a bucket from a deployment removes exactly its
/// statement from that bucket's policy, and leaves the other bucket's (and the bucket).
#[test]
fn dropping_a_bucket_removes_exactly_its_grant() {
    let moto = Moto::start("127.0.0.1");
    let config = |buckets: &str| {
        format!(
            r#"
project: grants
providers:
  aws: {{ ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }}
deployments:
  granted:
    provider: aws
    region: us-east-1
    vm: {{ type: t3.micro }}
    container: {{ image: busybox }}
    buckets: {buckets}
"#
        )
    };
    let p = Project::new(&config("{ output: granted-out, checkpoint: true }"));
    let env = moto.env();
    // The cloud side only: buckets, role, grants.
    let cloud = [
        "--target",
        "deployment.granted.grant",
        "--target",
        "deployment.granted.role",
        "--target",
        "deployment.granted.bucket",
    ];
    ok(
        &p,
        &env,
        &[&["apply", "--auto-approve"][..], &cloud].concat(),
    );
    let sid = |bucket: &str| {
        let (status, policy) = moto.http("GET", &format!("/{bucket}?policy"), None);
        if status != 200 {
            return vec![];
        }
        let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Sid"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let ours = sid("granted-out");
    assert_eq!(ours.len(), 1, "the output bucket admits the role");
    assert_eq!(sid("granted"), ours, "the checkpoint bucket admits it too");

    p.write_config(&config("{ checkpoint: true }"));
    let plan = ok(&p, &env, &["plan"]);
    assert!(
        plan.stdout
            .contains("# deployment.granted.grant.output will be destroyed"),
        "{plan:?}"
    );
    assert!(
        !plan.stdout.contains("grant.checkpoint will"),
        "the other grant is untouched: {plan:?}"
    );
    ok(
        &p,
        &env,
        &[&["apply", "--auto-approve"][..], &cloud].concat(),
    );
    assert!(sid("granted-out").is_empty(), "its statement is gone");
    assert_eq!(
        sid("granted"),
        ours,
        "the checkpoint bucket still admits the role"
    );
    assert_eq!(
        moto.http("HEAD", "/granted-out", None).0,
        200,
        "the output bucket itself is kept"
    );
}

fn cloud_config(project: &str, deployment: &str) -> String {
    format!(
        r#"
project: {project}
providers:
  aws: {{ ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }}
deployments:
  {deployment}:
    provider: aws
    region: us-east-1
    vm: {{ type: t3.micro }}
    container: {{ image: busybox }}
    buckets: {{ output: {deployment}-results, checkpoint: true }}
"#
    )
}

/// Instances moto has pending or running for a deployment, with their tags.
fn live_instances(moto: &Moto, deployment: &str) -> Vec<String> {
    let found = moto.query(
        "ec2",
        &format!(
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:anycloud:deployment&Filter.1.Value.1={deployment}&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running"
        ),
    );
    xml_all(&found, "instanceId")
}

/// anycloud is killed while it waits for a new VM's SSH (here: nothing ever answers). The
/// instance id was recorded as soon as EC2 answered, so a destroy terminates the instance
/// (with no final upload: nothing ever ran there). Before that, a second project with a
/// deployment of the same id in the same account is refused the first's role and checkpoint
/// bucket, naming their owner, and its destroy leaves them (and the checkpoints) alone.
#[test]
fn a_vm_killed_while_waiting_for_ssh_is_destroyed_and_another_state_never_touches_it() {
    let moto = Moto::start("127.0.0.1");
    let dead = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut first = Project::new(&cloud_config("first", "twin"));
    first.env = moto.env();
    first.env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("127.0.0.1:{dead_port}"),
    ));
    let mut apply = first
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let recorded = wait_for(120, "the instance id to be recorded", || {
        let s = first.state_json()?;
        let vm = &s["resources"]["deployment.twin.vm"];
        assert!(vm["pending"].is_string() || vm.is_null(), "{vm}");
        vm["attributes"]["instance_id"].as_str().map(String::from)
    });
    apply.kill().unwrap(); // SIGKILL, while it waits for SSH
    apply.wait().unwrap();
    assert_eq!(
        live_instances(&moto, "twin"),
        std::slice::from_ref(&recorded)
    );
    assert!(moto.http("PUT", "/twin/step-100", Some("a checkpoint")).0 < 300);
    let role_policy = || {
        moto.query(
            "iam",
            "Action=GetRolePolicy&Version=2010-05-08&RoleName=anycloud-twin&PolicyName=anycloud-buckets",
        )
    };
    let first_policy = role_policy();
    let role_tags = || {
        moto.query(
            "iam",
            "Action=ListRoleTags&Version=2010-05-08&RoleName=anycloud-twin",
        )
    };
    let first_tags = role_tags();
    let lineage = first.state_json().unwrap()["lineage"]
        .as_str()
        .unwrap()
        .to_owned();

    // A second project, same deployment id, same account.
    let mut second = Project::new(&cloud_config("second", "twin"));
    second.env = first.env.clone();
    let refused = second.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains(&format!(
            "checkpoint bucket 'twin' is another anycloud state's (project 'first', lineage {lineage})"
        )),
        "{said}"
    );
    // Without a checkpoint bucket in the way, the role is reached: refused too.
    second.write_config(&cloud_config("second", "twin").replace(", checkpoint: true", ""));
    let refused = second.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains(&format!(
            "IAM role anycloud-twin is another anycloud state's (project 'first', lineage {lineage})"
        )),
        "{said}"
    );
    assert_eq!(
        xml_all(&role_policy(), "PolicyDocument"),
        xml_all(&first_policy, "PolicyDocument"),
        "the first's role policy is untouched"
    );
    assert_eq!(
        xml_all(&role_tags(), "member"),
        xml_all(&first_tags, "member")
    );
    let destroyed = second.run(&["destroy", "--auto-approve"]);
    assert_eq!(destroyed.code, 0, "{destroyed:?}");
    assert_eq!(
        xml_all(&role_policy(), "PolicyDocument"),
        xml_all(&first_policy, "PolicyDocument"),
        "the first's role is still there"
    );
    assert_eq!(
        object(&moto, "twin", "step-100").as_deref(),
        Some("a checkpoint"),
        "the first's checkpoints are still there"
    );
    assert_eq!(
        live_instances(&moto, "twin"),
        std::slice::from_ref(&recorded)
    );

    // The first state's destroy terminates its instance without trying to reach it.
    let gone = first.run(&["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert!(live_instances(&moto, "twin").is_empty());
    let key_pairs = moto.query("ec2", "Action=DescribeKeyPairs&Version=2016-11-15");
    assert!(!key_pairs.contains("anycloud-twin"), "{key_pairs}");
    let groups = moto.query("ec2", "Action=DescribeSecurityGroups&Version=2016-11-15");
    assert!(!groups.contains("anycloud-twin"), "{groups}");
    assert_eq!(moto.http("HEAD", "/twin", None).0, 404);
    assert!(first.ok(&["state", "list"]).stdout.trim().is_empty());
}

/// Someone else's key pair and security group with the names anycloud would use: never
/// replaced, narrowed or deleted, and the error names their owner.
#[test]
fn another_states_key_pair_and_security_group_are_left_alone() {
    let moto = Moto::start("127.0.0.1");
    let theirs = "TagSpecification.1.Tag.1.Key=anycloud%3Alineage&TagSpecification.1.Tag.1.Value=someone-else";
    moto.query(
        "ec2",
        &format!("Action=CreateKeyPair&Version=2016-11-15&KeyName=anycloud-keyed&TagSpecification.1.ResourceType=key-pair&{theirs}"),
    );
    moto.query(
        "ec2",
        &format!("Action=CreateSecurityGroup&Version=2016-11-15&GroupName=anycloud-grouped&GroupDescription=theirs&TagSpecification.1.ResourceType=security-group&{theirs}"),
    );
    moto.query(
        "ec2",
        "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupName=anycloud-grouped&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=22&IpPermissions.1.ToPort=22&IpPermissions.1.IpRanges.1.CidrIp=10.9.9.0/24",
    );
    let key_before = moto.query(
        "ec2",
        "Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=anycloud-keyed",
    );
    let config = format!(
        "{}  grouped:\n    provider: aws\n    region: us-east-1\n    vm: {{ type: t3.micro }}\n    container: {{ image: busybox }}\n",
        cloud_config("mine", "keyed")
    );
    let mut p = Project::new(&config);
    p.env = moto.env();
    p.env
        .push(("ANYCLOUD_TEST_SSH_ADDRESS".into(), "127.0.0.1:9".into()));
    let refused = p.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains("key pair anycloud-keyed is another anycloud state's (lineage someone-else)"),
        "{said}"
    );
    assert!(
        said.contains(
            "security group anycloud-grouped is another anycloud state's (lineage someone-else)"
        ),
        "{said}"
    );
    let ok = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let key_now = moto.query(
        "ec2",
        "Action=DescribeKeyPairs&Version=2016-11-15&KeyName.1=anycloud-keyed",
    );
    for field in ["keyFingerprint", "keyPairId", "value"] {
        assert_eq!(
            xml_all(&key_now, field),
            xml_all(&key_before, field),
            "their key pair is the same key pair"
        );
    }
    let group = moto.query(
        "ec2",
        "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=anycloud-grouped",
    );
    let ingress = xml_all(&group, "ipPermissions").concat();
    assert_eq!(xml_all(&ingress, "cidrIp"), ["10.9.9.0/24"], "{group}");
    assert!(live_instances(&moto, "keyed").is_empty());
    assert!(live_instances(&moto, "grouped").is_empty());
}

/// `anycloud bucket ls|upload|download` on S3: a tree with a file large enough to go in
/// parts, listed, fetched back byte for byte; an object whose key climbs out of the
/// destination is refused and nothing is written outside it.
#[test]
fn bucket_commands_fill_and_fetch_s3() {
    let moto = Moto::start("127.0.0.1");
    // The bucket is the config's (deployment mover's output): its provider's.
    let mut p = Project::new(&cloud_config("transfer", "mover"));
    p.env = moto.env();
    assert_eq!(moto.http("PUT", "/mover-results", None).0, 200);
    let source = p.path().join("data");
    std::fs::create_dir_all(source.join("nested/deeper")).unwrap();
    std::fs::write(source.join("small.txt"), "small\n").unwrap();
    std::fs::write(source.join("nested/deeper/b.txt"), "b\n").unwrap();
    let big: Vec<u8> = (0..(20 * 1024 * 1024 + 123))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(source.join("nested/big.bin"), &big).unwrap();
    let up = p.ok(&["bucket", "upload", "mover-results", "data"]);
    assert!(up.stdout.contains("Uploaded 3 file(s)"), "{up:?}");
    let listed = p.ok(&["bucket", "ls", "mover-results"]);
    assert_eq!(
        listed.stdout,
        format!(
            "{:>12}  nested/big.bin\n{:>12}  nested/deeper/b.txt\n{:>12}  small.txt\n",
            big.len(),
            2,
            6
        )
    );
    let down = p.ok(&["bucket", "download", "mover-results", "fetched"]);
    assert!(down.stdout.contains("Downloaded 3 file(s)"), "{down:?}");
    assert_eq!(
        std::fs::read(p.path().join("fetched/nested/big.bin")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("fetched/nested/deeper/b.txt")).unwrap(),
        "b\n"
    );

    // A key that climbs out: refused, and nothing lands beside the destination.
    let put = moto.http("PUT", "/mover-results/..%2Fescaped.txt", Some("x"));
    assert_eq!(put.0, 200, "{put:?}");
    let listed = p.ok(&["bucket", "ls", "mover-results"]);
    assert!(listed.stdout.contains("../escaped.txt"), "{listed:?}");
    let refused = p.run(&["bucket", "download", "mover-results", "again"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("outside"), "{refused:?}");
    assert!(!p.path().join("escaped.txt").exists());

    // A bucket that is not there is named.
    let missing = p.run(&["bucket", "ls", "no-such-bucket"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("no-such-bucket"), "{missing:?}");
}

/// The S3 endpoint from the environment goes into the VMs' rclone.conf too: one with a
/// newline (which would add keys to the remote) is refused, naming the variable.
#[test]
fn an_endpoint_variable_with_a_newline_is_refused() {
    let mut p = Project::new(&cloud_config("endpoint", "ended"));
    p.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        (
            "AWS_ENDPOINT_URL".into(),
            "http://127.0.0.1:9\nacl = public-read-write".into(),
        ),
    ];
    let r = p.run(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("AWS_ENDPOINT_URL"), "{r:?}");
    assert!(r.stderr.contains("not an http(s) URL"), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}

/// Plain http from the environment goes to this machine only: the requests (and the VMs')
/// would cross the network in the clear.
#[test]
fn an_endpoint_variable_of_plain_http_to_another_host_is_refused() {
    let mut p = Project::new(&cloud_config("endpoint", "plain"));
    p.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_ENDPOINT_URL".into(), "http://s3.example.com".into()),
    ];
    let r = p.run(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("AWS_ENDPOINT_URL: 'http://s3.example.com' is plain http to another machine"),
        "{r:?}"
    );
}

/// An output bucket of the user's own (not made by anycloud) keeps its policy: the grant
/// edits only policies of buckets this state made, and the role's own policy admits the VM.
#[test]
fn a_bucket_of_your_own_keeps_its_policy() {
    let moto = Moto::start("127.0.0.1");
    assert_eq!(moto.http("PUT", "/own-results", None).0, 200);
    let mut p = Project::new(&cloud_config("own", "owned").replace("owned-results", "own-results"));
    p.env = moto.env();
    let cloud = [
        "--target",
        "deployment.owned.grant",
        "--target",
        "deployment.owned.role",
    ];
    let applied = p.run(&[&["apply", "--auto-approve"][..], &cloud].concat());
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(
        applied
            .stdout
            .contains("bucket own-results is not anycloud's"),
        "{applied:?}"
    );
    let (status, body) = moto.http("GET", "/own-results?policy", None);
    assert_eq!(status, 404, "no policy was put on it: {body}");
    // The checkpoint bucket, made by this state, admits the role in its policy.
    let (status, policy) = moto.http("GET", "/owned?policy", None);
    assert_eq!(status, 200, "{policy}");
    assert!(policy.contains("anycloud-owned"), "{policy}");
    assert!(!policy.contains("DeleteObject"), "{policy}");
    let gone = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert_eq!(moto.http("GET", "/own-results?policy", None).0, 404);
    assert_eq!(moto.http("HEAD", "/own-results", None).0, 200, "it is kept");
}

/// Whose an untagged object is (one rule for every cloud, `anycloud_provider::ownership`): a
/// bucket and a role the user made with the names this deployment would use carry no
/// lineage, so they are a stranger's: refused by name, never tagged, changed or deleted, by
/// the apply or the destroy after it.
#[test]
fn an_untagged_bucket_or_role_of_the_deployments_name_is_a_strangers() {
    let moto = Moto::start("127.0.0.1");
    // The user's own bucket and role, with the names of deployment `stray`'s.
    assert_eq!(moto.http("PUT", "/stray", None).0, 200);
    assert!(moto.http("PUT", "/stray/theirs.txt", Some("their data")).0 < 300);
    let trust = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22lambda.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
    moto.query(
        "iam",
        &format!("Action=CreateRole&Version=2010-05-08&RoleName=anycloud-stray&Path=%2Fanycloud%2F&AssumeRolePolicyDocument={trust}"),
    );
    let role = || {
        moto.query(
            "iam",
            "Action=GetRole&Version=2010-05-08&RoleName=anycloud-stray",
        )
    };
    let role_before = xml_all(&role(), "AssumeRolePolicyDocument");
    assert!(role_before.concat().contains("lambda"), "{role_before:?}");
    let role_tags = || {
        moto.query(
            "iam",
            "Action=ListRoleTags&Version=2010-05-08&RoleName=anycloud-stray",
        )
    };
    let bucket_tags = |name: &str| moto.http("GET", &format!("/{name}?tagging"), None);

    let mut p = Project::new(&cloud_config("strays", "stray"));
    p.env = moto.env();
    let cloud = ["--target", "deployment.stray.role"];
    let stranger =
        "checkpoint bucket 'stray' is not anycloud's (it carries no tag anycloud:lineage)";
    // The plan fails before any change.
    let planned = p.run(&["plan"]);
    assert_eq!(planned.code, 1, "{planned:?}");
    assert!(
        planned.stderr.contains(&format!("Error: {stranger}")),
        "{planned:?}"
    );
    // Without the plan's check (no refresh), the create refuses it, and stays pending.
    let refused = p.run(&[&["apply", "--auto-approve", "--refresh=false"][..], &cloud].concat());
    assert_eq!(refused.code, 1, "the user's bucket was taken: {refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains(stranger), "{said}");
    let record = &p.state_json().unwrap()["resources"]["deployment.stray.bucket.checkpoint"];
    assert_eq!(record["pending"], "create", "{record}");
    // Without the checkpoint bucket in the way, the role is reached: refused too.
    p.write_config(&cloud_config("strays", "stray").replace(", checkpoint: true", ""));
    let refused = p.run(&[&["apply", "--auto-approve"][..], &cloud].concat());
    assert_eq!(refused.code, 1, "the user's role was taken: {refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains(
            "IAM role anycloud-stray is not anycloud's (it carries no tag anycloud:lineage)"
        ),
        "{said}"
    );
    assert!(said.contains("set its tag anycloud:lineage to"), "{said}");
    // The refused creates stay pending in the state; the destroy that follows still leaves
    // what is not this state's.
    p.write_config(&cloud_config("strays", "stray"));
    let destroyed = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(destroyed.code, 0, "{destroyed:?}");
    assert_eq!(
        object(&moto, "stray", "theirs.txt").as_deref(),
        Some("their data"),
        "the user's bucket and its data are still there"
    );
    assert!(
        !bucket_tags("stray").1.contains("anycloud:lineage"),
        "the user's bucket was never tagged"
    );
    assert_eq!(
        xml_all(&role(), "AssumeRolePolicyDocument"),
        role_before,
        "the user's role is still there, unchanged"
    );
    assert!(!role_tags().contains("anycloud"), "{}", role_tags());
}

/// A checkpoint bucket whose create was cut short between CreateBucket and its tags (here:
/// PutBucketTagging refused) is untagged, but its pending record says this state made it:
/// the next apply finds it ours and tags it, and destroy deletes it.
#[test]
fn a_bucket_create_cut_short_before_its_tags_is_ours() {
    let moto = Moto::start("127.0.0.1");
    let bucket_tags = |name: &str| moto.http("GET", &format!("/{name}?tagging"), None);
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("faults");
    let (mut proxy, env) = flaky_proxy(&moto, 0, &count, Some("PUT ?tagging"));
    let mut q = Project::new(&cloud_config("cut", "cut"));
    q.env = moto.env();
    let bucket = ["--target", "deployment.cut.bucket.checkpoint"];
    let cut = run(
        &q,
        &env,
        &[&["apply", "--auto-approve"][..], &bucket].concat(),
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(
        cut.stderr.contains("PutBucketTagging cut") || cut.stdout.contains("PutBucketTagging cut"),
        "{cut:?}"
    );
    assert_eq!(
        moto.http("HEAD", "/cut", None).0,
        200,
        "CreateBucket made it"
    );
    assert!(!bucket_tags("cut").1.contains("anycloud:lineage"));
    let record = &q.state_json().unwrap()["resources"]["deployment.cut.bucket.checkpoint"];
    assert_eq!(record["pending"], "create", "{record}");
    // The next apply (here of a saved plan) finds it this state's, and tags it.
    let planned = run(
        &q,
        &moto.env(),
        &[&["plan", "--out", "recover.plan"][..], &bucket].concat(),
    );
    assert_eq!(planned.code, 0, "{planned:?}");
    let recovered = run(&q, &moto.env(), &["apply", "recover.plan"]);
    assert_eq!(recovered.code, 0, "{recovered:?}");
    let (_, tags) = bucket_tags("cut");
    let lineage = q.state_json().unwrap()["lineage"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tags.contains(&lineage), "{tags}");
    let record = &q.state_json().unwrap()["resources"]["deployment.cut.bucket.checkpoint"];
    assert_eq!(record["attributes"]["managed"], true, "{record}");
    assert!(
        record["attributes"].get("made_untagged").is_none(),
        "{record}"
    );
    let gone = run(&q, &moto.env(), &["destroy", "--auto-approve"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert_eq!(
        moto.http("HEAD", "/cut", None).0,
        404,
        "this state's bucket went"
    );
}

/// Puts the SSM parameter `name` holding `value` in moto's us-east-1 (a JSON-protocol call,
/// unsigned: moto checks nothing here).
fn put_parameter(moto: &Moto, name: &str, value: &str) {
    let body = serde_json::json!({ "Name": name, "Value": value, "Type": "String" }).to_string();
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "X-Amz-Target: AmazonSSM.PutParameter"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args([
            "-H",
            "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0",
        ])
        .args(["--data-binary", &body])
        .arg(format!("{}/", moto.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("\n200"), "PutParameter {name}: {text}");
}

/// A job asking for GPUs: EC2 is asked whether the type has NVIDIA GPUs (DescribeInstanceTypes,
/// its GpuInfo); with them, the plan names the image it gets and why (by default AWS's Deep
/// Learning Base OSS NVIDIA Driver AMI, read from its SSM parameter now), and without them it
/// warns. moto refuses a parameter under `/aws/` (AWS owns those): the test seeds its own and
/// points anycloud at it (ANYCLOUD_TEST_AWS_GPU_IMAGE_PARAMETER).
#[test]
fn gpu_jobs_get_the_nvidia_image_and_a_type_without_gpus_is_warned_of() {
    let moto = Moto::start("127.0.0.1");
    put_parameter(&moto, "/anycloud-test/dlami", "ami-0123456789abcdef0");
    put_parameter(&moto, "/team/gpu-image", "ami-0fedcba9876543210");
    let config = |vm: &str| {
        format!(
            "project: gpus\nproviders:\n  aws: {{ ssh_cidr: 10.0.0.0/8 }}\ndeployments:\n  gpu-job:\n    provider: aws\n    region: us-east-1\n    vm: {vm}\n    container: {{ image: busybox, gpus: all }}\n"
        )
    };
    let p = Project::new(&config("{ type: g5.xlarge }"));
    let mut env = moto.env();
    env.push((
        "ANYCLOUD_TEST_AWS_GPU_IMAGE_PARAMETER".into(),
        "/anycloud-test/dlami".into(),
    ));
    let said = |r: &Run| format!("{}{}", r.stdout, r.stderr);

    let r = ok(&p, &env, &["plan"]);
    assert!(
        said(&r).contains("deployment.gpu-job.vm: image ami-0123456789abcdef0 (AWS Deep Learning Base OSS NVIDIA Driver AMI, Ubuntu 22.04, from SSM parameter /anycloud-test/dlami) because g5.xlarge has 1 NVIDIA A10G"),
        "{r:?}"
    );
    assert!(!said(&r).contains("has no NVIDIA GPU"), "{r:?}");

    p.write_config(&config("{ type: t3.micro }"));
    let r = ok(&p, &env, &["plan"]);
    assert!(
        said(&r).contains("deployment.gpu-job.vm: the container asks for GPUs but instance type t3.micro has no NVIDIA GPU (EC2 DescribeInstanceTypes)"),
        "{r:?}"
    );

    // vm.image wins, as an AMI id or a parameter of one's own.
    p.write_config(&config("{ type: g4dn.xlarge, image: ami-12345678 }"));
    let r = ok(&p, &env, &["plan"]);
    assert!(
        said(&r).contains("deployment.gpu-job.vm: image ami-12345678 (vm.image or providers.aws.ami; it must bring the NVIDIA driver) because g4dn.xlarge has 1 NVIDIA T4"),
        "{r:?}"
    );
    p.write_config(&config("{ type: g5.xlarge, image: /team/gpu-image }"));
    let r = ok(&p, &env, &["plan"]);
    assert!(
        said(&r).contains("deployment.gpu-job.vm: image ami-0fedcba9876543210 (from SSM parameter /team/gpu-image; it must bring the NVIDIA driver) because g5.xlarge has 1 NVIDIA A10G"),
        "{r:?}"
    );

    // A parameter that cannot be read fails the plan with SSM's words.
    p.write_config(&config("{ type: g5.xlarge, image: /team/no-such-image }"));
    let r = run(&p, &env, &["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        said(&r).contains("deployment.gpu-job.vm: GetParameter /team/no-such-image"),
        "{r:?}"
    );
    assert!(said(&r).contains("ParameterNotFound"), "{r:?}");

    // A malformed image is an error located in the config.
    p.write_config(&config("{ type: g5.xlarge, image: debian-12 }"));
    let r = run(&p, &env, &["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        said(&r).contains("vm.image 'debian-12' is neither an AMI id"),
        "{r:?}"
    );
    assert!(said(&r).contains("anycloud.yaml:8:35:"), "{r:?}");
}

/// The default GPU image is read from its SSM parameter when the VM is made: RunInstances
/// gets the AMI the parameter holds, recorded with the VM, and the VM logs in as `ubuntu`.
/// (Nothing answers SSH here: the apply is killed once the instance is recorded.)
#[test]
fn a_gpu_vm_is_launched_from_the_ami_its_parameter_holds() {
    let moto = Moto::start("127.0.0.1");
    // moto's own image; the parameter a test's stand-in for AWS's.
    put_parameter(&moto, "/anycloud-test/dlami", "ami-12345678");
    let dead = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut p = Project::new(
        "project: gpus\nproviders:\n  aws: { ssh_cidr: 10.0.0.0/8 }\ndeployments:\n  gpu-vm:\n    provider: aws\n    region: us-east-1\n    vm: { type: g5.xlarge }\n    container: { image: busybox, gpus: all }\n",
    );
    p.env = moto.env();
    p.env.push((
        "ANYCLOUD_TEST_AWS_GPU_IMAGE_PARAMETER".into(),
        "/anycloud-test/dlami".into(),
    ));
    p.env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("127.0.0.1:{dead_port}"),
    ));
    let mut apply = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let vm = wait_for(120, "the instance to be recorded", || {
        let s = p.state_json()?;
        let vm = s["resources"]["deployment.gpu-vm.vm"]["attributes"].clone();
        vm["instance_id"].is_string().then_some(vm)
    });
    apply.kill().unwrap();
    apply.wait().unwrap();
    assert_eq!(vm["ami"], "ami-12345678", "{vm}");
    assert_eq!(vm["ssh_user"], "ubuntu", "{vm}");
    assert_eq!(vm["image_parameter"], "/anycloud-test/dlami", "{vm}");
    let id = vm["instance_id"].as_str().unwrap();
    let found = moto.query(
        "ec2",
        &format!("Action=DescribeInstances&Version=2016-11-15&InstanceId.1={id}"),
    );
    assert_eq!(xml_all(&found, "imageId"), ["ami-12345678"], "{found}");
    assert_eq!(xml_all(&found, "instanceType"), ["g5.xlarge"], "{found}");
}

/// `idle_shutdown` on AWS: the plan says the instance terminates itself, and RunInstances
/// carries `InstanceInitiatedShutdownBehavior=terminate` (DescribeInstanceAttribute). A
/// deployment without it keeps EC2's default, `stop`. (The VM's SSH never answers: the
/// apply is killed once the instance is recorded.)
#[test]
fn idle_shutdown_launches_an_instance_that_terminates_on_shutdown() {
    let moto = Moto::start("127.0.0.1");
    let dead = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let behaviour = |deployment: &str, idle: &str| {
        let mut p = Project::new(&format!(
            "project: idle\nproviders:\n  aws: {{ ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }}\ndeployments:\n  {deployment}:\n    provider: aws\n    region: us-east-1\n    vm: {{ type: t3.micro }}\n{idle}    container: {{ image: busybox }}\n"
        ));
        p.env = moto.env();
        p.env.push((
            "ANYCLOUD_TEST_SSH_ADDRESS".into(),
            format!("127.0.0.1:{dead_port}"),
        ));
        let plan = ok(&p, &p.env, &["plan", "--no-color"]);
        let mut apply = p
            .command(&["apply", "--auto-approve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let address = format!("deployment.{deployment}.vm");
        let id = wait_for(120, "the instance to be recorded", || {
            let s = p.state_json()?;
            s["resources"][&address]["attributes"]["instance_id"]
                .as_str()
                .map(String::from)
        });
        apply.kill().unwrap();
        apply.wait().unwrap();
        let found = moto.query(
            "ec2",
            &format!("Action=DescribeInstanceAttribute&Version=2016-11-15&InstanceId={id}&Attribute=instanceInitiatedShutdownBehavior"),
        );
        let said = xml_all(&found, "value");
        // Terminated here, not by a destroy that would wait for SSH.
        moto.query(
            "ec2",
            &format!("Action=TerminateInstances&Version=2016-11-15&InstanceId.1={id}"),
        );
        (plan.stdout, said)
    };
    let (plan, said) = behaviour("idle-aws", "    idle_shutdown: 10m\n");
    assert_eq!(said, ["terminate"], "{plan}");
    assert!(plan.contains("shutdown_behavior"), "{plan}");
    assert!(
        plan.contains("idle_shutdown: 10m after its job ends, the machine uploads and verifies its output, then shuts itself down, and EC2 terminates the instance"),
        "{plan}"
    );
    let (plan, said) = behaviour("idle-aws-none", "");
    assert_eq!(said, ["stop"], "{plan}");
    assert!(!plan.contains("shutdown_behavior"), "{plan}");
}
