//! `anycloud plan`.

use crate::engine::{self, UserError};
use crate::graph::Graph;
use crate::plan::{Plan, PlanOptions};
use crate::render;

use super::{write_plan_file, Context, Format, PlanArgs};

pub(super) async fn plan(cx: &Context<'_>, args: &PlanArgs) -> Result<i32, UserError> {
    if args.destroy && !args.replace.is_empty() {
        return Err(UserError::msg(
            "-replace cannot go with -destroy: a destroy replaces nothing (plan the destroy, or the replacement)",
        ));
    }
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    // Without the lock: the state read, nothing written (a read-only role can plan).
    let (session, unlocked) = if args.lock {
        (Some(cx.session("plan").await?), None)
    } else {
        let state = engine::read_settled(cx.store.as_ref(), cx.cli.lock_timeout).await?;
        (None, Some(state))
    };
    let opts = PlanOptions {
        // A destroy's plan is made from the state alone, as `destroy` makes it.
        refresh: args.refresh && !args.destroy,
        targets: &super::filter::as_addresses(&args.target, &config.sweeps),
        destroy: args.destroy,
        replace: &super::filter::as_addresses(&args.replace, &config.sweeps),
    };
    let read = match (&session, &unlocked) {
        (Some(session), _) => &session.state,
        (None, state) => state.as_ref().expect("read without the lock"),
    };
    let made = plan_verbosely(cx, &config, read, &opts).await;
    let state = match session {
        Some(session) => session.close().await,
        None => unlocked.expect("read without the lock"),
    };
    let (graph, plan) = made?;
    if let Some(stream) = cx.shell.stream() {
        stream.plan(&plan, "plan");
    }
    cx.shell.out(&match args.format {
        Format::Human => render::human_opts(&plan, cx.shell.stdout_styled(), cx.shell.verbose()),
        Format::Json => render::json(&plan),
        Format::Markdown => render::markdown(&plan),
    });
    if let Some(path) = &args.out {
        write_plan_file(path, &plan)?;
        if args.format != Format::Json {
            cx.shell.out(&format!(
                "\nSaved the plan to {}. Apply exactly it with: anycloud apply {}\n",
                path.display(),
                path.display()
            ));
        }
    }
    let code = if super::report_unread(&cx.shell, &plan) {
        1
    } else if args.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    };
    // The process exits next: freeing tens of thousands of attribute maps would only delay
    // that (a third of a 1,000-deployment plan's time; see BENCHMARKS.md).
    std::mem::forget((config, state, graph, plan));
    Ok(code)
}

/// Makes the plan, printing where its time went under `-v`.
pub(super) async fn plan_verbosely(
    cx: &Context<'_>,
    config: &crate::config::Config,
    state: &anycloud_state::State,
    opts: &PlanOptions<'_>,
) -> Result<(Graph, Plan), UserError> {
    let (graph, plan, timings) =
        engine::make_plan_timed(config, state, &cx.providers, opts).await?;
    cx.shell.detail(&timings.to_string());
    Ok((graph, plan))
}
