//! `anycloud run`: apply one deployment, follow its job to the end, destroy what that apply
//! made, exit with the job's code. With `--recover`, the job is watched through the loss of
//! its machine and brought back each time (`recover.rs`); what those recoveries made is the
//! run's too.

use std::collections::BTreeSet;

use crate::engine::{self, UserError};
use crate::plan::targets_match;

use super::logs::{container_of, follow, Followed};
use super::recover::Watched;
use super::{ApplyArgs, Context, RunArgs};

pub(super) async fn run(cx: &Context<'_>, args: &RunArgs) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let d = &args.deployment;
    let address = container_of(cx, &config, d)?;
    let whole = format!("deployment.{d}");
    // Where `run` leaves the machine (it stops following, or keeps it), idle_shutdown
    // still ends it: the machine's own watcher needs no anycloud.
    let idle = idle_note(&config, d);
    let apply = ApplyArgs {
        plan_file: None,
        auto_approve: args.auto_approve,
        parallelism: args.parallelism,
        refresh: true,
        target: vec![whole.clone()],
        replace: vec![],
        from_scratch: vec![],
    };
    let applied = if args.recover {
        // Another watcher of this job may be applying: wait for it as the run's end does,
        // then this apply finds the job running and follows it.
        let session = engine::Session::open(
            cx.store.as_ref(),
            "apply",
            cx.cli.lock_timeout.max(super::recover::END_LOCK_WAIT),
        )
        .await?;
        super::apply::applied_in(cx, &apply, &config, session).await?
    } else {
        super::apply::applied(cx, &apply).await?
    };
    if applied.code != 0 {
        cx.shell.err(&format!(
            "The apply did not finish, so nothing is destroyed: `anycloud status {d}` shows what runs, `anycloud destroy --target {whole}` stops it.\n"
        ));
        return Ok(applied.code);
    }
    // What the run may take down at the end: what its apply made of this deployment. The
    // continent's shared storage serves other deployments too: never one run's to take down.
    let mut made: BTreeSet<String> = applied
        .made
        .into_iter()
        .filter(|a| targets_match(std::slice::from_ref(&whole), a))
        .collect();
    let ours = made.contains(&address);
    let ended_before = applied
        .ended
        .iter()
        .find(|j| j.address == address)
        .filter(|_| !ours);
    let state = engine::read_state(cx.store.as_ref()).await?;
    cx.shell.out(&match ended_before {
        Some(job) => format!(
            "\nThe job of {d} had already ended before this run{}, and this run started nothing. What it printed:\n",
            if job.finished_at.is_empty() {
                String::new()
            } else {
                format!(" (at {})", job.finished_at)
            }
        ),
        None if !ours => format!(
            "\nThe job of {d} was already running before this run; following it (Ctrl-C stops following; the job goes on):\n"
        ),
        None => format!("\nThe output of {d}'s job (Ctrl-C stops following; the job goes on):\n"),
    });
    let code = if args.recover {
        match super::recover::watch(cx, d, &mut made, args).await? {
            Watched::Ended(code) => code,
            Watched::Exit(code) => return Ok(code),
        }
    } else {
        match follow(cx, &state, &address, &mut None, None, true).await? {
            Followed::Ended(code) => code,
            _ => {
                cx.shell.err(&format!(
                    "\nStopped following; the job goes on. `anycloud logs {d} --follow` follows it again; `anycloud destroy --target {whole}` uploads its output and stops it.{idle}\n"
                ));
                return Ok(130);
            }
        }
    };
    cx.shell
        .out(&format!("\nThe job exited with code {code}.\n"));
    if args.keep {
        cx.shell.out(&format!(
            "Kept (--keep): its machine and upload programs still run. `anycloud destroy --target {whole}` uploads what is left, verifies it, and stops them.{idle}\n"
        ));
        return Ok(exit_code(code));
    }
    if args.keep_failed && code != 0 && !made.is_empty() {
        cx.shell.out(&format!(
            "Kept (--keep-failed): the job failed, so what this run made still stands for a look (`anycloud logs {d}`, `anycloud status {d}`). `anycloud destroy --target {whole}` uploads what is left, verifies it, and takes it down.{idle}\n"
        ));
        return Ok(exit_code(code));
    }
    let (destroyed, gone) = if made.is_empty() {
        (0, BTreeSet::new())
    } else {
        cx.shell.out("\n");
        // Under --recover another watcher of the same job may be taking down what it made:
        // wait for it rather than fail.
        let lock_wait = if args.recover {
            cx.cli.lock_timeout.max(super::recover::END_LOCK_WAIT)
        } else {
            cx.cli.lock_timeout
        };
        super::apply::destroy_made(cx, &made, args.parallelism, lock_wait).await?
    };
    if destroyed != 0 {
        cx.shell.err(&format!(
            "The job exited with code {code}, but destroying what this run made did not finish: `anycloud destroy --target {}` takes it down.\n",
            gone.iter().cloned().collect::<Vec<_>>().join(" --target ")
        ));
        return Ok(1);
    }
    let state = engine::read_state(cx.store.as_ref()).await?;
    let left: Vec<&str> = state
        .resources
        .keys()
        .filter(|a| targets_match(std::slice::from_ref(&whole), a) && !gone.contains(*a))
        .map(String::as_str)
        .collect();
    if !left.is_empty() {
        let (needed, before): (Vec<&str>, Vec<&str>) =
            left.iter().partition(|a| made.contains(**a));
        let mut said = String::from("\n");
        if made.is_empty() {
            said.push_str(&format!(
                "Nothing of {d} is destroyed: all {} of its resources existed before this run, which takes down only what it made.\n",
                before.len()
            ));
        } else if !before.is_empty() {
            said.push_str(&format!(
                "Left as they were: {} existed before this run, which takes down only what it made: {}.\n",
                count(before.len()),
                before.join(", ")
            ));
        }
        if !needed.is_empty() {
            said.push_str(&format!(
                "Left, though this run made {}, because what was there before needs {}: {}.\n",
                if needed.len() == 1 { "it" } else { "them" },
                if needed.len() == 1 { "it" } else { "them" },
                needed.join(", ")
            ));
        }
        said.push_str(&format!(
            "`anycloud destroy --target {whole}` uploads what is left, verifies it, and takes the deployment down{}.\n",
            if ended_before.is_some() {
                format!("; `anycloud apply -replace {address}` runs its job again")
            } else {
                String::new()
            }
        ));
        cx.shell.out(&said);
    }
    Ok(exit_code(code))
}

/// What `run` adds where it leaves a machine running: `idle_shutdown` ends it anyway.
fn idle_note(config: &crate::config::Config, deployment: &str) -> String {
    config
        .deployments
        .iter()
        .find(|spec| spec.id == deployment)
        .and_then(|spec| spec.idle_shutdown_secs)
        .map(|secs| {
            format!(
                " Without it, idle_shutdown ({}) does: once the job has ended, the machine uploads and verifies its output, then stops itself.",
                anycloud_provider::duration::text(secs)
            )
        })
        .unwrap_or_default()
}

/// "1 resource", "3 resources".
fn count(n: usize) -> String {
    if n == 1 {
        "1 resource".to_owned()
    } else {
        format!("{n} resources")
    }
}

/// A job's exit code as this process's (Docker's codes are 0..=255 already).
fn exit_code(code: i64) -> i32 {
    code.clamp(0, 255) as i32
}
