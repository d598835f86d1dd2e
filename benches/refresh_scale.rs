//! `anycloud plan` with its refresh, of N local deployments (issue 21: a refresh of 3,000
//! never finished). The local cloud refreshes in one round trip: one bash script probes every
//! deployment on this machine (`scripts::host_probe`), fed to bash on stdin while its output
//! is read — megabytes each way at these sizes.
//!
//! The setup: the bench's config (`benches/fixture`, `config_text`: an input, an output and a
//! checkpoint bucket per deployment) with its root in a temporary directory, and the state an
//! apply would leave (`state_after`, as `plan_scale` makes it). The machine is laid out as
//! apply leaves it, without its daemons: every bucket and host directory, each deployment's
//! owner file, `supervisord.conf`, rclone config, upload logs and last-success marks. So the
//! probe script is exactly the one of N applied deployments, and every command in it runs
//! (a `supervisorctl` that finds no supervisord, a `docker inspect` that finds no container):
//! what is missing are the daemons themselves, 5,000 supervisords and containers, which this
//! machine cannot hold. Their absence shortens each deployment's answer (no program and
//! container lines), not the work of asking; the refresh then finds the jobs gone and the plan
//! proposes them again, which is printed but not applied.
//!
//! Reported: the wall time of the whole `anycloud -v plan` process, the refresh's share as
//! `-v` reports it, the probe script's size, and its output (measured on the first 50
//! deployments and scaled).
//!
//! `cargo bench --bench refresh_scale -- 5000` (the figure; 5,000 is also the default
//! with `--bench`); `cargo test --bench refresh_scale -- --bench 5000` times the debug build,
//! as BENCHMARKS.md's figure was (the time is the probe's processes, not anycloud's code).
//! Without `--bench` (as `cargo test --all-targets` runs it) it plans 10 deployments and
//! checks the outcome only; `cargo test --bench refresh_scale -- N` runs N that way.

use std::path::Path;
use std::time::{Duration, Instant};

use anycloud::engine::{self, make_plan};
use anycloud::registry::Providers;
use anycloud_host::{Host, HostedPrivate, LocalHost, VmLayout};
use anycloud_state::State;

mod fixture;

use fixture::{config_text, no_refresh, state_after};

/// Deployments whose probe is run on its own to measure the output per deployment.
const SAMPLE: usize = 50;

fn write(path: &str, contents: &str) {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// What an apply leaves on this machine for `state`, but the daemons; the deployments to
/// probe (layout and container name) and the directories a refresh asks about.
fn lay_out(state: &State) -> (Vec<(VmLayout, String)>, Vec<String>) {
    let (mut deployments, mut dirs) = (Vec::new(), Vec::new());
    for r in state.resources.values() {
        let attr = |k: &str| {
            r.attributes
                .get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        let dir = match r.kind.as_str() {
            "storage" => attr("buckets_dir"),
            "bucket" => attr("path"),
            "vm" => attr("host_dir"),
            _ => None,
        };
        let Some(dir) = dir else { continue };
        std::fs::create_dir_all(&dir).expect("mkdir");
        dirs.push(dir.clone());
        if r.kind != "vm" {
            continue;
        }
        write(
            &format!("{dir}/.anycloud-owner"),
            &format!("{}\n", state.lineage),
        );
        let private: HostedPrivate =
            serde_json::from_value(r.private.clone()).expect("a VM's private part");
        let layout = private.layout;
        for sub in ["input", "output", "checkpoint"] {
            std::fs::create_dir_all(format!("{}/{sub}", layout.mnt)).expect("mkdir");
        }
        write(
            &layout.supervisord_conf(),
            &anycloud_host::render::supervisord_conf(&layout, "anycloud-bench"),
        );
        write(&layout.rclone_config, "[local]\ntype = local\n");
        for log in ["rclone-output.log", "rclone-checkpoint.stdout.log"] {
            write(
                &format!("{}/{log}", layout.log_dir),
                "2026/12/07 12:00:00 INFO  : There was nothing to transfer\n",
            );
        }
        for program in ["rclone-output", "rclone-checkpoint"] {
            write(
                &anycloud_host::render::last_success_path(&layout, program),
                "",
            );
        }
        let container = attr("container_name").expect("a VM names its container");
        deployments.push((layout, container));
    }
    (deployments, dirs)
}

struct Run {
    wall: Duration,
    refresh: Duration,
    refreshed: usize,
    plan_lines: usize,
}

fn plan(config: &Path, state: &Path) -> Run {
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .args(["-v", "--no-color", "-f"])
        .arg(config)
        .arg("--state")
        .arg(state)
        .arg("plan")
        .output()
        .expect("the binary runs");
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "anycloud plan: {stderr}\n{stdout}");
    // "… refresh of N resources X ms …"
    let (refreshed, ms) = stderr
        .split("refresh of ")
        .nth(1)
        .and_then(|rest| {
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            let _resources = words.next()?;
            let ms: f64 = words.next()?.parse().ok()?;
            Some((n, ms))
        })
        .unwrap_or_else(|| panic!("-v reports the refresh: {stderr}"));
    Run {
        wall,
        refresh: Duration::from_secs_f64(ms / 1e3),
        refreshed,
        plan_lines: stdout.lines().count(),
    }
}

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let deployments: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if timing { 5000 } else { 10 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let config_path = dir.path().join("anycloud.yaml");
    let state_path = dir.path().join("state.json");
    // A plan asks this machine's Docker for each image it creates containers of: one that
    // is there (an empty image; no container of it ever runs here).
    let image = "anycloud-bench-refresh:v1";
    let imported = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker image inspect {image} >/dev/null 2>&1 || tar -cf - -T /dev/null | docker import - {image} >/dev/null"
        ))
        .status()
        .expect("sh runs");
    assert!(imported.success(), "docker import of {image}");
    let text = config_text(deployments)
        .replace("/srv/anycloud-bench", root.to_str().unwrap())
        .replace("busybox:latest", image);
    std::fs::write(&config_path, &text).expect("write config");
    let providers = Providers::builtin(&dir.path().join("keys"));
    let config = engine::load_config_for(&config_path, &providers).expect("config parses");
    assert_eq!(config.deployments.len(), deployments);
    let (_, first) = rt
        .block_on(make_plan(&config, &State::new(), &providers, &no_refresh()))
        .expect("first plan");
    let state = state_after(&first, State::new());
    let resources = state.resources.len();
    anycloud_state::LocalStore::save_unchecked(&state_path, &state).expect("save state");
    let (probed, dirs) = lay_out(&state);
    assert_eq!(probed.len(), deployments);
    let script = anycloud_host::scripts::host_probe(&probed, &dirs);
    if timing {
        eprintln!(
            "refresh_scale: planning {deployments} deployments, a probe script of {} bytes…",
            script.len()
        );
    }
    let run = plan(&config_path, &state_path);
    assert_eq!(run.refreshed, resources, "every resource is refreshed");
    // The daemons are missing: each deployment's job (its supervisord's programs and its
    // container) is planned again; its buckets, directory and files are found.
    assert!(run.plan_lines > deployments, "{} lines", run.plan_lines);
    if !timing {
        println!(
            "refresh_scale: {deployments} deployments refreshed in {:.0} ms (probe script {} bytes); \
             `cargo bench --bench refresh_scale -- 5000` times the issue's size",
            run.refresh.as_secs_f64() * 1e3,
            script.len()
        );
        return;
    }
    let sample = deployments.min(SAMPLE);
    let sample_out = rt
        .block_on(LocalHost.run(&anycloud_host::scripts::host_probe(&probed[..sample], &[])))
        .expect("the sample probe runs");
    assert_eq!(
        sample_out
            .stdout
            .lines()
            .filter(|l| l.starts_with("@@ "))
            .count(),
        sample,
        "{}",
        sample_out.stderr
    );
    let output_bytes = sample_out.stdout.len() * deployments / sample;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!("refresh_scale: {deployments} local deployments, {resources} resources");
    println!("| | |");
    println!("|---|---:|");
    println!(
        "| probe script (one per refresh, on bash's stdin) | {:.1} MiB |",
        mib(script.len())
    );
    println!(
        "| its output ({} bytes for the first {sample} deployments, scaled) | {:.1} MiB |",
        sample_out.stdout.len(),
        mib(output_bytes)
    );
    println!(
        "| **refresh** (`-v`'s figure) | **{:.1} s** ({:.1} ms per deployment) |",
        run.refresh.as_secs_f64(),
        run.refresh.as_secs_f64() * 1e3 / deployments as f64
    );
    println!(
        "| `anycloud -v plan`, whole process | {:.1} s |",
        run.wall.as_secs_f64()
    );
    println!("| lines of the plan printed | {} |", run.plan_lines);
}
