//! `anycloud apply` (of the config, or of a saved plan) and `anycloud destroy`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::engine::{self, Session, UserError};
use crate::plan::{Action, Plan, PlanOptions};
use crate::progress::Progress;
use crate::render;

use super::plan::plan_verbosely;
use super::{confirm, read_plan_file, ApplyArgs, Context, DestroyArgs};

pub(super) async fn apply(cx: &Context<'_>, args: &ApplyArgs) -> Result<i32, UserError> {
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
            return Ok(0);
        }
        if let Err(e) = engine::load_config_for(&cx.cli.config, &cx.providers) {
            session.close().await;
            return Err(e);
        }
        // What a plan hands the providers before it plans, an apply of a saved plan does too
        // (a create cut short before its tag finds its object this state's by it).
        crate::plan::recall(&session.state, &cx.providers);
        if let Some(stream) = cx.shell.stream() {
            stream.plan(&plan, if plan.destroy { "destroy" } else { "apply" });
        }
        let code = execute(cx, &plan, session, args.parallelism).await?;
        return Ok(with_unread(cx, &plan, code));
    }
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let session = cx.session("apply").await?;
    let scratch = match from_scratch(cx, &config, &session.state, &args.from_scratch) {
        Ok(s) => s,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    let mut replace = super::filter::as_addresses(&args.replace);
    replace.extend(scratch.iter().cloned());
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: &super::filter::as_addresses(&args.target),
        destroy: false,
        replace: &replace,
    };
    let plan = match plan_verbosely(cx, &config, &session.state, &opts).await {
        Ok((_, plan)) => plan,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
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
        cx.shell
            .out(&render::human_with(&plan, cx.shell.stdout_styled()));
    }
    if !plan.has_changes() {
        session.close().await;
        nothing_done(cx, "apply");
        return Ok(with_unread(cx, &plan, 0));
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
            return Ok(1);
        }
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    }
    cx.shell.out("\n");
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
    let code = execute(cx, &plan, session, args.parallelism).await?;
    Ok(with_unread(cx, &plan, code))
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
    let opts = PlanOptions {
        refresh: false,
        targets: &super::filter::as_addresses(&args.target),
        destroy: true,
        replace: &[],
    };
    let plan = match plan_verbosely(cx, &config, &session.state, &opts).await {
        Ok((_, plan)) => plan,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    if let Some(stream) = cx.shell.stream() {
        stream.plan(&plan, "destroy");
    }
    cx.shell
        .out(&render::human_with(&plan, cx.shell.stdout_styled()));
    if !plan.has_changes() {
        session.close().await;
        nothing_done(cx, "destroy");
        return Ok(0);
    }
    match confirm(
        &cx.shell,
        args.auto_approve,
        "destroy all these resources (buckets and their data are kept)",
    ) {
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
    cx.shell.out("\n");
    execute(cx, &plan, session, args.parallelism).await
}

async fn execute(
    cx: &Context<'_>,
    plan: &Plan,
    session: Session<'_>,
    parallelism: usize,
) -> Result<i32, UserError> {
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
    let (outcome, _) = ran.map_err(|e| UserError::msg(format!("{e:#}")))?;
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
        return Ok(130);
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
        return Ok(1);
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
    cx.shell.out(&if plan.destroy {
        format!("\nDestroy complete! Resources: {destroyed} destroyed{forgotten}.\n")
    } else {
        format!(
            "\nApply complete! Resources: {} added, {} changed, {} replaced, {destroyed} destroyed{forgotten}.\n",
            s.add, s.change, s.replace
        )
    });
    Ok(0)
}
