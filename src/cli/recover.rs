//! `anycloud run --recover`: watching a job through preemptions until it ends, without an
//! operator.
//!
//! The watcher follows the job's output as `run` does and, besides, looks at the
//! deployment's machine every [`LOOK_EVERY`] and whenever following stops (the job's end,
//! reads that keep failing). How the deployment stands ([`Standing`]) is read from the state
//! and the deployment's own records only (its VM, and its container when the job's fate is
//! in question), never a refresh of the whole state. A machine that reads as gone (a spot
//! preemption, a VM terminated from outside) or a job killed from outside (exit 128 and up,
//! which `apply` resumes) is *lost*: the watcher waits (`--recover-wait`, doubling each time
//! up to [`MAX_WAIT`], jittered, through `anycloud_provider::retry::backing_off`), then
//! re-applies that deployment alone (`--target deployment.D`: a new machine, the checkpoint
//! restored), at most `--max-recoveries` times; past that it exits 1 naming the limit and
//! leaves everything as it stands.
//!
//! **The state lock decides between watchers.** A recovery is decided under the lock: the
//! watcher takes it without waiting ([`engine::Session::try_open`]); when another run holds
//! it, it backs off and reads the state again (the other may be recovering the same job).
//! Holding it, it looks again at the deployment as the locked state records it, and applies
//! only if it is still lost: a machine another watcher brought back meanwhile is followed,
//! not made twice. A job whose records are gone from the state was destroyed by another
//! command: the watcher stops rather than bring it back.
//!
//! What a recovery creates is this run's (it made it): at the job's end `run` takes it down
//! with the rest of what it made, as it would without `--recover`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anycloud_provider::retry::backing_off;
use anycloud_state::State;

use crate::engine::{self, Session, UserError};
use crate::plan::{targets_match, EndedJob};

use super::logs::{follow, Followed};
use super::{ApplyArgs, Context, RunArgs};

/// How often the machine is looked at while the job's output is followed (one read of the
/// VM: a cloud's describe call, a directory on the local cloud). Following notices sooner
/// where reading the log fails at once.
const LOOK_EVERY: Duration = Duration::from_secs(30);
/// The longest wait before a recovery.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(600);
/// The pause before looking again when the deployment could not be told (a read that
/// failed, an apply of it under way).
const LOOK_AGAIN: Duration = Duration::from_secs(5);
/// A read of the deployment's records that takes longer than this could not tell.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Rounds of following that fail in a row, the machine being there, before giving up.
const FOLLOW_ROUNDS: u32 = 3;
/// How long the end of a run under `--recover` waits for the state lock to take down what
/// it made (another watcher of the same job may be doing the same).
pub(super) const END_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Why a job is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Loss {
    /// Its VM reads as gone: preempted, or terminated from outside.
    MachineGone,
    /// Its machine is there, its job was killed from outside (exit 128 and up).
    JobInterrupted,
    /// An apply of it died half-way (its records pending, nobody holding the lock).
    Unfinished,
}

impl Loss {
    /// As the JSON stream's `recovery.reason` names it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Loss::MachineGone => "machine-gone",
            Loss::JobInterrupted => "job-interrupted",
            Loss::Unfinished => "unfinished",
        }
    }

    fn describe(self, d: &str) -> String {
        match self {
            Loss::MachineGone => format!(
                "the machine of deployment {d} is gone (deployment.{d}.vm no longer exists: preempted, or terminated from outside)"
            ),
            Loss::JobInterrupted => format!(
                "the job of deployment {d} was killed from outside (its machine is there, its container is not running)"
            ),
            Loss::Unfinished => format!(
                "an apply of deployment {d} did not finish (its records are pending and no run holds the lock)"
            ),
        }
    }
}

/// How a deployment stands, as its records and their providers say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Its machine is there, and its job runs (`ended: false`) or ended by itself.
    Up { ended: bool },
    /// A recovery would bring it back.
    Lost(Loss),
    /// Its records are pending: an apply or destroy of it is under way.
    Busy,
    /// Its job is not in the state: a destroy took it down.
    TakenDown,
    /// It could not be told now (a read failed): look again.
    Unknown(String),
}

/// What the watcher does next, from how following ended (`ended`: the job's code, if the
/// log said it ended) and how the deployment stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// The job is over: end the run with its code.
    Finish(i64),
    /// Follow the job (again).
    Follow,
    /// Look again in a moment.
    Wait,
    /// Bring the job back.
    Recover(Loss),
    /// Stop watching: the deployment was destroyed meanwhile.
    Stop,
}

/// The watcher's one decision, kept apart from its I/O so it can be read and tested whole.
pub(super) fn decide(ended: Option<i64>, standing: &Standing) -> Next {
    match (standing, ended) {
        (Standing::Lost(loss), _) => Next::Recover(*loss),
        // The job ended and was then taken down (another watcher's end, a destroy).
        (Standing::TakenDown, Some(code)) => Next::Finish(code),
        (Standing::TakenDown, None) => Next::Stop,
        (Standing::Up { ended: true }, Some(code)) => Next::Finish(code),
        // Following again reads its end and code.
        (Standing::Up { ended: true }, None) => Next::Follow,
        // Running: a read that failed for a while, or a job the machine started again.
        (Standing::Up { ended: false }, _) => Next::Follow,
        // A job that exited by itself has ended whatever else is under way; one killed from
        // outside (128 and up) may be a machine going away: look until it can be told.
        (Standing::Busy | Standing::Unknown(_), Some(code)) if (0..128).contains(&code) => {
            Next::Finish(code)
        }
        (Standing::Busy | Standing::Unknown(_), _) => Next::Wait,
    }
}

/// How deployment `d` stands. `with_job`: read its container too (else the machine only,
/// the cheap look made while following). `locked`: the state was read under the lock, so
/// pending records are a run that died, not one at work.
async fn look(cx: &Context<'_>, state: &State, d: &str, with_job: bool, locked: bool) -> Standing {
    let vm = format!("deployment.{d}.vm");
    let container = format!("deployment.{d}.container");
    let (Some(v), Some(c)) = (state.resources.get(&vm), state.resources.get(&container)) else {
        return Standing::TakenDown;
    };
    if v.pending.is_some() || c.pending.is_some() {
        return if locked {
            Standing::Lost(Loss::Unfinished)
        } else {
            Standing::Busy
        };
    }
    let addresses: Vec<&str> = if with_job {
        vec![vm.as_str(), container.as_str()]
    } else {
        vec![vm.as_str()]
    };
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        crate::plan::read_recorded(state, &cx.providers, &addresses),
    )
    .await;
    let found = match read {
        Err(_) => {
            return Standing::Unknown(format!(
                "reading {vm} took longer than {}s",
                READ_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Standing::Unknown(e),
        Ok(Ok(found)) => found,
    };
    let read_of = |address: &str| match found.get(address) {
        Some(Ok(attrs)) => Ok(attrs.clone()),
        Some(Err(e)) => Err(format!("{address}: {}", e.message)),
        None => Err(format!("{address} was not read")),
    };
    match read_of(&vm) {
        Err(e) => return Standing::Unknown(e),
        Ok(None) => return Standing::Lost(Loss::MachineGone),
        Ok(Some(_)) if !with_job => return Standing::Up { ended: false },
        Ok(Some(_)) => {}
    }
    match read_of(&container) {
        Err(e) => Standing::Unknown(e),
        // A container that reads as gone on a machine that is there: killed from outside
        // (an interrupted job reads so, and apply starts it again).
        Ok(None) => Standing::Lost(Loss::JobInterrupted),
        Ok(Some(attrs)) => Standing::Up {
            ended: EndedJob::of(&container, &attrs).is_some(),
        },
    }
}

/// How watching ended.
pub(super) enum Watched {
    /// The job ended with this code: `run` goes on to take down what it made.
    Ended(i64),
    /// The run ends here with this exit code (Ctrl-C).
    Exit(i32),
}

/// What happened when following stopped.
enum Event {
    Followed(Result<Followed, UserError>),
    /// The look made while following found the deployment lost or taken down.
    Looked,
}

/// Watches deployment `d`'s job until it ends, recovering it when it is lost; `made` gains
/// what each recovery made.
pub(super) async fn watch(
    cx: &Context<'_>,
    d: &str,
    made: &mut BTreeSet<String>,
    args: &RunArgs,
) -> Result<Watched, UserError> {
    let whole = format!("deployment.{d}");
    let address = format!("{whole}.container");
    let mut since: Option<String> = None;
    let mut recoveries: u32 = 0;
    let mut waits = backing_off(args.recover_wait, MAX_WAIT.max(args.recover_wait));
    let mut lock_waits = backing_off(LOOK_AGAIN, MAX_WAIT);
    let mut follow_failures: u32 = 0;
    let mut said_unknown = String::new();
    // The container followed, by the id its record holds: another one (a recovery, ours or
    // another watcher's) is followed from its start.
    let mut followed: Option<serde_json::Value> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let state = engine::read_state(cx.store.as_ref()).await?;
        let id = state
            .resources
            .get(&address)
            .and_then(|r| r.attributes.get("container_id").cloned());
        if followed.is_some() && id != followed {
            since = None;
            cx.shell.out(&format!(
                "\nThe output of {d}'s job, on the machine brought back:\n"
            ));
        }
        followed = id;
        let event = if state.resources.contains_key(&address) {
            tokio::select! {
                f = follow(cx, &state, &address, &mut since, None, true) => Event::Followed(f),
                _ = look_while_following(cx, &state, d) => Event::Looked,
            }
        } else {
            Event::Looked
        };
        let (ended, standing) = match event {
            Event::Followed(Ok(Followed::Interrupted)) => return Ok(stopped(cx, d)),
            Event::Followed(Ok(Followed::Ended(code))) => {
                follow_failures = 0;
                let state = engine::read_state(cx.store.as_ref()).await?;
                (Some(code), look(cx, &state, d, true, false).await)
            }
            Event::Followed(Ok(Followed::Running)) => continue,
            Event::Followed(Err(e)) => {
                let state = engine::read_state(cx.store.as_ref()).await?;
                let standing = look(cx, &state, d, true, false).await;
                if matches!(standing, Standing::Up { .. }) {
                    follow_failures += 1;
                    if follow_failures >= FOLLOW_ROUNDS {
                        return Err(e);
                    }
                }
                (None, standing)
            }
            // Looked at with the state read when following began: looked at again as the
            // state is now (another watcher may have brought the machine back), job and all.
            Event::Looked => {
                let state = engine::read_state(cx.store.as_ref()).await?;
                (None, look(cx, &state, d, true, false).await)
            }
        };
        match decide(ended, &standing) {
            Next::Finish(code) => return Ok(Watched::Ended(code)),
            Next::Follow => {}
            Next::Stop => {
                return Err(UserError::msg(format!(
                    "deployment {d} was taken down by another command while this run watched its job (its container is no longer in the state): there is nothing to recover. `anycloud status {d}` shows what is left"
                )))
            }
            Next::Wait => {
                if let Standing::Unknown(why) = &standing {
                    if *why != said_unknown {
                        say(cx, &format!("deployment {d} could not be looked at ({why}); looking again\n"));
                        said_unknown = why.clone();
                    }
                }
                if pause(&mut ctrl_c, LOOK_AGAIN).await {
                    return Ok(stopped(cx, d));
                }
            }
            Next::Recover(loss) => {
                if recoveries >= args.max_recoveries {
                    return Err(UserError::msg(format!(
                        "{}, and this run has recovered it {recoveries} time{} already: --max-recoveries {} is reached, so it is not recovered again. Nothing is taken down: `anycloud apply --target {whole}` brings it back from its checkpoint, `anycloud destroy --target {whole}` takes it down",
                        Loss::describe(loss, d),
                        if recoveries == 1 { "" } else { "s" },
                        args.max_recoveries
                    )));
                }
                let wait = waits.next().unwrap_or(MAX_WAIT);
                let lost_at = Instant::now();
                say(
                    cx,
                    &format!(
                        "\n{}. Recovering it in {} (recovery {} of at most {}).\n",
                        capitalised(&loss.describe(d)),
                        seconds(wait),
                        recoveries + 1,
                        args.max_recoveries
                    ),
                );
                if pause(&mut ctrl_c, wait).await {
                    return Ok(stopped(cx, d));
                }
                match recover(cx, d, made, args, recoveries + 1, lost_at).await? {
                    Recovered::Applied(130) => return Ok(stopped(cx, d)),
                    Recovered::Applied(_) => {
                        recoveries += 1;
                        lock_waits = backing_off(LOOK_AGAIN, MAX_WAIT);
                        // The new job's output from its start.
                        since = None;
                        followed = None;
                        cx.shell.out(&format!(
                            "\nThe output of {d}'s job, on the machine brought back:\n"
                        ));
                    }
                    Recovered::NotNeeded(now) => {
                        say(cx, &format!("deployment {d} is no longer lost ({now}): this run does not recover it\n"));
                    }
                    Recovered::Locked(holder) => {
                        let wait = lock_waits.next().unwrap_or(MAX_WAIT);
                        say(
                            cx,
                            &format!(
                                "deployment {d}: the state is locked by {holder} (another watcher recovering it?); reading it again in {}\n",
                                seconds(wait)
                            ),
                        );
                        if pause(&mut ctrl_c, wait).await {
                            return Ok(stopped(cx, d));
                        }
                    }
                }
            }
        }
    }
}

/// How a recovery attempt went.
enum Recovered {
    /// This run re-applied the deployment, with the apply's exit code (whether or not it
    /// succeeded, the next look tells; 130 is Ctrl-C, which ends the watch).
    Applied(i32),
    /// Under the lock the deployment was not lost any more (another watcher brought it back).
    NotNeeded(String),
    /// Another run holds the state lock (its holder, described).
    Locked(String),
}

/// One recovery of deployment `d`, decided and applied under the state lock.
async fn recover(
    cx: &Context<'_>,
    d: &str,
    made: &mut BTreeSet<String>,
    args: &RunArgs,
    attempt: u32,
    lost_at: Instant,
) -> Result<Recovered, UserError> {
    let whole = format!("deployment.{d}");
    // The config as it is now: a recovery applies what `anycloud apply` would.
    let config = match engine::load_config_for(&cx.cli.config, &cx.providers) {
        Ok(c) => c,
        Err(e) => {
            cx.shell.diagnostics(&e.0);
            say(cx, &format!("recovery {attempt} of deployment {d} could not start: the config does not load\n"));
            return Ok(Recovered::Applied(1));
        }
    };
    let session = match Session::try_open(cx.store.as_ref(), "run --recover").await? {
        Ok(session) => session,
        Err(holder) => return Ok(Recovered::Locked(holder.describe())),
    };
    let loss = match look(cx, &session.state, d, true, true).await {
        Standing::Lost(loss) => loss,
        other => {
            session.close().await;
            return Ok(Recovered::NotNeeded(match other {
                Standing::Up { .. } => "its machine and job are there".to_owned(),
                Standing::TakenDown => "it is no longer in the state".to_owned(),
                Standing::Unknown(why) => format!("it could not be read: {why}"),
                Standing::Busy | Standing::Lost(_) => "it is being applied".to_owned(),
            }));
        }
    };
    let waited = lost_at.elapsed();
    let message = format!(
        "Recovery {attempt} of at most {}: {}; applying {whole} again (a new machine where it was lost, the checkpoint restored).",
        args.max_recoveries,
        loss.describe(d)
    );
    if let Some(stream) = cx.shell.stream() {
        stream.recovery(
            &message,
            d,
            attempt,
            args.max_recoveries,
            loss.name(),
            waited,
        );
    }
    cx.shell.err(&format!("\n{message}\n"));
    let apply = ApplyArgs {
        plan_file: None,
        // `--recover` is the operator's consent to re-apply this deployment unattended.
        auto_approve: true,
        parallelism: args.parallelism,
        refresh: true,
        target: vec![whole.clone()],
        replace: vec![],
        from_scratch: vec![],
    };
    let code = match super::apply::applied_in(cx, &apply, &config, session).await {
        Ok(applied) => {
            made.extend(
                applied
                    .made
                    .into_iter()
                    .filter(|a| targets_match(std::slice::from_ref(&whole), a)),
            );
            if applied.code != 0 {
                say(cx, &format!("recovery {attempt} of deployment {d} did not finish (the apply exited {}); the next look decides\n", applied.code));
            }
            applied.code
        }
        Err(e) => {
            cx.shell.diagnostics(&e.0);
            say(
                cx,
                &format!("recovery {attempt} of deployment {d} failed; the next look decides\n"),
            );
            1
        }
    };
    Ok(Recovered::Applied(code))
}

/// Looks at the machine every [`LOOK_EVERY`] while its job is followed; returns once it is
/// lost or taken down (the caller looks again, as the state is then).
async fn look_while_following(cx: &Context<'_>, state: &State, d: &str) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if matches!(look(cx, state, d, false, false).await, Standing::Lost(_)) {
            return;
        }
        // Taken down, or moved on (a record pending): the state is read again.
        let now = match engine::read_state(cx.store.as_ref()).await {
            Ok(now) => now,
            Err(_) => continue,
        };
        if !now
            .resources
            .contains_key(&format!("deployment.{d}.container"))
        {
            return;
        }
    }
}

/// People's line, and a `log` line of the JSON stream.
fn say(cx: &Context<'_>, text: &str) {
    if let Some(stream) = cx.shell.stream() {
        stream.log(text.trim());
    }
    cx.shell.err(text);
}

/// Sleeps `d`; true if Ctrl-C came first.
async fn pause(
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    d: Duration,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = ctrl_c.as_mut() => true,
    }
}

fn stopped(cx: &Context<'_>, d: &str) -> Watched {
    cx.shell.err(&format!(
        "\nStopped watching; the job goes on unwatched (and is not recovered). `anycloud run {d} --recover` watches it again; `anycloud destroy --target deployment.{d}` uploads its output and stops it.\n"
    ));
    Watched::Exit(130)
}

/// "31s", "2m 5s".
fn seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_job_is_recovered_whatever_its_log_said() {
        for ended in [None, Some(0), Some(137), Some(3)] {
            assert_eq!(
                decide(ended, &Standing::Lost(Loss::MachineGone)),
                Next::Recover(Loss::MachineGone)
            );
        }
        assert_eq!(
            decide(Some(143), &Standing::Lost(Loss::JobInterrupted)),
            Next::Recover(Loss::JobInterrupted)
        );
    }

    #[test]
    fn a_job_that_ended_by_itself_ends_the_run_with_its_code() {
        assert_eq!(
            decide(Some(3), &Standing::Up { ended: true }),
            Next::Finish(3)
        );
        assert_eq!(
            decide(Some(0), &Standing::Up { ended: true }),
            Next::Finish(0)
        );
        // Ended, then taken down by another watcher's end: still its code.
        assert_eq!(decide(Some(7), &Standing::TakenDown), Next::Finish(7));
        // An apply or a read under way does not hide an exit of the job's own...
        assert_eq!(decide(Some(2), &Standing::Busy), Next::Finish(2));
        assert_eq!(
            decide(Some(2), &Standing::Unknown("x".into())),
            Next::Finish(2)
        );
        // ...but a kill from outside may be the machine going: look until it can be told.
        assert_eq!(decide(Some(143), &Standing::Busy), Next::Wait);
        assert_eq!(
            decide(Some(137), &Standing::Unknown("x".into())),
            Next::Wait
        );
    }

    #[test]
    fn a_job_still_there_is_followed_and_one_destroyed_meanwhile_stops_the_watch() {
        assert_eq!(decide(None, &Standing::Up { ended: false }), Next::Follow);
        // A killed job its machine started again is followed on.
        assert_eq!(
            decide(Some(137), &Standing::Up { ended: false }),
            Next::Follow
        );
        assert_eq!(decide(None, &Standing::Up { ended: true }), Next::Follow);
        assert_eq!(decide(None, &Standing::TakenDown), Next::Stop);
        assert_eq!(decide(None, &Standing::Busy), Next::Wait);
    }

    #[test]
    fn each_loss_has_a_stream_name_and_a_sentence_naming_the_deployment() {
        for (loss, name) in [
            (Loss::MachineGone, "machine-gone"),
            (Loss::JobInterrupted, "job-interrupted"),
            (Loss::Unfinished, "unfinished"),
        ] {
            assert_eq!(loss.name(), name);
            assert!(loss.describe("train").contains("deployment train"));
        }
        assert_eq!(capitalised("the machine"), "The machine");
        assert_eq!(seconds(Duration::from_millis(1500)), "1s");
        assert_eq!(seconds(Duration::from_secs(125)), "2m 5s");
    }
}
