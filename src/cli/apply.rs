//! `anycloud apply` (of the config, or of a saved plan) and `anycloud destroy`.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anycloud_provider::Kind;
use anycloud_state::State;

use crate::engine::{self, Session, UserError};
use crate::escape::visible;
use crate::plan::{Action, EndedJob, Plan, PlanOptions};
use crate::progress::Progress;
use crate::render;

use super::plan::plan_verbosely;
use super::{confirm, read_plan_file, ApplyArgs, Context, DestroyArgs};

pub(super) async fn apply(cx: &Context<'_>, args: &ApplyArgs) -> Result<i32, UserError> {
    Ok(applied(cx, args).await?.code)
}

/// What an apply did, for `anycloud run`, which takes down only what its own apply made.
pub(super) struct Applied {
    pub code: i32,
    /// What this apply made: created, or replaced by a new one.
    pub made: BTreeSet<String>,
    /// The ended jobs the plan left as they were (they ended before this apply).
    pub ended: Vec<EndedJob>,
}

impl Applied {
    fn nothing(code: i32) -> Applied {
        Applied {
            code,
            made: BTreeSet::new(),
            ended: vec![],
        }
    }
}

pub(super) async fn applied(cx: &Context<'_>, args: &ApplyArgs) -> Result<Applied, UserError> {
    if args.plan_file.is_some() && !args.from_scratch.is_empty() {
        return Err(UserError::msg(
            "--from-scratch cannot go with a saved plan: it deletes a checkpoint, which the plan did not review. Apply the config with it",
        ));
    }
    if let Some(path) = &args.plan_file {
        let plan = read_plan_file(path)?;
        let session = cx.session("apply").await?;
        let stale = if plan.lineage != session.state.lineage || plan.serial != session.state.serial
        {
            Some(format!(
                "the saved plan {} is stale: it was made against state serial {} (lineage {}), and the state is now at serial {} (lineage {}). Run `anycloud plan --out {}` again",
                path.display(), plan.serial, plan.lineage, session.state.serial, session.state.lineage, path.display()
            ))
        } else {
            match std::fs::read(&cx.cli.config) {
                Err(e) => Some(format!("cannot read {}: {e}", cx.cli.config.display())),
                Ok(bytes) if crate::config::digest(&bytes) != plan.config_digest => Some(format!(
                    "the saved plan {} is stale: {} changed since it was made. Run `anycloud plan --out {}` again",
                    path.display(), cx.cli.config.display(), path.display()
                )),
                Ok(_) => None,
            }
        };
        if let Some(why) = stale {
            session.close().await;
            return Err(UserError::msg(why));
        }
        if !plan.has_changes() {
            session.close().await;
            cx.shell
                .out("No changes. The infrastructure matches the configuration.\n");
            nothing_done(cx, if plan.destroy { "destroy" } else { "apply" });
            return Ok(Applied::nothing(0));
        }
        let again = match plan_again(cx, &plan, &session.state).await {
            Ok(again) => again,
            Err(e) => {
                session.close().await;
                return Err(e);
            }
        };
        let differences = crate::plan::saved::differences(&plan, &again);
        if !differences.is_empty() {
            session.close().await;
            return Err(UserError::msg(format!(
                "the saved plan {} is not what the config and the state give now, so nothing is applied (a plan file is applied only as anycloud makes it: edited, or made before what runs changed, it is refused):\n  {}\nRun `anycloud plan --out {}` again and review that",
                path.display(),
                differences.join("\n  "),
                path.display()
            )));
        }
        if let Some(stream) = cx.shell.stream() {
            stream.plan(&again, if again.destroy { "destroy" } else { "apply" });
        }
        // A log of what ran: the file's options (targets, -replace, -destroy) were its
        // maker's choice.
        if !cx.shell.quiet() {
            cx.shell.out(&render::human_opts(
                &again,
                cx.shell.stdout_styled(),
                cx.shell.verbose(),
            ));
            cx.shell.out("\n");
        }
        // What runs is what anycloud made just now, never the file's attributes.
        let (code, done) = execute(cx, &again, session, args.parallelism).await?;
        return Ok(made_by(cx, &again, code, &done));
    }
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let session = cx.session("apply").await?;
    applied_in(cx, args, &config, session).await
}

/// An apply of the config under a session already open (`run --recover` takes the lock
/// itself, and decides under it whether a recovery is still needed).
pub(super) async fn applied_in(
    cx: &Context<'_>,
    args: &ApplyArgs,
    config: &crate::config::Config,
    session: Session<'_>,
) -> Result<Applied, UserError> {
    let scratch = match from_scratch(cx, config, &session.state, &args.from_scratch) {
        Ok(s) => s,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    let mut replace = super::filter::as_addresses(&args.replace, &config.sweeps);
    replace.extend(scratch.iter().cloned());
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: &super::filter::as_addresses(&args.target, &config.sweeps),
        destroy: false,
        replace: &replace,
    };
    let mut plan = match plan_verbosely(cx, config, &session.state, &opts).await {
        Ok((_, plan)) => plan,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    plan.from_scratch = scratch.clone();
    // A checkpoint is emptied only for a job this apply runs again: not for one that
    // `--target` leaves out, or whose machine could not be read.
    if let Some(missing) = scratch.iter().find(|a| {
        !plan
            .changes
            .iter()
            .any(|c| &c.address == *a && matches!(c.action, Action::Replace | Action::Create))
    }) {
        session.close().await;
        return Err(UserError::msg(format!(
            "--from-scratch: this apply does not run {missing} again (--target leaves it out, or its machine could not be read), so its checkpoint is left as it is"
        )));
    }
    if let Some(stream) = cx.shell.stream() {
        stream.plan(&plan, "apply");
    }
    if !cx.shell.quiet() || !plan.has_changes() {
        cx.shell.out(&render::human_opts(
            &plan,
            cx.shell.stdout_styled(),
            cx.shell.verbose(),
        ));
    }
    if !plan.has_changes() {
        session.close().await;
        nothing_done(cx, "apply");
        return Ok(Applied {
            code: with_unread(cx, &plan, 0),
            made: BTreeSet::new(),
            ended: plan.jobs.clone(),
        });
    }
    let what = if scratch.is_empty() {
        "perform these actions".to_owned()
    } else {
        let names: Vec<&str> = scratch
            .iter()
            .filter_map(|a| super::filter::deployment_of(a))
            .collect();
        cx.shell.out(&format!(
            "\n--from-scratch: the checkpoint of deployment {} is deleted, on the machine and in its bucket, and the job starts again from nothing. This cannot be undone.\n",
            names.join(", ")
        ));
        "delete those checkpoints and perform these actions".to_owned()
    };
    match confirm(&cx.shell, args.auto_approve, &what) {
        Ok(true) => {}
        Ok(false) => {
            session.close().await;
            cx.shell.out("Apply cancelled.\n");
            return Ok(Applied::nothing(1));
        }
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    }
    // A blank line between the plan and the run's events; -q prints neither.
    if !cx.shell.quiet() {
        cx.shell.out("\n");
    }
    for address in &scratch {
        match crate::plan::clear_checkpoint(&session.state, &cx.providers, address).await {
            Ok(cleared) => cx.shell.out(&format!(
                "{address}: job stopped; its checkpoint ({}) emptied\n",
                cleared.remote
            )),
            Err(e) => {
                session.close().await;
                return Err(UserError::msg(e));
            }
        }
    }
    let (code, done) = execute(cx, &plan, session, args.parallelism).await?;
    Ok(made_by(cx, &plan, code, &done))
}

/// What a finished apply made of its plan: the creates and replacements that finished.
fn made_by(cx: &Context<'_>, plan: &Plan, code: i32, done: &[String]) -> Applied {
    let done: BTreeSet<&str> = done.iter().map(String::as_str).collect();
    Applied {
        code: with_unread(cx, plan, code),
        made: plan
            .changes
            .iter()
            // A read that put a new record in the state (an input bucket this run read first)
            // is this run's too: taking it down only forgets the record.
            .filter(|c| match c.action {
                Action::Create | Action::Replace => true,
                Action::Read => c.before.is_none(),
                _ => false,
            })
            .filter(|c| done.contains(c.address.as_str()))
            .map(|c| c.address.clone())
            .collect(),
        ended: plan.jobs.clone(),
    }
}

/// The containers of the deployments `--from-scratch` names: each must be in the config
/// with a checkpoint, and its job must have run (a first run starts from nothing anyway).
fn from_scratch(
    cx: &Context<'_>,
    config: &crate::config::Config,
    state: &anycloud_state::State,
    names: &[String],
) -> Result<Vec<String>, UserError> {
    let mut containers = Vec::new();
    for name in names {
        let Some(spec) = config.deployments.iter().find(|d| &d.id == name) else {
            let ids: Vec<String> = config.deployments.iter().map(|d| d.id.clone()).collect();
            return Err(UserError::msg(format!(
                "--from-scratch: {} has no deployment '{name}'{}",
                cx.cli.config.display(),
                super::filter::nearest(name, &ids)
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default()
            )));
        };
        if spec
            .bucket(anycloud_provider::BucketRole::Checkpoint)
            .is_none()
        {
            return Err(UserError::msg(format!(
                "--from-scratch: deployment {name} has no checkpoint (buckets.checkpoint) to start over from; `-replace deployment.{name}.container` runs its job again"
            )));
        }
        let container = format!("deployment.{name}.container");
        if !state.resources.contains_key(&container) {
            return Err(UserError::msg(format!(
                "--from-scratch: the job of deployment {name} has not run yet; a plain apply starts it from its checkpoint bucket as it is"
            )));
        }
        containers.push(container);
    }
    Ok(containers)
}

/// A run with nothing to do still ends its stream with an outcome.
fn nothing_done(cx: &Context<'_>, verb: &str) {
    if let Some(stream) = cx.shell.stream() {
        stream.outcome(verb, "complete", &[], &[], &[]);
    }
}

/// A deployment left out of the plan (its machine did not answer) fails the run after the
/// others are applied.
/// The saved plan made again, with its own options, from the config and the state it was
/// made against: what apply executes in its place.
async fn plan_again(
    cx: &Context<'_>,
    saved: &Plan,
    state: &anycloud_state::State,
) -> Result<Plan, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let opts = PlanOptions {
        refresh: saved.refreshed,
        targets: &saved.targets,
        destroy: saved.destroy,
        replace: &saved.replace,
    };
    let (_, again) = plan_verbosely(cx, &config, state, &opts).await?;
    Ok(again)
}

fn with_unread(cx: &Context<'_>, plan: &Plan, code: i32) -> i32 {
    if super::report_unread(&cx.shell, plan) && code == 0 {
        1
    } else {
        code
    }
}

pub(super) async fn destroy(cx: &Context<'_>, args: &DestroyArgs) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let session = cx.session("destroy").await?;
    let targets = super::filter::as_addresses(&args.target, &config.sweeps);
    destroy_in(
        cx,
        &config,
        session,
        &targets,
        None,
        args.auto_approve,
        args.parallelism,
    )
    .await
}

/// What `anycloud run` destroys once its job has ended: of what its own apply `made`, all
/// that nothing it leaves needs. Anything else is left as it is: the run did not make it,
/// and taking it down is `anycloud destroy`'s, which asks. Returns the exit code and what
/// was to go. It waits up to `lock_timeout` for the state's lock.
pub(super) async fn destroy_made(
    cx: &Context<'_>,
    made: &BTreeSet<String>,
    parallelism: usize,
    lock_timeout: std::time::Duration,
) -> Result<(i32, BTreeSet<String>), UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let session = Session::open(cx.store.as_ref(), "destroy", lock_timeout).await?;
    // Decided under the lock, on the state the destroy plans from.
    let goes = owned(&session.state, made);
    if goes.is_empty() {
        session.close().await;
        return Ok((0, goes));
    }
    let targets: Vec<String> = goes.iter().cloned().collect();
    // Only what this run made, which it takes down without asking once its job is done.
    let code = destroy_in(
        cx,
        &config,
        session,
        &targets,
        Some(&goes),
        true,
        parallelism,
    )
    .await?;
    Ok((code, goes))
}

/// Of `made`, what may go while the rest of `state` stays: not what a resource that stays
/// depends on (a role made before the run naming a bucket the run made), nor, in turn,
/// what that one needs.
fn owned(state: &State, made: &BTreeSet<String>) -> BTreeSet<String> {
    let mut goes: BTreeSet<String> = made
        .iter()
        .filter(|a| state.resources.contains_key(*a))
        .cloned()
        .collect();
    loop {
        let needed: BTreeSet<String> = state
            .resources
            .iter()
            .filter(|(a, _)| !goes.contains(*a))
            .flat_map(|(_, r)| &r.dependencies)
            .filter(|d| goes.contains(*d))
            .cloned()
            .collect();
        if needed.is_empty() {
            return goes;
        }
        goes.retain(|a| !needed.contains(a));
    }
}

/// Plans and runs a destroy of `targets` (everything, if none); with `only`, refuses a plan
/// that would take anything else.
async fn destroy_in(
    cx: &Context<'_>,
    config: &crate::config::Config,
    session: Session<'_>,
    targets: &[String],
    only: Option<&BTreeSet<String>>,
    auto_approve: bool,
    parallelism: usize,
) -> Result<i32, UserError> {
    let opts = PlanOptions {
        refresh: false,
        targets,
        destroy: true,
        replace: &[],
    };
    let plan = match plan_verbosely(cx, config, &session.state, &opts).await {
        Ok((_, plan)) => plan,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    // A target takes what depends on it along; `owned` leaves out whatever would bring in
    // a resource the run did not make, so this only guards that promise.
    if let Some(stranger) = only.and_then(|only| plan.active().find(|c| !only.contains(&c.address)))
    {
        session.close().await;
        return Err(UserError::msg(format!(
            "not destroying: {} would go too, and this run did not make it",
            stranger.address
        )));
    }
    if let Some(stream) = cx.shell.stream() {
        stream.plan(&plan, "destroy");
    }
    // As apply: `-q` leaves out the plan, except to say there is nothing to do.
    if !cx.shell.quiet() || !plan.has_changes() {
        cx.shell.out(&render::human_opts(
            &plan,
            cx.shell.stdout_styled(),
            cx.shell.verbose(),
        ));
    }
    if !plan.has_changes() {
        session.close().await;
        nothing_done(cx, "destroy");
        return Ok(0);
    }
    match confirm(&cx.shell, auto_approve, &destroy_question(&plan)) {
        Ok(true) => {}
        Ok(false) => {
            session.close().await;
            cx.shell.out("Destroy cancelled.\n");
            return Ok(1);
        }
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    }
    if !cx.shell.quiet() {
        cx.shell.out("\n");
    }
    Ok(execute(cx, &plan, session, parallelism).await?.0)
}

/// The question before a destroy, true to its plan: most buckets are only forgotten, but a
/// checkpoint bucket this state made is deleted with its data.
fn destroy_question(plan: &Plan) -> String {
    let deleted: Vec<&str> = plan
        .active()
        .filter(|c| c.action == Action::Delete && c.kind == Kind::Bucket && !c.keep_on_destroy)
        .map(|c| c.address.as_str())
        .collect();
    if deleted.is_empty() {
        return "destroy all these resources (buckets and their data are kept)".to_owned();
    }
    let kept = plan
        .active()
        .any(|c| c.action == Action::Delete && c.keep_on_destroy);
    format!(
        "destroy all these resources, deleting {} with {} data if this state made {}{}",
        deleted.join(", "),
        if deleted.len() == 1 { "its" } else { "their" },
        if deleted.len() == 1 { "it" } else { "them" },
        if kept {
            " (the other buckets and their data are kept)"
        } else {
            ""
        }
    )
}

async fn execute(
    cx: &Context<'_>,
    plan: &Plan,
    session: Session<'_>,
    parallelism: usize,
) -> Result<(i32, Vec<String>), UserError> {
    // A destroy (or a saved `plan -destroy`) is continued by destroy, not by apply, which
    // would make everything again.
    let verb = if plan.destroy { "destroy" } else { "apply" };
    let progress = Progress::new(&cx.shell);
    let calls_before = cx.providers.remote_calls();
    let connections_before = cx.providers.connections();
    let interrupt = Arc::new(AtomicBool::new(false));
    let watch = crate::apply::watch_interrupt(interrupt.clone(), progress.clone());
    let Session {
        store,
        state,
        version,
    } = session;
    let ran = crate::apply::apply(
        plan,
        state,
        store,
        &version,
        &cx.providers,
        parallelism,
        &progress,
        interrupt,
    )
    .await;
    // A command that goes on after the run (`anycloud run` follows the job) hears its own
    // Ctrl-C.
    watch.abort();
    let _ = store.unlock().await;
    for (provider, calls) in cx.providers.remote_calls() {
        let calls = calls - calls_before.get(provider).copied().unwrap_or(0);
        let connections = cx
            .providers
            .connections()
            .get(provider)
            .copied()
            .unwrap_or(0)
            - connections_before.get(provider).copied().unwrap_or(0);
        if calls > 0 {
            cx.shell.detail(&format!(
                "apply: {provider}: {calls} remote calls over {connections} new connections"
            ));
        }
    }
    let (outcome, state) = ran.map_err(|e| UserError::msg(format!("{e:#}")))?;
    // Said before the outcome: a job's failure is its own, whatever the apply's outcome.
    let ended = failed_jobs(&state, &outcome.done);
    if !ended.is_empty() {
        cx.shell
            .err(&ended.iter().map(|j| j.said()).collect::<String>());
    }
    if let Some(stream) = cx.shell.stream() {
        for job in &ended {
            stream.diagnostic("warning", &job.diagnostic());
        }
    }
    if let Some(stream) = cx.shell.stream() {
        let status = if outcome.interrupted {
            "interrupted"
        } else if !outcome.failed.is_empty() || !outcome.skipped.is_empty() {
            "failed"
        } else {
            "complete"
        };
        stream.outcome(
            verb,
            status,
            &outcome.done,
            &outcome.failed,
            &outcome.skipped,
        );
    }
    if outcome.interrupted {
        cx.shell.out(&format!(
            "\nInterrupted: {} operation(s) finished, the rest were not started. The state is saved; run {verb} again to continue.\n",
            outcome.done.len()
        ));
        return Ok((130, outcome.done));
    }
    if !outcome.failed.is_empty() || !outcome.skipped.is_empty() {
        let mut msg = format!(
            "\n{} failed: {} finished, {} failed, {} skipped.\n",
            if plan.destroy { "Destroy" } else { "Apply" },
            outcome.done.len(),
            outcome.failed.len(),
            outcome.skipped.len()
        );
        for (addr, why) in &outcome.failed {
            msg.push_str(&format!("error: {addr}: {why}\n"));
        }
        cx.shell.err(&msg);
        return Ok((1, outcome.done));
    }
    let s = &plan.summary;
    // A kept bucket is only forgotten: saying "destroyed" would send a user looking for
    // lost data, or leave them thinking it is gone.
    let forgotten = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && c.keep_on_destroy)
        .count();
    let destroyed = s.destroy - forgotten;
    let forgotten = match forgotten {
        0 => String::new(),
        n => format!(", {n} forgotten (buckets kept with their data)"),
    };
    let lead = if cx.shell.quiet() { "" } else { "\n" };
    cx.shell.out(&if plan.destroy {
        format!("{lead}Destroy complete! Resources: {destroyed} destroyed{forgotten}.\n")
    } else {
        format!(
            "{lead}Apply complete! Resources: {} added, {} changed, {} replaced, {destroyed} destroyed{forgotten}.\n",
            s.add, s.change, s.replace
        )
    });
    Ok((0, outcome.done))
}

/// The jobs this apply started that exited non-zero while it watched them (their container
/// records how, as a refresh would): a job's failure is the job's, not the apply's, so the
/// apply goes on and succeeds, and says so here, with the job's last lines.
fn failed_jobs(state: &State, done: &[String]) -> Vec<EndedJob> {
    done.iter()
        .filter_map(|address| {
            state
                .resources
                .get(address)
                .and_then(|r| EndedJob::of(address, &r.attributes))
                .filter(|j| j.state == "failed")
        })
        .collect()
}

impl EndedJob {
    /// The warning on a terminal: how it ended, then its last lines.
    fn said(&self) -> String {
        let mut said = format!("\nWarning: {}\n", visible(&self.describe()));
        for line in &self.last_lines {
            said.push_str(&format!("    | {}\n", visible(line)));
        }
        said
    }

    /// The same for a machine reading the JSON stream: its address, the sentence, and its
    /// last lines as the help.
    fn diagnostic(&self) -> anycloud_provider::Diagnostic {
        let d = anycloud_provider::Diagnostic::of(self.address.clone(), self.describe());
        if self.last_lines.is_empty() {
            d
        } else {
            d.with_help(self.last_lines.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use anycloud_state::Resource;

    use super::*;

    fn state(resources: &[(&str, &[&str])]) -> State {
        let mut s = State::new();
        for (address, deps) in resources {
            s.resources.insert(
                (*address).to_owned(),
                Resource {
                    kind: "container".into(),
                    provider: "local".into(),
                    attributes: Default::default(),
                    private: serde_json::Value::Null,
                    keep_on_destroy: false,
                    dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
                    pending: None,
                },
            );
        }
        s
    }

    fn set(addresses: &[&str]) -> BTreeSet<String> {
        addresses.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn what_a_run_made_goes_unless_something_it_leaves_needs_it() {
        let s = state(&[
            ("vm", &[]),
            ("bucket.checkpoint", &[]),
            ("bucket.extra", &[]),
            ("role", &["bucket.checkpoint", "bucket.extra"]),
            ("sync", &["bucket.extra"]),
            ("container", &["vm", "role"]),
        ]);
        // The run made a new container on a machine that was there: only it goes.
        assert_eq!(owned(&s, &set(&["container"])), set(&["container"]));
        // A bucket the run made that a role from before names stays, and so does what it
        // needs in turn; what no stayer needs goes. A made address no longer recorded is
        // nothing to destroy.
        assert_eq!(
            owned(&s, &set(&["bucket.extra", "sync", "container", "gone"])),
            set(&["container", "sync"])
        );
        // A run that made everything takes everything.
        let all = set(&[
            "vm",
            "bucket.checkpoint",
            "bucket.extra",
            "role",
            "sync",
            "container",
        ]);
        assert_eq!(owned(&s, &all), all);
        assert!(owned(&s, &BTreeSet::new()).is_empty());
    }

    fn delete(address: &str, kind: Kind, keep_on_destroy: bool) -> crate::plan::Change {
        crate::plan::Change {
            address: address.into(),
            kind,
            provider: "cloud".into(),
            action: Action::Delete,
            reason: None,
            before: Some(Default::default()),
            after: None,
            private: None,
            keep_on_destroy,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        }
    }

    fn destroy_plan(changes: Vec<crate::plan::Change>) -> Plan {
        Plan {
            refreshed: false,
            destroy: true,
            ..Plan::of_changes(changes)
        }
    }

    #[test]
    fn the_destroy_question_says_which_bucket_goes_with_its_data() {
        let kept = destroy_plan(vec![
            delete("deployment.a.vm", Kind::Vm, false),
            delete("deployment.a.bucket.output", Kind::Bucket, true),
        ]);
        assert_eq!(
            destroy_question(&kept),
            "destroy all these resources (buckets and their data are kept)"
        );
        let checkpoint = destroy_plan(vec![
            delete("deployment.a.vm", Kind::Vm, false),
            delete("deployment.a.bucket.output", Kind::Bucket, true),
            delete("deployment.a.bucket.checkpoint", Kind::Bucket, false),
        ]);
        assert_eq!(
            destroy_question(&checkpoint),
            "destroy all these resources, deleting deployment.a.bucket.checkpoint with its data if this state made it (the other buckets and their data are kept)"
        );
    }
}
