//! The command line's contracts that need no Docker: saved plans (applied exactly, refused
//! when stale), the state lock, `state` subcommands, exit codes and refusals.

mod common;

use anycloud_state::StateStore;

use common::Project;

/// Only buckets are applied here (`--target`), so these tests touch nothing but directories.
const CONFIG: &str = r#"
defaults: { provider: local }
deployments:
  cli-job:
    container: { image: "busybox:latest" }
    buckets: { output: cli-results, checkpoint: true }
"#;

const BUCKETS: [&str; 2] = ["--target", "deployment.cli-job.bucket"];

#[test]
fn a_saved_plan_is_applied_exactly_and_refused_once_stale() {
    let p = Project::new(CONFIG);
    let planned = p.run(&["plan", "--out", "buckets.plan", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(planned.code, 0, "{planned:?}");
    let shown = p.ok(&["show", "buckets.plan"]);
    assert!(
        shown
            .stdout
            .contains("Plan: 3 to add, 0 to change, 0 to replace, 0 to destroy."),
        "{shown:?}"
    );
    let shown_json: serde_json::Value =
        serde_json::from_str(&p.ok(&["show", "buckets.plan", "--json"]).stdout).unwrap();
    assert_eq!(
        shown_json["format_version"],
        anycloud::plan::PLAN_FORMAT_VERSION
    );

    // A second plan made now would be refused once the first has been applied.
    p.ok(&["plan", "--out", "second.plan", BUCKETS[0], BUCKETS[1]]);
    let applied = p.ok(&["apply", "buckets.plan"]);
    assert!(
        applied
            .stdout
            .contains("Apply complete! Resources: 3 added"),
        "{applied:?}"
    );
    assert!(p.bucket("cli-results").is_dir() && p.bucket("cli-job").is_dir());
    assert_eq!(
        p.ok(&["state", "list"]).stdout,
        "deployment.cli-job.bucket.checkpoint\ndeployment.cli-job.bucket.output\nshared.local.local.storage\n"
    );
    let stale = p.run(&["apply", "second.plan"]);
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.contains("is stale"), "{stale:?}");
    assert_eq!(
        p.ok(&["state", "list"]).stdout.lines().count(),
        3,
        "a stale plan changes nothing"
    );

    // A changed config makes a fresh plan stale too.
    p.ok(&["plan", "--out", "third.plan", BUCKETS[0], BUCKETS[1]]);
    p.write_config(&CONFIG.replace("busybox:latest", "busybox:1.36"));
    let changed = p.run(&["apply", "third.plan"]);
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(
        changed
            .stderr
            .contains("anycloud.yaml changed since it was made"),
        "{changed:?}"
    );
}

/// Edits `path`'s saved plan as someone between review and apply might.
fn edit_plan(p: &Project, path: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = p.path().join(path);
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    edit(&mut plan);
    std::fs::write(&file, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
}

fn change_of<'a>(plan: &'a mut serde_json::Value, address: &str) -> &'a mut serde_json::Value {
    plan["changes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("{address} in the plan"))
}

#[test]
fn an_edited_saved_plan_is_refused_naming_the_address_and_runs_nothing() {
    let p = Project::new(CONFIG);
    let elsewhere = p.path().join("elsewhere");
    p.ok(&["plan", "--out", "edited.plan", BUCKETS[0], BUCKETS[1]]);
    edit_plan(&p, "edited.plan", |plan| {
        change_of(plan, "deployment.cli-job.bucket.output")["after"]["path"] =
            elsewhere.display().to_string().into();
    });
    let refused = p.run(&["apply", "edited.plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "deployment.cli-job.bucket.output: its attribute `path` differs from what the config and the state give"
        ),
        "{refused:?}"
    );
    assert!(!elsewhere.exists(), "the edited plan's path was made");
    assert!(!p.bucket("cli-results").exists() && !p.bucket("cli-job").exists());
    assert_eq!(p.ok(&["state", "list"]).stdout, "", "nothing recorded");

    // A change slipped into a plan: the output bucket, made and holding data, deleted with
    // its data instead of kept.
    p.ok(&[
        "apply",
        "--auto-approve",
        "--target",
        "deployment.cli-job.bucket.output",
    ]);
    std::fs::write(p.bucket("cli-results").join("result.txt"), "days of work").unwrap();
    p.ok(&["plan", "--out", "added.plan", BUCKETS[0], BUCKETS[1]]);
    edit_plan(&p, "added.plan", |plan| {
        let mut delete = change_of(plan, "deployment.cli-job.bucket.checkpoint").clone();
        delete["address"] = "deployment.cli-job.bucket.output".into();
        delete["action"] = "delete".into();
        delete["before"] = delete["after"].take();
        delete["before"]["name"] = "cli-results".into();
        delete["before"]["path"] = p.bucket("cli-results").display().to_string().into();
        plan["changes"].as_array_mut().unwrap().push(delete);
        plan["summary"]["destroy"] = 1.into();
    });
    let refused = p.run(&["apply", "added.plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "deployment.cli-job.bucket.output: the plan file would delete it; the config and the state call for nothing"
        ),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read_to_string(p.bucket("cli-results").join("result.txt")).unwrap(),
        "days of work"
    );
    assert!(!p.bucket("cli-job").exists(), "nothing of the plan applied");

    // Unedited, the same plan applies.
    p.ok(&["plan", "--out", "plain.plan", BUCKETS[0], BUCKETS[1]]);
    let applied = p.ok(&["apply", "plain.plan"]);
    assert!(
        applied
            .stdout
            .contains("Apply complete! Resources: 1 added"),
        "{applied:?}"
    );
}

#[test]
fn detailed_exitcode_and_formats() {
    let p = Project::new(CONFIG);
    assert_eq!(
        p.run(&["plan", "--detailed-exitcode", BUCKETS[0], BUCKETS[1]])
            .code,
        2
    );
    let json = p.ok(&["plan", "--format", "json", BUCKETS[0], BUCKETS[1]]);
    let plan: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("--format json prints only JSON");
    assert_eq!(plan["summary"]["add"], 3);
    let md = p.ok(&["plan", "--format", "markdown", BUCKETS[0], BUCKETS[1]]);
    assert!(md.stdout.starts_with("### anycloud plan\n"), "{md:?}");
    p.ok(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(
        p.run(&["plan", "--detailed-exitcode", BUCKETS[0], BUCKETS[1]])
            .code,
        0
    );
    assert_eq!(
        p.run(&[
            "plan",
            "--detailed-exitcode",
            "--refresh=false",
            BUCKETS[0],
            BUCKETS[1]
        ])
        .code,
        0
    );
    let unknown = p.run(&["plan", "--target", "deployment.nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("--target matches no resource"),
        "{unknown:?}"
    );
}

/// `destroy -q`, as `apply -q`: no plan printed, only the outcome.
#[test]
fn a_quiet_destroy_prints_no_plan() {
    let p = Project::new(CONFIG);
    let plan_text = |stdout: &str| {
        stdout.contains("will be forgotten")
            || stdout.contains("Plan: ")
            || stdout.contains("deployment cli-job: ")
    };
    p.ok(&["apply", "--auto-approve", "-q", BUCKETS[0], BUCKETS[1]]);
    let quiet = p.ok(&["destroy", "--auto-approve", "-q"]);
    assert!(!plan_text(&quiet.stdout), "{quiet:?}");
    assert!(quiet.stdout.contains("Destroy complete!"), "{quiet:?}");
    // The same destroy without -q prints its plan: the check above can fail.
    p.ok(&["apply", "--auto-approve", "-q", BUCKETS[0], BUCKETS[1]]);
    let loud = p.ok(&["destroy", "--auto-approve"]);
    assert!(plan_text(&loud.stdout), "{loud:?}");
}

#[test]
fn apply_refuses_without_approval_on_a_pipe() {
    let p = Project::new(CONFIG);
    let r = p.run(&["apply", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--auto-approve"), "{r:?}");
    assert!(
        !p.path().join(".anycloud/state.json").exists(),
        "nothing was applied"
    );
}

#[test]
fn the_state_lock_names_its_holder_and_can_be_waited_for() {
    let p = Project::new(CONFIG);
    let state = p.path().join(".anycloud/state.json");
    let lock = anycloud_state::LocalStore::new(&state);
    runtime()
        .block_on(lock.lock("test holder", std::time::Duration::ZERO))
        .unwrap();
    let blocked = p.run(&["plan", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(blocked.code, 1, "{blocked:?}");
    assert!(blocked.stderr.contains("is locked by"), "{blocked:?}");
    assert!(
        blocked
            .stderr
            .contains(&format!("pid {}", std::process::id())),
        "{blocked:?}"
    );
    assert!(blocked.stderr.contains("test holder"), "{blocked:?}");
    // When, in a person's words, and the holder's own command line.
    assert!(blocked.stderr.contains(" since 20"), "{blocked:?}");
    assert!(blocked.stderr.contains("s ago; lock id "), "{blocked:?}");
    assert!(blocked.stderr.contains("(`"), "{blocked:?}");
    let waiter = p
        .command(&["plan", "--lock-timeout", "20s", BUCKETS[0], BUCKETS[1]])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(lock);
    let waited = waiter.wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn force_unlock_frees_the_lock_of_a_run_that_hangs_and_fences_it() {
    let p = Project::new(CONFIG);
    p.ok(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    let state = p.path().join(".anycloud/state.json");
    // A run that hangs holding the lock (this test, standing in for it).
    let hung = anycloud_state::LocalStore::new(&state);
    let rt = runtime();
    let held = rt
        .block_on(hung.lock("apply", std::time::Duration::ZERO))
        .unwrap();
    let blocked = p.run(&["plan", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(blocked.code, 1, "{blocked:?}");
    let advice = format!("anycloud force-unlock {}", held.id);
    assert!(blocked.stderr.contains(&advice), "{blocked:?}");

    let wrong = p.run(&["force-unlock", "not-the-id"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stderr.contains(&held.id),
        "names the lock there is: {wrong:?}"
    );
    let freed = p.ok(&["force-unlock", &held.id]);
    assert!(freed.stdout.contains("Removed the lock"), "{freed:?}");
    p.ok(&["plan", BUCKETS[0], BUCKETS[1]]);
    // The hung run wakes up: it may write nothing more.
    let snap = rt.block_on(hung.read()).unwrap();
    let written = rt.block_on(hung.write(&snap.state, &snap.version));
    assert!(
        matches!(written, Err(anycloud_state::StoreError::LockLost { .. })),
        "{written:?}"
    );
}

#[test]
fn state_show_and_rm() {
    let p = Project::new(CONFIG);
    p.ok(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    let shown = p.ok(&["state", "show", "deployment.cli-job.bucket.output"]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("name ") && l.ends_with("= \"cli-results\"")),
        "{shown:?}"
    );
    let missing = p.run(&["state", "rm", "deployment.cli-job.nothing"]);
    assert_eq!(missing.code, 1);
    p.ok(&["state", "rm", "deployment.cli-job.bucket.output"]);
    assert_eq!(p.ok(&["state", "list"]).stdout.lines().count(), 2);
    assert!(
        p.bucket("cli-results").is_dir(),
        "state rm forgets, it does not destroy"
    );
    let mode = std::fs::metadata(p.path().join(".anycloud/state.json.backup")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The backup is the state as it was before the last write.
    let backup =
        anycloud_state::LocalStore::load(&p.path().join(".anycloud/state.json.backup")).unwrap();
    assert!(backup
        .resources
        .contains_key("deployment.cli-job.bucket.output"));
}

#[test]
fn errors_go_to_stderr_with_exit_1() {
    let p = Project::new("deployments:\n  Bad_Id:\n    container: { image: x }\n");
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr.starts_with(
            "error: anycloud.yaml:2:3: deployment id 'Bad_Id' must start with a lowercase letter"
        ),
        "{r:?}"
    );
}

/// Every example a user may start from is a valid config.
#[test]
fn the_examples_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for example in [
        "examples/quickstart/anycloud.yaml",
        "examples/ssh/anycloud.yaml",
        "examples/aws/anycloud.yaml",
        "examples/azure/anycloud.yaml",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anycloud"))
            .args(["validate", "-f"])
            .arg(root.join(example))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A plan file is written like the state: a new 0600 file renamed into place, never through
/// a symlink someone left there, never keeping an existing file's looser mode.
#[test]
fn a_plan_file_replaces_a_symlink_or_a_looser_file_and_is_private() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let p = Project::new(CONFIG);
    let victim = p.path().join("victim.txt");
    std::fs::write(&victim, "not a plan\n").unwrap();
    symlink(&victim, p.path().join("linked.plan")).unwrap();
    p.ok(&["plan", "--out", "linked.plan", BUCKETS[0], BUCKETS[1]]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a plan\n");
    let linked = std::fs::symlink_metadata(p.path().join("linked.plan")).unwrap();
    assert!(
        linked.file_type().is_file(),
        "the symlink itself is replaced"
    );
    assert_eq!(linked.permissions().mode() & 0o777, 0o600);

    let loose = p.path().join("loose.plan");
    std::fs::write(&loose, "old").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.ok(&["plan", "--out", "loose.plan", BUCKETS[0], BUCKETS[1]]);
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    p.ok(&["show", "loose.plan"]);
}

/// A huge value is no typo of a known one: no suggestion search (quadratic in its length),
/// and the error does not echo it back whole.
#[test]
fn a_huge_region_is_refused_briefly() {
    let huge = "x".repeat(200_000);
    let p = Project::new(&format!(
        "deployments:\n  job:\n    provider: aws\n    region: {huge}\n    vm: {{ type: t3.micro }}\n    container: {{ image: busybox }}\n"
    ));
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 1, "{}", &r.stderr[..r.stderr.len().min(500)]);
    assert!(r.stderr.contains("unknown region"), "{}", &r.stderr[..500]);
    assert!(!r.stderr.contains("did you mean"));
    assert!(r.stderr.len() < 2_000, "{} bytes of error", r.stderr.len());
}

/// `bucket upload|download NAME` takes only a bucket name: never a path.
#[test]
fn bucket_commands_check_the_name() {
    let p = Project::new(CONFIG);
    std::fs::write(p.path().join("data.txt"), "x").unwrap();
    for name in ["../../etc", "UPPER", "a", "with space"] {
        for args in [
            vec!["bucket", "upload", name, "data.txt"],
            vec!["bucket", "download", name, "out"],
            vec!["bucket", "ls", name],
        ] {
            let r = p.run(&args);
            assert_eq!(r.code, 1, "{args:?}: {r:?}");
            assert!(r.stderr.contains("bucket name"), "{args:?}: {r:?}");
        }
    }
    assert!(!p.path().join("out").exists());
}

/// A job asking for GPUs, without `vm.image`, gets AWS's image with NVIDIA's driver (read
/// from its public SSM parameter when made) and logs in as its user; whether the type has
/// GPUs is asked of EC2 (tests/e2e_aws.rs), so a plan that asks the cloud nothing says
/// nothing of it. `vm.image` wins.
#[test]
fn a_gpu_job_plans_the_nvidia_image() {
    let config = |vm: &str, gpus: &str| {
        format!(
            "deployments:\n  gpu-job:\n    provider: aws\n    region: us-east-1\n    vm: {vm}\n    container: {{ image: busybox{gpus} }}\n"
        )
    };
    let p = Project::new(&config("{ type: t3.micro }", ", gpus: all"));
    let r = p.run(&["plan", "--refresh=false"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(r#"+ image_parameter  = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id""#),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(r#"+ ssh_user         = "ubuntu""#),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(r#"+ gpu_check_image  = "busybox""#),
        "{r:?}"
    );
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("NVIDIA GPU"),
        "{r:?}"
    );
    // Without GPUs: Debian's image, found when made.
    p.write_config(&config("{ type: t3.micro }", ""));
    let r = p.run(&["plan", "--refresh=false"]);
    assert!(!r.stdout.contains("image_parameter"), "{r:?}");
    assert!(
        r.stdout.contains(r#"+ ssh_user         = "admin""#),
        "{r:?}"
    );
    p.write_config(&config(
        "{ type: g5.xlarge, image: ami-0123456789abcdef0 }",
        ", gpus: all",
    ));
    let r = p.run(&["plan", "--refresh=false"]);
    assert!(!r.stdout.contains("image_parameter"), "{r:?}");
    assert!(
        r.stdout
            .contains(r#"+ ami              = "ami-0123456789abcdef0""#),
        "{r:?}"
    );
}

/// A sweep's state and graph are read a few deployments at a time: names, `*` globs and
/// address prefixes filter `state list`, `status` and `graph`, each also as JSON.
#[test]
fn listings_filter_by_deployment_and_speak_json() {
    let p = Project::new(
        r#"
defaults: { provider: local }
deployments:
  sweep-a:
    container: { image: "busybox:latest" }
    buckets: { output: sweep-a-out }
  sweep-b:
    container: { image: "busybox:latest" }
    buckets: { output: sweep-b-out }
  other:
    container: { image: "busybox:latest" }
    buckets: { output: other-out }
"#,
    );
    p.ok(&[
        "apply",
        "--auto-approve",
        "--target",
        "deployment.sweep-a.bucket",
        "--target",
        "deployment.other.bucket",
    ]);

    assert_eq!(
        p.ok(&["state", "list", "sweep-*"]).stdout,
        "deployment.sweep-a.bucket.output\n"
    );
    assert_eq!(
        p.ok(&["state", "list", "other", "shared.local"]).stdout,
        "deployment.other.bucket.output\nshared.local.local.storage\n"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&p.ok(&["state", "list", "--format", "json", "other"]).stdout)
            .unwrap();
    assert_eq!(listed[0]["address"], "deployment.other.bucket.output");
    assert_eq!(listed[0]["kind"], "bucket");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let none = p.run(&["state", "list", "nothing-*"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("nothing-*"), "{none:?}");

    // The graph of one deployment keeps what it needs (the continent's storage).
    let graph: serde_json::Value =
        serde_json::from_str(&p.ok(&["graph", "--format", "json", "sweep-b"]).stdout).unwrap();
    let nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert!(nodes.contains(&"deployment.sweep-b.container"), "{nodes:?}");
    assert!(nodes.contains(&"shared.local.local.storage"), "{nodes:?}");
    assert!(
        !nodes
            .iter()
            .any(|a| a.contains("sweep-a") || a.contains("other")),
        "{nodes:?}"
    );

    let status: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", "--format", "json", "sweep-a"]).stdout).unwrap();
    let deployments = status["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 1, "{status}");
    assert_eq!(deployments[0]["deployment"], "sweep-a");
    let shown: Vec<(&str, &str)> = deployments[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        shown.contains(&("deployment.sweep-a.bucket.output", "present")),
        "{shown:?}"
    );
    assert!(
        shown.contains(&("deployment.sweep-a.container", "not created")),
        "{shown:?}"
    );
    let text = p.ok(&["status", "other"]).stdout;
    assert!(text.starts_with("deployment other (local "), "{text}");
    assert!(!text.contains("sweep-a"), "{text}");
}

/// Every command, flag and argument says what it is for, and `--help` of every command is
/// kept as a snapshot (a changed word shows in review).
#[test]
fn every_command_flag_and_argument_has_help() {
    fn walk(cmd: &mut clap::Command, path: &str, out: &mut String, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id != "help" && id != "version" && a.get_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        out.push_str(&format!(
            "=== {path} --help ===\n{}\n",
            cmd.render_long_help()
        ));
        for sub in cmd.get_subcommands_mut() {
            if sub.get_name() == "help" {
                continue;
            }
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() {
                missing.push(sub_path.clone());
            }
            walk(sub, &sub_path, out, missing);
        }
    }
    let mut cmd = anycloud::cli::command();
    cmd.build();
    let (mut out, mut missing) = (String::new(), Vec::new());
    walk(&mut cmd, "anycloud", &mut out, &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
    insta::assert_snapshot!("help_of_every_command", out);
}

/// A mistyped address gets the nearest one; a deployment's name stands for all of it.
#[test]
fn addresses_are_suggested_and_deployment_names_accepted() {
    let p = Project::new(CONFIG);
    p.ok(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    let typo = p.run(&["state", "show", "deployment.cli-job.bucket.outptu"]);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(
        typo.stderr
            .contains("did you mean 'deployment.cli-job.bucket.output'?"),
        "{typo:?}"
    );
    let whole = p.ok(&["state", "show", "cli-job"]).stdout;
    assert!(
        whole.contains("# deployment.cli-job.bucket.output:"),
        "{whole}"
    );
    assert!(
        whole.contains("# deployment.cli-job.bucket.checkpoint:"),
        "{whole}"
    );

    let target = p.run(&["plan", "--target", "deployment.cli-job.bucket.outptu"]);
    assert_eq!(target.code, 1, "{target:?}");
    assert!(
        target
            .stderr
            .contains("did you mean 'deployment.cli-job.bucket.output'?"),
        "{target:?}"
    );
    // No refresh: busybox:latest is not asked of this machine's Docker (it need not be there).
    let by_name = p
        .ok(&["plan", "--refresh=false", "--target", "cli-job"])
        .stdout;
    assert!(
        by_name.contains("deployment.cli-job.container will be created"),
        "{by_name}"
    );
}

/// Missing cloud credentials are named with what to set, and fail at once (not retried as
/// an outage); nothing is made.
#[test]
fn missing_aws_credentials_say_what_to_set() {
    let p = Project::new(
        r#"
deployments:
  cred-check:
    provider: aws
    region: us-east-1
    vm: { type: t3.micro }
    container: { image: "x", command: [a] }
    buckets: { output: cred-check-out }
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .arg("plan")
        .current_dir(p.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", p.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", p.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            p.path().join("no-credentials"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
}

/// A destroy replaces nothing: asking for both is refused, naming both flags.
#[test]
fn destroy_and_replace_do_not_go_together() {
    let p = Project::new(CONFIG);
    let r = p.run(&[
        "plan",
        "-destroy",
        "-replace",
        "deployment.cli-job.container",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("-replace cannot go with -destroy"),
        "{r:?}"
    );
}

/// Every unknown key of a config is reported in one run, each at its place with the nearest
/// known key, not the first only.
#[test]
fn every_unknown_key_is_reported_in_one_run() {
    let p = Project::new(
        r#"defaults: { provider: local }
deployments:
  job-a:
    contianer: { image: x }
    buckets: { output: out-a }
  job-b:
    container: { image: x, comand: [a] }
    buckets: { outptu: out-b }
"#,
    );
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 1, "{r:?}");
    for (at, key, nearest) in [
        ("anycloud.yaml:4:5", "contianer", "container"),
        ("anycloud.yaml:7:28", "comand", "command"),
        ("anycloud.yaml:8:16", "outptu", "output"),
    ] {
        assert!(
            r.stderr.contains(&format!("{at}: unknown key '{key}'"))
                && r.stderr.contains(&format!("did you mean '{nearest}'?")),
            "{key}: {r:?}"
        );
    }
    assert!(r.stderr.contains("3 errors in anycloud.yaml"), "{r:?}");
}

/// The test-only overrides (`ANYCLOUD_TEST_SSH_ADDRESS` sends every VM's SSH elsewhere) are
/// in builds of tests only: the features a build without tests resolves (what `cargo
/// install` and `cargo build --release` make) do not include them, while this test's build
/// does.
#[test]
fn test_hooks_are_only_in_builds_of_tests() {
    let tree = |edges: &str| {
        let out = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-p",
                "anycloud",
                "-e",
                edges,
            ])
            .args(["-f", "{p} {f}", "--prefix", "none"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo tree");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let hooked = |tree: &str| {
        tree.lines()
            .filter(|l| l.contains("test-hooks"))
            .filter_map(|l| l.split(' ').next())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(hooked(&tree("normal,build")), 0, "{}", tree("normal,build"));
    assert_eq!(
        hooked(&tree("normal,build,dev")),
        2,
        "{}",
        tree("normal,build,dev")
    );
}

#[test]
fn a_missing_input_bucket_is_located_with_the_nearest_bucket_that_exists() {
    let p = Project::new(
        "defaults: { provider: local }\n\
         deployments:\n\
         \x20 train:\n\
         \x20   container: { image: x }\n\
         \x20   buckets: { input: trainig-data, output: results }\n",
    );
    std::fs::create_dir_all(p.bucket("training-data")).unwrap();
    std::fs::create_dir_all(p.bucket("other-data")).unwrap();
    let r = p.run(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("anycloud.yaml:5:23: input bucket 'trainig-data' does not exist"),
        "{r:?}"
    );
    // The address stays in the message (the location replaces it in the rendering).
    assert!(
        r.stderr.contains("(deployment.train.bucket.input)"),
        "{r:?}"
    );
    assert!(r.stderr.contains("did you mean 'training-data'?"), "{r:?}");
}

/// The state lives beside its config (issue 25, item 6): `status` and `plan` with `-f
/// sub/anycloud.yaml` from another directory see the state that `apply` made in `sub/`.
#[test]
fn the_state_is_found_beside_the_config_from_any_directory() {
    let p = Project::new(CONFIG);
    let sub = p.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("anycloud.yaml"), CONFIG).unwrap();
    let in_sub = |args: &[&str]| {
        let out = p.command(args).current_dir(&sub).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    in_sub(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    assert!(sub.join(".anycloud/state.json").is_file());

    let f = ["-f", "sub/anycloud.yaml"];
    let listed = p.ok(&[f[0], f[1], "state", "list"]);
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");
    let status = p.ok(&[f[0], f[1], "status", "--format", "json"]);
    assert!(
        status.stdout.contains("deployment.cli-job.bucket.output"),
        "{status:?}"
    );
    let plan = p.run(&[
        f[0],
        f[1],
        "plan",
        "--detailed-exitcode",
        BUCKETS[0],
        BUCKETS[1],
    ]);
    assert_eq!(plan.code, 0, "no changes: the same state: {plan:?}");
    assert!(!p.path().join(".anycloud/state.json").exists());
}

/// A state left at the old default (`.anycloud/state.json` of the working directory) for a
/// config elsewhere is named with how to move it, not started afresh, and `state adopt` is
/// never suggested for it.
#[test]
fn a_state_left_in_the_working_directory_is_named_not_adopted() {
    let p = Project::new(CONFIG);
    let sub = p.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("anycloud.yaml"), CONFIG).unwrap();
    let f = ["-f", "sub/anycloud.yaml"];
    // Where anycloud kept it before: relative to the working directory.
    p.ok(&[
        f[0],
        f[1],
        "--state",
        ".anycloud/state.json",
        "apply",
        "--auto-approve",
        "--target",
        "deployment.cli-job.vm",
        BUCKETS[0],
        BUCKETS[1],
    ]);
    for args in [&["plan"][..], &["status"], &["apply", "--auto-approve"]] {
        let args: Vec<&str> = f.iter().chain(args).copied().collect();
        let r = p.run(&args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(!r.stderr.contains("state adopt"), "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("mv .anycloud/state.json* sub/.anycloud/"),
            "{args:?}: {r:?}"
        );
        assert!(!sub.join(".anycloud/state.json").exists(), "{args:?}");
    }
    // From `sub/` (the config in the working directory), the state above is found too.
    let from_sub = p.command(&["plan"]).current_dir(&sub).output().unwrap();
    let err = String::from_utf8_lossy(&from_sub.stderr);
    assert_eq!(from_sub.status.code(), Some(1), "{err}");
    assert!(!err.contains("state adopt"), "{err}");
    assert!(
        err.contains("/.anycloud/state.json holds the state"),
        "{err}"
    );
    // Another project's config (other deployments) is not held up by it.
    let other = p.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(
        other.join("anycloud.yaml"),
        CONFIG
            .replace("cli-job", "other-job")
            .replace("cli-results", "other-results"),
    )
    .unwrap();
    p.ok(&[
        "-f",
        "other/anycloud.yaml",
        "plan",
        "--target",
        "deployment.other-job.bucket",
    ]);
    // Moved as it says, it is found.
    for f in ["state.json", "state.json.backup"] {
        let _ = std::fs::rename(
            p.path().join(".anycloud").join(f),
            sub.join(".anycloud").join(f),
        );
    }
    let listed = p.ok(&[f[0], f[1], "state", "list"]);
    assert!(
        listed.stdout.contains("deployment.cli-job.vm"),
        "{listed:?}"
    );
    p.ok(&[f[0], f[1], "destroy", "--auto-approve"]);
}

/// Parses as `anycloud` does, or says why not.
fn parsed(args: &[&str]) -> Result<anycloud::cli::Cli, String> {
    use clap::FromArgMatches;
    let argv = anycloud::cli::normalise_args(
        std::iter::once("anycloud")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from),
    );
    let matches = anycloud::cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    anycloud::cli::Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// Every flag Terraform spells with one dash works with one (issue 25, item 7), with its
/// value after a space or after `=`.
#[test]
fn terraforms_single_dash_flags_parse() {
    use anycloud::cli::Command;
    let cli = parsed(&[
        "plan",
        "-target=deployment.a",
        "-target",
        "deployment.b",
        "-refresh=false",
        "-lock=false",
        "-lock-timeout",
        "5s",
        "-out",
        "p.plan",
        "-replace=deployment.a.container",
        "-detailed-exitcode",
        "-destroy",
        "-no-color",
        "-state",
        "s.json",
    ])
    .unwrap();
    let Command::Plan(plan) = &cli.command else {
        panic!("{cli:?}")
    };
    assert_eq!(plan.target, ["deployment.a", "deployment.b"]);
    assert!(!plan.refresh && !plan.lock && plan.detailed_exitcode && plan.destroy);
    assert_eq!(plan.out.as_deref(), Some(std::path::Path::new("p.plan")));
    assert_eq!(plan.replace, ["deployment.a.container"]);
    assert_eq!(cli.lock_timeout, std::time::Duration::from_secs(5));
    assert!(cli.no_color);
    assert_eq!(cli.state.as_deref(), Some(std::path::Path::new("s.json")));

    let cli = parsed(&[
        "apply",
        "-auto-approve",
        "-parallelism",
        "3",
        "-refresh=false",
        "-target",
        "deployment.a",
        "-lock-timeout=1m",
    ])
    .unwrap();
    let Command::Apply(apply) = &cli.command else {
        panic!("{cli:?}")
    };
    assert!(apply.auto_approve && !apply.refresh);
    assert_eq!(
        (apply.parallelism, apply.target.as_slice()),
        (3, &["deployment.a".to_owned()][..])
    );
    assert_eq!(cli.lock_timeout, std::time::Duration::from_secs(60));

    let cli = parsed(&[
        "destroy",
        "-auto-approve",
        "-parallelism=2",
        "-target=deployment.a",
    ])
    .unwrap();
    let Command::Destroy(destroy) = &cli.command else {
        panic!("{cli:?}")
    };
    assert!(destroy.auto_approve);
    assert_eq!(
        (destroy.parallelism, destroy.target.as_slice()),
        (2, &["deployment.a".to_owned()][..])
    );

    let cli = parsed(&["run", "job", "-auto-approve", "-parallelism", "4"]).unwrap();
    let Command::Run(run) = &cli.command else {
        panic!("{cli:?}")
    };
    assert!(run.auto_approve);
    assert_eq!(run.parallelism, 4);

    // The two-dash spellings are unchanged, and a value after `--` is left as it is.
    parsed(&[
        "apply",
        "--auto-approve",
        "--parallelism",
        "3",
        "--lock-timeout",
        "1s",
    ])
    .unwrap();
    let cli = parsed(&["bucket", "upload", "in", "--", "-target"]).unwrap();
    assert!(format!("{cli:?}").contains("\"-target\""), "{cli:?}");
}

/// `show` takes `--format json` like the other commands (and `--json` still).
#[test]
fn show_takes_format_json() {
    let p = Project::new(CONFIG);
    p.ok(&["apply", "--auto-approve", BUCKETS[0], BUCKETS[1]]);
    for args in [
        &["show", "--format", "json"][..],
        &["show", "--json"],
        &["show", "-json"],
    ] {
        let shown = p.ok(args);
        let state: serde_json::Value = serde_json::from_str(&shown.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {shown:?}"));
        assert!(
            state["resources"]["deployment.cli-job.bucket.output"].is_object(),
            "{shown:?}"
        );
    }
    let human = p.ok(&["show", "--format", "human"]);
    assert!(
        human.stdout.contains("# deployment.cli-job.bucket.output:"),
        "{human:?}"
    );
}

/// `anycloud completions bash|zsh|fish` prints a script that knows the commands.
#[test]
fn completions_are_printed_for_each_shell() {
    let p = Project::new(CONFIG);
    for shell in ["bash", "zsh", "fish"] {
        let script = p.ok(&["completions", shell]).stdout;
        assert!(script.contains("anycloud"), "{shell}: {script}");
        assert!(script.contains("apply"), "{shell}: {script}");
        assert!(script.contains("auto-approve"), "{shell}: {script}");
    }
    let bash = p.ok(&["completions", "bash"]).stdout;
    assert!(bash.contains("complete -F"), "{bash}");
    let unknown = p.run(&["completions", "powershell"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
}

/// A command's help lists only the global flags it reads; the others are still accepted.
#[test]
fn help_shows_only_the_global_flags_a_command_uses() {
    let p = Project::new(CONFIG);
    let validate = p.ok(&["validate", "--help"]).stdout;
    for hidden in ["--lock-timeout", "--state", "--keys-dir"] {
        assert!(
            !validate.contains(hidden),
            "validate --help lists {hidden}: {validate}"
        );
    }
    assert!(validate.contains("--config"), "{validate}");
    let graph = p.ok(&["graph", "--help"]).stdout;
    assert!(
        !graph.contains("--lock-timeout") && !graph.contains("--json-stream"),
        "{graph}"
    );
    let state_list = p.ok(&["state", "list", "--help"]).stdout;
    assert!(!state_list.contains("--keys-dir"), "{state_list}");
    assert!(state_list.contains("--lock-timeout"), "{state_list}");
    let plan = p.ok(&["plan", "--help"]).stdout;
    for shown in ["--lock-timeout", "--state", "--json-stream", "--config"] {
        assert!(plan.contains(shown), "plan --help lacks {shown}: {plan}");
    }
    p.ok(&["--lock-timeout", "1s", "validate"]);
    p.ok(&["validate", "-lock-timeout=1s"]);
}
