//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use anycloud::config::Config;
use anycloud::plan::{Plan, PlanOptions};
use anycloud::registry::Providers;
use anycloud_state::State;

/// This build's providers (keys where no test looks).
pub fn providers() -> Providers {
    Providers::builtin(Path::new("/nonexistent/keys"))
}

pub fn parse(text: &str) -> Config {
    anycloud::config::parse(
        "anycloud.yaml",
        text,
        Path::new("/nonexistent"),
        "sha256:test",
        &providers(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "config does not parse: {}",
            e.iter().map(|e| e.to_string()).collect::<String>()
        )
    })
}

/// The plan of `config` against `state`, without refresh, by providers configured for it.
pub fn plan(config: &Config, state: &State) -> Plan {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = PlanOptions {
        refresh: false,
        targets: &[],
        destroy: false,
        replace: &[],
    };
    let providers = providers();
    providers.configure(&config.provider_settings).unwrap();
    rt.block_on(anycloud::engine::make_plan(
        config, state, &providers, &opts,
    ))
    .unwrap()
    .1
}

pub mod http_server;
pub mod moto;
pub mod registry;
pub mod relay;

#[path = "../../benches/fixture/mod.rs"]
mod fixture;

#[allow(unused_imports)] // not every test binary that includes `common` uses it
pub use fixture::{config_text, state_after, sweep_text};

pub fn fixed_state() -> State {
    let mut s = State::new();
    s.lineage = "00000000-0000-4000-8000-000000000000".into();
    s
}

/// A project directory for an end-to-end test: its config, state and local cloud root.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// Set for every run (a cloud's endpoint and credentials), the last one too at drop.
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Project {
    pub fn new(config: &str) -> Project {
        // Under /tmp with a plain name: the local cloud accepts only a safe path alphabet.
        let dir = tempfile::Builder::new()
            .prefix("anycloud-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        let p = Project { dir, env: vec![] };
        p.write_config(config);
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> std::path::PathBuf {
        self.path().join(".anycloud/local")
    }

    pub fn bucket(&self, name: &str) -> std::path::PathBuf {
        self.root().join("buckets").join(name)
    }

    pub fn host(&self, deployment: &str) -> std::path::PathBuf {
        self.root().join("hosts").join(deployment)
    }

    /// The state as a run sees it (its journal replayed), as JSON; `None` before there is one.
    pub fn state_json(&self) -> Option<serde_json::Value> {
        let state =
            anycloud_state::LocalStore::load(&self.path().join(".anycloud/state.json")).ok()?;
        serde_json::to_value(state).ok()
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.path().join("anycloud.yaml"), config).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_anycloud"));
        cmd.args(args)
            .current_dir(self.path())
            .stdin(std::process::Stdio::null())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // This machine points the SDKs at a CA bundle moto does not need.
            .env_remove("AWS_CA_BUNDLE");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "anycloud {args:?} failed: {r:?}");
        r
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Leave nothing running if a test failed half-way.
        let _ = self.command(&["destroy", "--auto-approve", "-q"]).output();
        let pattern = format!("supervisord -c {}/", self.path().display());
        let _ = std::process::Command::new("pkill")
            .args(["-f", "--", &pattern])
            .status();
    }
}

/// Waits until `check` returns Some, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The count of the test job's tick (`N from START`, fixtures/job.sh).
pub fn tick(text: &str) -> Option<u64> {
    let (count, start) = text.trim().split_once(" from ")?;
    start.parse::<u64>().ok()?;
    count.parse().ok()
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Every file under `dir`, at any depth (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Builds a test image from local files (no registry): busybox + `tests/fixtures/job.sh`.
///
/// Once per tag and process, one build at a time: two tests building the same tag at once
/// can each make an image of its own, and the one tagged last is, to a refresh, a rebuilt
/// tag that replaces the other test's container.
pub fn build_image(tag: &str) {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|t| t == tag) {
        return;
    }
    build_image_now(tag);
    built.push(tag.to_owned());
}

fn build_image_now(tag: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new("bash")
        .arg(root.join("examples/quickstart/build-image.sh"))
        .arg(tag)
        .arg(root.join("tests/fixtures/job.sh"))
        .status()
        .unwrap();
    assert!(status.success(), "building {tag} failed");
}

pub fn sh(script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the containers an earlier, interrupted run of a test left behind (a run killed
/// before its project's drop could destroy them): the counts of `containers_of` are this
/// run's own. A deployment name belongs to one test, so nothing of another test is removed.
pub fn remove_leftover_containers(deployments: &[&str]) {
    for d in deployments {
        let left = sh(&format!(
            "docker ps -aq --filter label=anycloud.deployment={d}"
        ));
        for id in left.lines().filter(|l| !l.is_empty()) {
            eprintln!("removing container {id} of {d}, left by an earlier run");
            sh(&format!("docker rm -f {id}"));
        }
    }
}

/// Containers of a deployment on this machine's Docker, by their anycloud label.
pub fn containers_of(deployment: &str) -> usize {
    let ids = sh(&format!(
        "docker ps -aq --filter label=anycloud.deployment={deployment}"
    ));
    ids.lines().filter(|l| !l.is_empty()).count()
}

/// Private supervisord instances of a deployment host.
pub fn supervisords_of(host: &Path) -> usize {
    let pattern = format!(
        "supervisord -c {}/supervisor/supervisord.conf",
        host.display()
    );
    // pgrep directly, not through a shell whose own command line would match too.
    let out = std::process::Command::new("pgrep")
        .args(["-f", "--", &pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}
