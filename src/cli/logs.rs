//! `anycloud logs`: a job's output, followed with `--follow` (and by `anycloud run`).

use std::time::{Duration, SystemTime};

use anycloud_provider::LogRange;
use anycloud_state::State;

use crate::engine::{self, UserError};

use super::{Context, LogsArgs};

/// How often a follower asks for new lines: one small round trip each.
const POLL: Duration = Duration::from_secs(1);
/// How many reads in a row may fail (a dropped connection) before following gives up.
const READ_ATTEMPTS: u32 = 5;

pub(super) async fn logs(cx: &Context<'_>, args: &LogsArgs) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let address = container_of(cx, &config, &args.deployment)?;
    let state = engine::read_state(cx.store.as_ref()).await?;
    if args.sync {
        let range = LogRange {
            tail: args.tail,
            uploads: true,
            ..LogRange::default()
        };
        let log = crate::plan::job_log(&state, &cx.providers, &address, range)
            .await
            .map_err(UserError::msg)?;
        let mut text = String::new();
        for (_, line) in &log.lines {
            text.push_str(line);
            text.push('\n');
        }
        cx.shell.job_output(&text);
        return Ok(0);
    }
    let since = args
        .since
        .map(|ago| humantime::format_rfc3339_nanos(SystemTime::now() - ago).to_string());
    let mut since = since;
    match follow(cx, &state, &address, &mut since, args.tail, args.follow).await? {
        Followed::Ended(code) if args.follow => {
            cx.shell.err(&format!("The job exited with code {code}.\n"));
            Ok(0)
        }
        Followed::Interrupted => Ok(130),
        _ => Ok(0),
    }
}

/// The container address of a deployment of the config, or an error naming the nearest.
pub(super) fn container_of(
    cx: &Context<'_>,
    config: &crate::config::Config,
    deployment: &str,
) -> Result<String, UserError> {
    if config.deployments.iter().any(|d| d.id == deployment) {
        return Ok(format!("deployment.{deployment}.container"));
    }
    let ids: Vec<String> = config.deployments.iter().map(|d| d.id.clone()).collect();
    Err(UserError::msg(format!(
        "{} has no deployment '{deployment}'{}",
        cx.cli.config.display(),
        super::filter::nearest(deployment, &ids)
            .map(|n| format!("; {n}"))
            .unwrap_or_default()
    )))
}

pub(super) enum Followed {
    /// The job has ended, with this exit code.
    Ended(i64),
    /// It runs on (not following).
    Running,
    /// Ctrl-C.
    Interrupted,
}

/// Prints the job's output from `since` (or its last `tail` lines); with `follow`, reads
/// again from the last line seen until the job ends. `since` is left at the last line
/// shown, so a caller that stops following (`run --recover` when the machine is lost) can
/// go on from there.
pub(super) async fn follow(
    cx: &Context<'_>,
    state: &State,
    address: &str,
    since: &mut Option<String>,
    tail: Option<usize>,
    follow: bool,
) -> Result<Followed, UserError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Only a reader that asked for the last N lines reads on "from now" when it was shown
    // nothing: from the start, a read that came back empty (a job yet to print, a daemon
    // that had not written its log yet) must not skip the first lines when they come.
    let tailed = tail.is_some();
    let mut tail = tail;
    let mut failures = 0;
    loop {
        let range = LogRange {
            since: since.as_deref(),
            tail,
            uploads: false,
        };
        let read = tokio::select! {
            r = crate::plan::job_log(state, &cx.providers, address, range) => r,
            _ = &mut ctrl_c => return Ok(Followed::Interrupted),
        };
        match read {
            Ok(log) => {
                failures = 0;
                tail = None;
                let mut text = String::new();
                for (_, line) in &log.lines {
                    text.push_str(line);
                    text.push('\n');
                }
                cx.shell.job_output(&text);
                if let Some((at, _)) = log.lines.last() {
                    *since = Some(at.clone());
                } else if since.is_none() && tailed {
                    // Nothing shown yet of the last N lines (`--tail 0`, or a silent job):
                    // read on from now, by the host's clock, not from the start.
                    *since = log.read_at.clone();
                }
                match log.exit_code {
                    // A long log comes in pieces: the next at once, following or not.
                    _ if log.more => continue,
                    Some(code) => return Ok(Followed::Ended(code)),
                    None if !follow => return Ok(Followed::Running),
                    None => {}
                }
            }
            Err(e) if follow && failures + 1 < READ_ATTEMPTS => {
                failures += 1;
                cx.shell.err(&format!("{e}; reading again\n"));
            }
            Err(e) => return Err(UserError::msg(e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c => return Ok(Followed::Interrupted),
        }
    }
}
