//! The job's container: `docker run` with the bind mounts, adopted again when a container
//! of the same spec digest is there; stopped and flushed before it goes.
//!
//! - The `job` attribute (how the job stands: running, succeeded, failed, never started,
//!   or interrupted, which alone is resumed) and `image_id` are computed: read, never
//!   diffed. A refresh that finds the tag naming another image reads `image` as
//!   "TAG (ran …; the tag now names …)", which plans the replacement.
//! - One failure model: `container_run` watches a job for its first seconds and records an
//!   exit exactly as a later refresh would (the create succeeds; the apply warns and `run`
//!   exits with the job's code). Only Docker failing to start it fails the step. An
//!   interrupted job is started again as it was.
//! - Docker's log is bounded (`JOB_LOG_OPTS`, where the daemon logs to json-file); the
//!   options stay out of the recorded `run_spec`, so an upgrade replaces no running job.
//!   `job_log` reads at most `JOB_LOG_BYTES` per round trip, ending at a change of
//!   timestamp, and says there is `more`.
//! - A new run syncs the input again first when the bucket's listing differs from the one
//!   downloaded (never under a job that runs on); the mounts are given to an image's
//!   non-root `USER`.

use std::collections::BTreeMap;

use anycloud_provider::{
    attr_str, Attrs, BucketRole, DeploymentSpec, JobLog, LogRange, ProviderError, Result,
};
use serde_json::json;

use super::probe::{Job, JobState, Probe};
use super::{flush, run, upload, HostContext, HostedPrivate, KindPlan};
use crate::layout::VmLayout;
use crate::render::{self, RunSpec};
use crate::transport::Host;
use crate::{idle, scripts};

pub(super) fn plan(spec: &DeploymentSpec, ctx: &HostContext) -> KindPlan {
    let run = run_spec(spec, ctx);
    let mut p = KindPlan::default();
    let a = &mut p.attrs;
    a.insert("name".into(), json!(run.name));
    a.insert("image".into(), json!(run.image));
    a.insert("command".into(), json!(run.command));
    // Built whole (not through `json!`, which inserts key by key): a map collected at once
    // packs its nodes full, and a sweep plans a thousand of these.
    let env: serde_json::Map<String, serde_json::Value> = run
        .env
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    a.insert("env".into(), serde_json::Value::Object(env));
    a.insert("run_spec".into(), json!(run.render()));
    // What was downloaded into its read-only input and checkpoint: a new source means new
    // data under a running job, so the container is replaced with it.
    let sources: BTreeMap<&str, &String> = [BucketRole::Input, BucketRole::Checkpoint]
        .iter()
        .filter_map(|r| Some((r.as_str(), ctx.remotes.get(r)?)))
        .collect();
    a.insert("data_sources".into(), json!(sources));
    p.flush = Some(ctx.flush_pairs());
    // The idle watcher: changed in place, never a reason to run the job again.
    if let Some(idle) = spec.idle_shutdown_secs {
        let power_off = crate::testing::power_off().or_else(|| ctx.power_off.clone());
        a.insert("idle_shutdown".into(), json!(idle::duration_text(idle)));
        a.insert(
            "idle_stop".into(),
            json!(match &power_off {
                Some(_) => "the machine stops itself after the final upload is verified",
                None => "the final upload is verified; the machine is not the deployment's own and stays on",
            }),
        );
        a.insert(
            "idle_program".into(),
            json!(render::idle_program(&ctx.layout)),
        );
        a.insert(
            "idle_script".into(),
            json!(idle::watcher_script(
                &ctx.layout,
                &run.name,
                idle,
                ctx.remotes.get(&BucketRole::Output).map(String::as_str),
                power_off.as_deref(),
            )),
        );
    }
    // How the job stands is read, never planned: it is no change.
    p.computed.push("container_id".into());
    p.computed.push("image_id".into());
    p.computed.push("job".into());
    p.force_new = [
        "name",
        "image",
        "command",
        "env",
        "run_spec",
        "data_sources",
    ]
    .map(String::from)
    .to_vec();
    p
}

fn run_spec(spec: &DeploymentSpec, ctx: &HostContext) -> RunSpec {
    let c = &spec.container;
    let mounts = [
        (BucketRole::Input, true),
        (BucketRole::Output, false),
        (BucketRole::Checkpoint, false),
    ]
    .into_iter()
    .filter(|(role, _)| ctx.remotes.contains_key(role))
    .map(|(role, ro)| (ctx.layout.mount(role.as_str()), format!("/mnt/{role}"), ro))
    .collect();
    RunSpec {
        name: ctx.container_name(),
        deployment: ctx.deployment.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        env: c.env.clone(),
        mounts,
        gpus: c.gpus.clone(),
        shm_size: c.shm_size.clone(),
        network: ctx.network.clone(),
        user: ctx.container_user.clone(),
        restart: c.restart.docker(),
    }
}

pub(super) async fn apply(
    host: &dyn Host,
    private: &HostedPrivate,
    attrs: &Attrs,
) -> Result<Attrs> {
    let layout = &private.layout;
    let run_spec = attr_str(attrs, "run_spec")?;
    let digest = &anycloud_provider::digest::sha256_hex(run_spec)[..16];
    let name = attr_str(attrs, "name")?;
    // The spec digest label is how a re-run recognises its own container.
    let args = run_spec.trim_start_matches("docker ").replacen(
        "--detach",
        &format!("--detach --label anycloud.spec={digest}"),
        1,
    );
    let mounts: Vec<String> = BucketRole::ALL
        .iter()
        .map(|r| layout.mount(r.as_str()))
        .collect();
    // A new run of the job sees the input as the bucket holds it now: synced again first
    // when it changed since the last download (the listing kept on the machine says).
    let resync = attrs
        .get("data_sources")
        .and_then(|s| s.get(BucketRole::Input.as_str()))
        .and_then(|s| s.as_str())
        .map(|source| {
            scripts::download_input(
                layout,
                source,
                &layout.mount(BucketRole::Input.as_str()),
                true,
            )
        });
    // The watcher before the job: a CLI that dies once the job runs leaves it watching.
    // It never acts on a job not yet started (no container, or the one an in-place change
    // keeps).
    set_idle_watcher(host, private, attrs).await?;
    let out = run(
        host,
        &scripts::container_run(
            layout,
            name,
            digest,
            &mounts,
            args.trim_end(),
            // Without `--user` the job runs as its image's user, who gets the mounts.
            (!run_spec.contains("\n  --user ")).then_some(attr_str(attrs, "image")?),
            !run_spec.contains("\n  --restart "),
            resync.as_deref(),
        ),
        "docker run",
    )
    .await?;
    let last = out.stdout.trim().lines().last().unwrap_or_default();
    let (id, image_id) = last.split_once(' ').unwrap_or((last, ""));
    let mut attrs = attrs.clone();
    attrs.insert("container_id".into(), json!(id));
    // The image it runs, by content: the tag may be rebuilt while it runs.
    attrs.insert("image_id".into(), json!(image_id));
    if let Some(job) = ended_job(&out.stdout) {
        attrs.insert("job".into(), job.to_json());
    }
    Ok(attrs)
}

/// Installs the idle watcher the attributes ask for, with the final upload it runs, or
/// removes one an earlier config asked for.
async fn set_idle_watcher(host: &dyn Host, private: &HostedPrivate, attrs: &Attrs) -> Result<()> {
    let layout = &private.layout;
    let (Some(script), Some(program)) = (
        attrs.get("idle_script").and_then(|v| v.as_str()),
        attrs.get("idle_program").and_then(|v| v.as_str()),
    ) else {
        return remove_idle_watcher(host, layout).await;
    };
    upload(
        host,
        &layout.final_flush_script(),
        &scripts::final_flush(layout, &private.flush),
        0o755,
    )
    .await?;
    upload(host, &layout.idle_script(), script, 0o755).await?;
    upload(host, &layout.program_path(idle::PROGRAM), program, 0o644).await?;
    run(
        host,
        &scripts::program_apply(layout, idle::PROGRAM),
        idle::PROGRAM,
    )
    .await?;
    Ok(())
}

/// Removes the watcher where there is one (a machine without one is asked nothing more).
async fn remove_idle_watcher(host: &dyn Host, layout: &VmLayout) -> Result<()> {
    let script = format!(
        "[ -f {} ] || exit 0\n{}",
        render::quote(&layout.program_path(idle::PROGRAM)),
        scripts::program_remove(layout, idle::PROGRAM)
    );
    run(host, &script, idle::PROGRAM).await.map(|_| ())
}

/// How a job that ended while apply watched it ended, from the `job.`-prefixed probe facts
/// [`scripts::container_run`] prints: recorded in the state as a refresh would record it,
/// so a job that exits at once is the same kept, shown, never-remade ended job as one that
/// exits an hour later. An interrupted one (a signal from outside) is left to the refresh,
/// which resumes it.
fn ended_job(stdout: &str) -> Option<Job> {
    let facts = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("job.")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let job = Job::of(&Probe { facts })?;
    (!matches!(job.state, JobState::Running | JobState::Interrupted)).then_some(job)
}

pub(super) async fn delete(host: &dyn Host, private: &HostedPrivate, attrs: &Attrs) -> Result<()> {
    let name = attr_str(attrs, "name")?;
    // The watcher first: a teardown must never find the machine powering itself off.
    remove_idle_watcher(host, &private.layout).await?;
    run(
        host,
        &scripts::container_stop(&private.layout, name),
        "docker stop",
    )
    .await?;
    flush(host, &private.layout, &private.flush).await?;
    run(host, &scripts::container_remove(name), "docker rm").await?;
    Ok(())
}

/// The job's output in `range` and whether it has ended: one round trip, the state read
/// before the log so that an ended job's log is known to be whole.
pub(super) async fn job_log(host: &dyn Host, attrs: &Attrs, range: LogRange<'_>) -> Result<JobLog> {
    let name = attr_str(attrs, "name")?;
    let out = host
        .run(&scripts::job_log(name, range.since, range.tail))
        .await
        .map_err(ProviderError::from)?;
    if !out.success() {
        return Err(ProviderError::permanent(out.stderr.trim().to_owned()));
    }
    Ok(parse_job_log(&out.stdout, range.since))
}

/// `state STATUS CODE HOST-TIME` then Docker's `--timestamps` lines (`TIME TEXT`), cut at
/// [`scripts::JOB_LOG_BYTES`].
fn parse_job_log(stdout: &str, since: Option<&str>) -> JobLog {
    fn time(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(t, _)| t)
    }
    let mut log = JobLog::default();
    let (state, body) = stdout.split_once('\n').unwrap_or((stdout, ""));
    log.more = body.len() >= scripts::JOB_LOG_BYTES;
    let mut lines: Vec<&str> = body.lines().collect();
    if log.more {
        // The next read starts after the last line's time, so the piece ends where the time
        // changes: the line cut in the middle goes, and those of the same time before it
        // (Docker stamps the lines of one read of the job's output alike). A piece of one
        // time only is kept as it is: the reader must move on.
        let cut = if body.ends_with('\n') {
            lines.len()
        } else {
            lines.len().saturating_sub(1)
        };
        let mut keep = cut;
        if let Some(last) = cut.checked_sub(1).map(|i| time(lines[i])) {
            while keep > 0 && time(lines[keep - 1]) == last {
                keep -= 1;
            }
        }
        lines.truncate(if keep > 0 { keep } else { cut.max(1) });
    }
    if let Some(state) = state.strip_prefix("state ") {
        let mut words = state.split(' ');
        let (status, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        log.read_at = words.next().filter(|t| !t.is_empty()).map(str::to_owned);
        // The job's end is told with the last piece of its log.
        if matches!(status, "exited" | "dead" | "created") && !log.more {
            log.exit_code = code.parse().ok();
        }
    }
    for line in lines {
        let (at, text) = line.split_once(' ').unwrap_or((line, ""));
        // Docker's `--since` is inclusive, and a follower asks from its last line's time.
        if since.is_some_and(|s| at <= s) {
            continue;
        }
        log.lines.push((at.to_owned(), text.to_owned()));
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_log_reads_lines_after_the_last_one_seen_and_how_the_job_ended() {
        let out = "state exited 3 2026-12-04T17:50:04.000000000Z\n\
                   2026-12-04T17:50:01.000000001Z loading\n\
                   2026-12-04T17:50:02.500000000Z KeyError: 'lr'\n\
                   2026-12-04T17:50:03.000000000Z \n";
        let all = parse_job_log(out, None);
        assert_eq!(all.exit_code, Some(3));
        assert_eq!(
            all.read_at.as_deref(),
            Some("2026-12-04T17:50:04.000000000Z")
        );
        assert_eq!(
            all.lines
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>(),
            ["loading", "KeyError: 'lr'", ""]
        );
        let rest = parse_job_log(out, Some("2026-12-04T17:50:01.000000001Z"));
        assert_eq!(rest.lines[0].1, "KeyError: 'lr'");
        assert_eq!(rest.lines.len(), 2);
        let running = parse_job_log("state running 0\n", None);
        assert_eq!(running.exit_code, None);
        assert_eq!(running.read_at, None, "an older host script");
        let restarting = parse_job_log("state restarting 4\n", None);
        assert_eq!(restarting.exit_code, None);
        assert!(!all.more);
    }

    /// What apply's watch prints of a job that exited within it becomes the container's
    /// `job` attribute, as a refresh reads it; a running or interrupted one records nothing.
    #[test]
    fn a_job_that_ended_under_the_watch_is_recorded_as_ended() {
        let out = "job.container=exited:7:abc:\n\
                   job.container.finished=2026-12-07T21:00:01.5Z\n\
                   job.container.error=\n\
                   job.container.log.1=no such file: data.csv\n\
                   abc sha256:1\n";
        let job = ended_job(out).expect("ended");
        assert_eq!(
            job.to_json(),
            json!({"state": "failed", "exit_code": 7, "finished_at": "2026-12-07T21:00:01Z",
                   "last_lines": ["no such file: data.csv"]})
        );
        assert_eq!(ended_job("abc sha256:1\n"), None, "still running");
        assert_eq!(
            ended_job("job.container=exited:137:abc:\nabc sha256:1\n"),
            None,
            "killed from outside: the refresh resumes it"
        );
    }

    /// A log past the read's limit comes in pieces, each ending at a whole line, and the
    /// job's end only with the last piece; a single line longer than a piece is cut.
    #[test]
    fn a_log_past_the_limit_is_read_in_whole_lines_and_the_end_waits() {
        let line = |i: usize| format!("2026-12-04T17:50:00.{i:09}Z {}\n", "x".repeat(1000));
        let mut out = "state exited 0 2026-12-04T17:51:00.000000000Z\n".to_owned();
        let head = out.len();
        let mut i = 0;
        while out.len() - head < scripts::JOB_LOG_BYTES {
            out.push_str(&line(i));
            i += 1;
        }
        out.truncate(head + scripts::JOB_LOG_BYTES);
        let log = parse_job_log(&out, None);
        assert!(log.more);
        assert_eq!(log.exit_code, None, "the rest of the log is still to come");
        assert!(log.lines.iter().all(|(_, t)| t.len() == 1000));
        // The whole lines but the last: others of its time may follow it unread.
        assert_eq!(log.lines.len(), scripts::JOB_LOG_BYTES / 1032 - 1);
        let long = format!(
            "state running 0\n2026-12-04T17:50:00.000000000Z {}",
            "y".repeat(scripts::JOB_LOG_BYTES)
        );
        let log = parse_job_log(&long[..16 + scripts::JOB_LOG_BYTES], None);
        assert!(log.more);
        assert_eq!(log.lines.len(), 1, "a line longer than a read is shown cut");
        // Lines stamped alike at the end of a piece wait for the next, which reads from
        // the time before theirs.
        let mut grouped = "state running 0\n".to_owned();
        let mut i = 0;
        while grouped.len() < 16 + scripts::JOB_LOG_BYTES {
            grouped.push_str(&format!(
                "2026-12-04T17:50:00.{:09}Z {}\n",
                i / 10,
                "z".repeat(1000)
            ));
            i += 1;
        }
        let log = parse_job_log(&grouped[..16 + scripts::JOB_LOG_BYTES], None);
        assert!(log.more);
        let last = &log.lines.last().unwrap().0;
        assert_eq!(log.lines.iter().filter(|(t, _)| t == last).count(), 10);
        assert_eq!(log.lines.len() % 10, 0);
    }
}
