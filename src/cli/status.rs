//! `anycloud status`: per deployment, what exists, and the live facts its provider observes
//! (a container's state, upload programs, when an upload last ran). Given deployment names,
//! only those are read: a sweep's owner asks about a few runs, not 10,000.

use anycloud_provider::placement::Placement;
use std::collections::BTreeMap;

use crate::engine::{self, UserError};
use crate::escape::visible;

use super::filter::{deployment_of, Filter};
use super::{Context, ListFormat, StatusArgs};

pub(super) async fn status(cx: &Context<'_>, args: &StatusArgs) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let mut state = engine::read_state(cx.store.as_ref()).await?;
    // Before the state is narrowed: a provider keeps names recorded by shared resources.
    crate::plan::recall(&state, &cx.providers);
    let only = Filter::new(&super::filter::with_sweeps(&args.only.only, &config.sweeps));
    let mut graph = crate::graph::compile(&config, &cx.providers);
    if !only.is_all() {
        if !config.deployments.iter().any(|d| only.deployment(&d.id)) {
            return Err(UserError::msg(format!(
                "no deployment of {} matches {}",
                cx.cli.config.display(),
                args.only.only.join(", ")
            )));
        }
        graph = graph.restricted_to(|a| only.address(a));
        state.resources.retain(|a, _| graph.nodes.contains_key(a));
    }
    let desired = crate::plan::desired(&graph, &cx.providers).map_err(UserError)?;
    let current = crate::plan::refresh(&graph, &desired, &state, &cx.providers)
        .await
        .map_err(UserError)?;
    let facts = crate::plan::observe(&state, &cx.providers).await;
    // Each deployment's addresses in graph order, in one pass over the graph.
    let mut by_deployment: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    let order = graph.order();
    for addr in &order {
        if let Some(d) = deployment_of(addr) {
            by_deployment.entry(d).or_default().push(addr);
        }
    }
    let mut text = String::new();
    let mut json = Vec::new();
    for d in config.deployments.iter().filter(|d| only.deployment(&d.id)) {
        let prefix = format!("deployment.{}.", d.id);
        let mut resources = Vec::new();
        for addr in by_deployment.get(d.id.as_str()).into_iter().flatten() {
            if !only.address(addr) {
                continue;
            }
            let shown = match (state.resources.get(*addr), current.found.get(*addr)) {
                (Some(_), _) if current.unreadable.contains_key(*addr) => "UNREACHABLE",
                (None, _) => "not created",
                (Some(_), Some(Some(_))) => "present",
                (Some(_), _) => "MISSING",
            };
            let mut live = facts.get(addr.as_str()).cloned().unwrap_or_default();
            // Where a VM runs when a capacity failover moved it, and why (every cloud
            // records it the same way).
            if let Some(moved) = state
                .resources
                .get(*addr)
                .and_then(|r| Placement::of(&r.attributes))
                .and_then(|p| p.moved())
            {
                live.insert("placement".into(), moved);
            }
            resources.push((&addr[prefix.len()..], *addr, shown, live));
        }
        match args.format {
            ListFormat::Text => {
                text.push_str(&format!(
                    "deployment {} ({} {}):\n",
                    d.id, d.provider, d.region
                ));
                for (name, _, shown, live) in &resources {
                    text.push_str(&line(name, shown, live));
                }
            }
            ListFormat::Json => json.push(serde_json::json!({
                "deployment": d.id,
                "provider": d.provider,
                "region": d.region,
                "resources": resources
                    .iter()
                    .map(|(_, addr, shown, live)| serde_json::json!({
                        "address": addr,
                        "status": shown.to_lowercase(),
                        "facts": live,
                    }))
                    .collect::<Vec<_>>(),
            })),
        }
    }
    if args.format == ListFormat::Json {
        text = serde_json::to_string_pretty(&serde_json::json!({ "deployments": json }))
            .expect("json serialises");
        text.push('\n');
    }
    cx.shell.out(&text);
    Ok(0)
}

/// A resource's line: its status, then what its provider observes. The facts come from the
/// machine (a job's last output among them): their control characters are shown escaped,
/// never sent to the terminal. (`--format json` escapes them as JSON does.)
fn line(name: &str, shown: &str, live: &BTreeMap<String, String>) -> String {
    let text = if live.is_empty() {
        shown.to_string()
    } else {
        let facts: Vec<String> = live
            .iter()
            .map(|(k, v)| format!("{}: {}", visible(k), visible(v)))
            .collect();
        format!("{shown}; {}", facts.join(", "))
    };
    format!("  {name:<26} {text}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's last output, as the local and ssh providers observe it (its lines joined
    /// with ` ⏎ `), reaches the terminal with no escape sequence in it.
    #[test]
    fn a_jobs_last_output_is_shown_escaped() {
        let live = BTreeMap::from([
            ("job".to_owned(), "failed (exit code 3)".to_owned()),
            (
                "last output".to_owned(),
                "\u{1b}]0;pwned\u{7} ⏎ \u{1b}[2J ⏎ ``` ⏎ # injected heading ⏎ <img src=x onerror=alert(1)>\r\u{9b}"
                    .to_owned(),
            ),
        ]);
        let text = line("container", "present", &live);
        assert!(
            !text.trim_end_matches('\n').chars().any(char::is_control),
            "{text:?}"
        );
        assert_eq!(
            text,
            "  container                  present; job: failed (exit code 3), last output: \\u{1b}]0;pwned\\u{7} ⏎ \\u{1b}[2J ⏎ ``` ⏎ # injected heading ⏎ <img src=x onerror=alert(1)>\\u{d}\\u{9b}\n"
        );
    }
}
