//! Snapshots of everything a reviewer reads: plans in all three formats, the generated
//! supervisord programs, rclone.conf, the container's run spec and the graph.
//! `cargo insta review` updates them locally; CI runs with INSTA_UPDATE=no and fails on change.

mod common;

use anycloud::render;
use anycloud_provider::Kind;

const BEFORE: &str = r#"
project: snap
defaults:
  provider: local
  sync_interval: 60s
providers:
  local: { root: /srv/anycloud-snap }
deployments:
  train-a:
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "0.001"]
      env: { EPOCHS: "50" }
    buckets: { input: training-data, output: results, checkpoint: true }
  train-b:
    container: { image: registry.local/train:v1 }
    buckets: { output: results }
"#;

/// train-a: new image (container replaced) and a new interval (programs updated in place);
/// train-b removed; train-c added.
const AFTER: &str = r#"
project: snap
defaults:
  provider: local
  sync_interval: 120s
providers:
  local: { root: /srv/anycloud-snap }
deployments:
  train-a:
    container:
      image: registry.local/train:v2
      command: [python, train.py, --lr, "0.001"]
      env: { EPOCHS: "50" }
    buckets: { input: training-data, output: results, checkpoint: true }
  train-c:
    container: { image: registry.local/eval:v1, command: [sh, -c, "echo it's done"] }
    buckets: { input: training-data, output: results }
"#;

fn mixed_plan() -> anycloud::plan::Plan {
    let before = common::parse(BEFORE);
    let first = common::plan(&before, &common::fixed_state());
    let state = common::state_after(&first, common::fixed_state());
    common::plan(&common::parse(AFTER), &state)
}

#[test]
fn plan_with_every_action_human() {
    let plan = mixed_plan();
    let actions: std::collections::BTreeSet<_> =
        plan.changes.iter().map(|c| c.action.as_str()).collect();
    for a in ["create", "update", "replace", "delete", "no-op", "read"] {
        assert!(
            actions.contains(a),
            "the fixture should exercise '{a}', got {actions:?}"
        );
    }
    insta::assert_snapshot!("plan_human", render::human(&plan));
}

#[test]
fn plan_with_every_action_json() {
    insta::assert_snapshot!("plan_json", render::json(&mixed_plan()));
}

#[test]
fn plan_with_every_action_markdown() {
    insta::assert_snapshot!("plan_markdown", render::markdown(&mixed_plan()));
}

#[test]
fn plans_are_byte_stable() {
    assert_eq!(render::json(&mixed_plan()), render::json(&mixed_plan()));
    assert_eq!(render::human(&mixed_plan()), render::human(&mixed_plan()));
}

#[test]
fn the_summary_counts_each_action() {
    let plan = mixed_plan();
    let line = plan.summary_line();
    // train-c: its vm, vm_init, rclone, sync.input, service.output, container (read of its
    // input bucket and create of the output bucket address); train-b: everything goes.
    assert!(line.starts_with("Plan: "), "{line}");
    assert_eq!(
        plan.summary.replace, 1,
        "only train-a's container is replaced: {line}"
    );
    assert_eq!(
        plan.summary.change, 2,
        "train-a's two upload programs change in place: {line}"
    );
}

fn attr(plan: &anycloud::plan::Plan, address: &str, key: &str) -> String {
    let c = plan
        .changes
        .iter()
        .find(|c| c.address == address)
        .unwrap_or_else(|| panic!("no {address}"));
    c.after.as_ref().unwrap()[key].as_str().unwrap().to_owned()
}

fn first_plan() -> anycloud::plan::Plan {
    common::plan(&common::parse(BEFORE), &common::fixed_state())
}

#[test]
fn supervisord_output_program() {
    insta::assert_snapshot!(
        "program_rclone_output",
        attr(
            &first_plan(),
            "deployment.train-a.service.output",
            "program"
        )
    );
}

#[test]
fn supervisord_checkpoint_program() {
    insta::assert_snapshot!(
        "program_rclone_checkpoint",
        attr(
            &first_plan(),
            "deployment.train-a.service.checkpoint",
            "program"
        )
    );
}

#[test]
fn supervisord_private_instance_conf() {
    insta::assert_snapshot!(
        "supervisord_conf",
        attr(
            &first_plan(),
            "deployment.train-a.vm_init",
            "supervisord_conf"
        )
    );
}

#[test]
fn rclone_conf() {
    let conf = attr(&first_plan(), "deployment.train-a.rclone", "config");
    for secret in ["key", "secret", "token", "password"] {
        assert!(
            !conf.to_lowercase().contains(secret),
            "rclone.conf must hold no {secret}: {conf}"
        );
    }
    insta::assert_snapshot!("rclone_conf", conf);
}

#[test]
fn container_run_spec() {
    let plan = first_plan();
    let c = plan
        .changes
        .iter()
        .find(|c| c.address == "deployment.train-a.container")
        .unwrap();
    assert_eq!(c.kind, Kind::Container);
    assert_eq!(
        c.after_unknown,
        vec![
            "container_id".to_owned(),
            "image_id".to_owned(),
            "job".to_owned()
        ]
    );
    insta::assert_snapshot!(
        "container_run_spec",
        attr(&plan, "deployment.train-a.container", "run_spec")
    );
}

#[test]
fn graph_dot_and_mermaid() {
    let g = anycloud::graph::compile(&common::parse(BEFORE), &common::providers());
    insta::assert_snapshot!("graph_dot", g.to_dot());
    insta::assert_snapshot!("graph_mermaid", g.to_mermaid());
}

/// A machine of the user's own: where it is and how it is reached show in the plan.
#[test]
fn plan_for_a_machine_over_ssh() {
    let config = common::parse(
        r#"
project: snap
deployments:
  byo:
    provider: ssh
    vm: { host: 192.0.2.10, port: 2222, user: ubuntu, root: /srv/anycloud, host_key: "SHA256:2lEGeFpbsX4XTzAuj0sTDPJGv3N5hh9IkgmeDLfGXMo" }
    container: { image: registry.local/train:v1, command: [python, train.py] }
    buckets: { output: results, checkpoint: true }
"#,
    );
    let plan = common::plan(&config, &common::fixed_state());
    insta::assert_snapshot!("plan_ssh_human", render::human(&plan));
}

/// Jobs that ended: how the plan tells a failed, a finished and an unstartable job, made from
/// the `job` attribute a refresh reads.
#[test]
fn plan_with_ended_jobs() {
    use anycloud::plan::EndedJob;
    let before = common::parse(BEFORE);
    let first = first_plan();
    let mut state = common::state_after(&first, common::fixed_state());
    let jobs = [
        (
            "deployment.train-a.container",
            serde_json::json!({"state": "failed", "exit_code": 3,
                "finished_at": "2026-12-04T15:25:10Z",
                "last_lines": ["loading data", "KeyError: 'lr'"]}),
        ),
        (
            "deployment.train-b.container",
            serde_json::json!({"state": "succeeded", "exit_code": 0,
                "finished_at": "2026-12-04T16:00:00Z"}),
        ),
        (
            "deployment.train-c.container",
            serde_json::json!({"state": "never-started", "exit_code": 127,
                "error": "exec: \"trian.py\": executable file not found in $PATH"}),
        ),
    ];
    for (addr, job) in &jobs {
        if let Some(r) = state.resources.get_mut(*addr) {
            r.attributes.insert("job".into(), job.clone());
        }
    }
    let plan = common::plan(&before, &state);
    let ended: Vec<&EndedJob> = plan.jobs.iter().collect();
    assert_eq!(ended.len(), 2, "BEFORE has train-a and train-b: {ended:?}");
    assert!(!plan.has_changes());
    insta::assert_snapshot!("plan_ended_jobs_human", render::human(&plan));
    insta::assert_snapshot!("plan_ended_jobs_markdown", render::markdown(&plan));
    let unstartable = EndedJob::of(
        jobs[2].0,
        &serde_json::from_value(serde_json::json!({"job": jobs[2].1})).unwrap(),
    )
    .unwrap();
    insta::assert_snapshot!("ended_job_never_started", unstartable.describe());
}

/// The quickstart's one job, as a user first plans it.
const ONE_JOB: &str = r#"
project: snap
defaults:
  provider: local
  sync_interval: 5s
providers:
  local: { root: /srv/anycloud-snap }
deployments:
  wordcount:
    container:
      image: anycloud-quickstart:latest
      command: [/bin/sh, /job.sh]
      env: { STEPS: "60" }
    buckets: { input: quickstart-input, output: quickstart-results, checkpoint: true }
  idle:
    container: { image: registry.local/idle:v1 }
    buckets: { output: quickstart-results }
"#;

/// ONE_JOB applied, its job running since 14:42 UTC (as a refresh records it).
fn one_job_running() -> anycloud_state::State {
    let first = common::plan(&common::parse(ONE_JOB), &common::fixed_state());
    let mut state = common::state_after(&first, common::fixed_state());
    state
        .resources
        .get_mut("deployment.wordcount.container")
        .unwrap()
        .attributes
        .insert(
            "job".into(),
            serde_json::json!({"state": "running", "started_at": "2026-12-07T14:42:10Z"}),
        );
    state
}

/// A first plan of one job (and an idle one): what starts, then the resources with the
/// generated scripts and programs collapsed to their digests.
#[test]
fn plan_of_one_job_fresh() {
    let config = ONE_JOB.replace(
        "  idle:\n    container: { image: registry.local/idle:v1 }\n    buckets: { output: quickstart-results }\n",
        "",
    );
    let plan = common::plan(&common::parse(&config), &common::fixed_state());
    insta::assert_snapshot!("plan_one_job_fresh", render::human(&plan));
}

/// A new env value for a running job with a checkpoint, and a new image for one without:
/// each job's line says it is STOPPED, since when it ran (as the state last recorded it:
/// this plan is not refreshed), from where it starts again, and which keys changed (never
/// `run_spec`).
#[test]
fn plan_env_change_of_a_running_job() {
    let after = ONE_JOB
        .replace("STEPS: \"60\"", "STEPS: \"80\"")
        .replace("idle:v1", "idle:v2");
    let plan = common::plan(&common::parse(&after), &one_job_running());
    let text = render::human(&plan);
    assert!(
        text.contains("\njob wordcount (running since 2026-12-07 14:42 UTC, as last recorded): STOPPED and started again from its checkpoint, because env.STEPS 60 → 80\n"),
        "{text}"
    );
    assert!(
        text.contains("job idle: STOPPED and started again from the beginning (no checkpoint: its progress is lost), because image registry.local/idle:v1 → registry.local/idle:v2\n"),
        "{text}"
    );
    insta::assert_snapshot!("plan_env_change_running_job", text);
}

/// A new `sync_interval` changes the upload programs alone: the job is not touched, and
/// the untouched deployment is counted.
#[test]
fn plan_sync_interval_change() {
    let after = ONE_JOB.replace("  wordcount:\n", "  wordcount:\n    sync_interval: 10s\n");
    let plan = common::plan(&common::parse(&after), &one_job_running());
    let text = render::human(&plan);
    assert!(
        text.starts_with("deployment wordcount: uploads every 10s instead of 5s; the job is not touched\n1 other deployment is not touched.\n"),
        "{text}"
    );
    insta::assert_snapshot!("plan_sync_interval_change", text);
}

/// The same change as a pull-request comment: the deployment's line first, each program's
/// diff whole inside a `<details>` of its own.
#[test]
fn plan_sync_interval_change_markdown() {
    let after = ONE_JOB.replace("  wordcount:\n", "  wordcount:\n    sync_interval: 10s\n");
    let plan = common::plan(&common::parse(&after), &one_job_running());
    let md = render::markdown(&plan);
    assert!(
        md.contains("<details><summary><code>program</code>: the diff</summary>"),
        "{md}"
    );
    assert!(md.contains("+    touch /srv/anycloud-snap/hosts/wordcount/log/rclone-output.last-success; sleep 10; done\""), "{md}");
    insta::assert_snapshot!("plan_sync_interval_change_markdown", md);
}

/// `-v`: every generated text whole, as a heredoc or a unified diff; without it, one line
/// with its digest. JSON keeps everything either way.
#[test]
fn plan_verbose_shows_generated_text_whole() {
    let after = ONE_JOB.replace("  wordcount:\n", "  wordcount:\n    sync_interval: 10s\n");
    let plan = common::plan(&common::parse(&after), &one_job_running());
    let short = render::human(&plan);
    let whole = render::human_opts(&plan, false, true);
    assert!(
        short.contains("     ~ program      = sha256:")
            && short.contains("(1 line changed)")
            && !short.contains("sleep 10"),
        "{short}"
    );
    assert!(
        whole.contains("     ~ program      = <<-EOT\n") && whole.contains("sleep 10; done"),
        "{whole}"
    );
    assert!(render::json(&plan).contains("sleep 10; done"));
    insta::assert_snapshot!("plan_sync_interval_change_verbose", whole);
}
