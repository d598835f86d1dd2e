//! `--json-stream` through the CLI on the local cloud (real dockerd, supervisord, rclone):
//! a plan, an apply with a failure and a job that exits at once, a refused apply, a destroy. Stdout holds nothing but
//! JSON lines, each valid against the schema `anycloud schema json-stream` prints; people's
//! text goes to stderr. (A retry is in `src/apply/tests.rs`, whose provider fails on
//! demand.)
//!
//! Needs root, docker, supervisord and rclone (`scripts/prereqs.sh`).

mod common;

use common::{build_image, containers_of, Project};
use serde_json::Value;

const DEPLOYMENTS: [&str; 3] = ["stream-ok", "stream-bad", "stream-noimage"];

fn config() -> String {
    [
        "defaults:",
        "  provider: local",
        "  sync_interval: 1s",
        "  connectivity_check: { retries: 2, retries_sleep: 1s }",
        "deployments:",
        "  stream-ok:",
        "    container: { image: \"anycloud-e2e:v1\", command: [/bin/sh, -c, \"echo working; sleep 600\"] }",
        "    buckets: { output: stream-results-ok }",
        "  stream-bad:",
        "    container: { image: \"anycloud-e2e:v1\", command: [/bin/sh, -c, \"echo 'no such file: data.csv'; exit 2\"] }",
        "    buckets: { output: stream-results-bad }",
        "  stream-noimage:",
        "    container: { image: \"anycloud-e2e-missing:never-built\", command: [/bin/sh, -c, \"echo unreachable\"] }",
        "    buckets: { output: stream-results-noimage }",
        "",
    ]
    .join("\n")
}

/// Every stdout line parsed and checked against the schema; the lines.
fn stream(p: &Project, out: &str) -> Vec<Value> {
    let schema: Value = serde_json::from_str(&p.ok(&["schema", "json-stream"]).stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    out.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
            v
        })
        .collect()
}

fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == t).collect()
}

#[test]
fn plan_apply_and_destroy_stream_json_lines_that_match_the_schema() {
    common::remove_leftover_containers(&DEPLOYMENTS);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config());

    // Unrefreshed, so the image that is nowhere is not refused at plan time: its start fails
    // in the apply, as an image deleted between plan and apply would.
    let plan = p.ok(&["plan", "--json-stream", "--refresh=false"]);
    let lines = stream(&p, &plan.stdout);
    assert_eq!(lines[0]["type"], "version", "{plan:?}");
    let changes = of_type(&lines, "planned_change");
    assert!(changes.iter().any(
        |c| c["change"]["address"] == "deployment.stream-bad.container"
            && c["change"]["action"] == "create"
    ));
    let summary = of_type(&lines, "change_summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["changes"]["operation"], "plan");
    assert_eq!(summary[0]["changes"]["add"], changes.len());
    assert!(
        plan.stderr.contains("Plan:"),
        "people's text on stderr: {plan:?}"
    );

    // Nothing can answer the question on a stream.
    let unasked = p.run(&["apply", "--json-stream", "--refresh=false"]);
    assert_eq!(unasked.code, 1, "{unasked:?}");
    let lines = stream(&p, &unasked.stdout);
    let diagnostic = of_type(&lines, "diagnostic");
    assert!(
        diagnostic[0]["diagnostic"]["summary"]
            .as_str()
            .unwrap()
            .contains("--auto-approve"),
        "{unasked:?}"
    );
    assert_eq!(containers_of("stream-ok"), 0, "nothing was made");

    // Terraform's spelling; one job cannot start, one exits at once (the job's failure, not
    // the apply's: a warning), the other runs.
    let applied = p.run(&["apply", "-json", "--auto-approve", "-refresh=false"]);
    assert_eq!(applied.code, 1, "{applied:?}");
    let lines = stream(&p, &applied.stdout);
    let at = |t: &str, address: &str| {
        lines
            .iter()
            .position(|l| l["type"] == t && l["hook"]["address"] == address)
            .unwrap_or_else(|| panic!("no {t} of {address}: {applied:?}"))
    };
    assert!(
        at("apply_start", "deployment.stream-ok.container")
            < at("apply_complete", "deployment.stream-ok.container")
    );
    let errored = &lines[at("apply_errored", "deployment.stream-noimage.container")];
    assert!(
        errored["hook"]["error"]
            .as_str()
            .unwrap()
            .contains("anycloud-e2e-missing:never-built"),
        "{errored}"
    );
    assert!(
        at("apply_start", "deployment.stream-bad.container")
            < at("apply_complete", "deployment.stream-bad.container")
    );
    let warned: Vec<&Value> = of_type(&lines, "diagnostic")
        .into_iter()
        .filter(|d| d["diagnostic"]["severity"] == "warning")
        .collect();
    assert_eq!(warned.len(), 1, "{applied:?}");
    assert_eq!(
        warned[0]["diagnostic"]["address"], "deployment.stream-bad.container",
        "{applied:?}"
    );
    let summary = warned[0]["diagnostic"]["summary"].as_str().unwrap();
    assert!(summary.contains("exited with code 2"), "{summary}");
    assert!(
        warned[0]["diagnostic"]["help"]
            .as_str()
            .unwrap()
            .contains("no such file: data.csv"),
        "{applied:?}"
    );
    let outcome = of_type(&lines, "outcome");
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0]["outcome"]["operation"], "apply");
    assert_eq!(outcome[0]["outcome"]["status"], "failed");
    assert_eq!(
        outcome[0]["outcome"]["failed"][0]["address"],
        "deployment.stream-noimage.container"
    );
    assert_eq!(
        lines.last().unwrap()["type"],
        "outcome",
        "the outcome ends it"
    );

    // Nothing to do still ends with an outcome.
    let again = p.run(&[
        "apply",
        "--json-stream",
        "--auto-approve",
        "--target",
        "deployment.stream-ok",
    ]);
    let lines = stream(&p, &again.stdout);
    assert_eq!(lines.last().unwrap()["type"], "outcome", "{again:?}");
    assert_eq!(lines.last().unwrap()["outcome"]["status"], "complete");

    let destroyed = p.ok(&["destroy", "--json-stream", "--auto-approve"]);
    let lines = stream(&p, &destroyed.stdout);
    assert_eq!(
        of_type(&lines, "change_summary")[0]["changes"]["operation"],
        "destroy"
    );
    let outcome = of_type(&lines, "outcome");
    assert_eq!(outcome[0]["outcome"]["operation"], "destroy");
    assert_eq!(outcome[0]["outcome"]["status"], "complete");
    assert!(of_type(&lines, "apply_complete")
        .iter()
        .all(|l| l["hook"]["action"] == "delete"));
    assert_eq!(containers_of("stream-ok"), 0);
}
