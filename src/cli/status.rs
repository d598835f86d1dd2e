//! `anycloud status`: per deployment, what exists, and the live facts its provider observes
//! (a container's state, upload programs, when an upload last ran).

use crate::engine::{self, UserError};

use super::Context;

pub(super) async fn status(cx: &Context<'_>) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let state = engine::read_state(cx.store.as_ref()).await?;
    let graph = crate::graph::compile(&config, &cx.providers);
    let desired = crate::plan::desired(&graph, &cx.providers).map_err(UserError)?;
    let current = crate::plan::refresh(&graph, &desired, &state, &cx.providers)
        .await
        .map_err(UserError)?;
    let facts = crate::plan::observe(&state, &cx.providers).await;
    let mut text = String::new();
    let order = graph.order();
    for d in &config.deployments {
        text.push_str(&format!(
            "deployment {} ({} {}):\n",
            d.id, d.provider, d.region
        ));
        let prefix = format!("deployment.{}.", d.id);
        for addr in order.iter().filter(|a| a.starts_with(&prefix)) {
            let shown = match (state.resources.get(addr), current.get(addr)) {
                (None, _) => "not created",
                (Some(_), Some(Some(_))) => "present",
                (Some(_), _) => "MISSING",
            };
            let live: Vec<String> = facts
                .get(addr.as_str())
                .map(|f| f.iter().map(|(k, v)| format!("{k}: {v}")).collect())
                .unwrap_or_default();
            let shown = if live.is_empty() {
                shown.to_owned()
            } else {
                format!("{shown}; {}", live.join(", "))
            };
            text.push_str(&format!("  {:<26} {shown}\n", &addr[prefix.len()..]));
        }
    }
    cx.shell.out(&text);
    Ok(0)
}
