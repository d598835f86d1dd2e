//! An input bucket the refresh found missing: the error points at the config's `input:`
//! (file:line:column) and suggests the nearest bucket that does exist, as its provider lists
//! them (a typo is likelier than a bucket never filled).

use anycloud_provider::diagnostic::{did_you_mean, suggest};
use anycloud_provider::{BucketRole, Diagnostic};

use crate::config::Config;
use crate::graph::{Graph, Mode};
use crate::registry::Providers;

/// `errors` with each missing input bucket's located in the config and given a did-you-mean.
pub async fn locate(
    errors: Vec<Diagnostic>,
    config: &Config,
    graph: &Graph,
    providers: &Providers,
) -> Vec<Diagnostic> {
    let text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let file = config.path.display().to_string();
    let mut out = Vec::with_capacity(errors.len());
    for d in errors {
        let node = d.address.as_deref().and_then(|a| graph.nodes.get(a));
        let Some(node) =
            node.filter(|n| n.mode == Mode::Data && n.bucket == Some(BucketRole::Input))
        else {
            out.push(d);
            continue;
        };
        let deployment = &node.deployment;
        let Some(at) = config.input_at.get(&deployment.id) else {
            out.push(d);
            continue;
        };
        let name = deployment
            .bucket(BucketRole::Input)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        let existing = match providers.get(&node.provider).ok().and_then(|p| p.buckets()) {
            Some(access) => access.names(Some(deployment)).await.unwrap_or_default(),
            None => vec![],
        };
        let nearest = did_you_mean(suggest(&name, existing.iter().map(String::as_str)));
        let help = match (nearest, d.help.clone()) {
            (Some(n), Some(fill)) => Some(format!("{n} If not, {fill}")),
            (n, fill) => n.or(fill),
        };
        // The location replaces the address in the rendering: the message keeps it.
        let address = d.address.clone().unwrap_or_default();
        let mut located = Diagnostic::at(*at, format!("{} ({address})", d.message)).help_opt(help);
        located.address = d.address.clone();
        out.push(located.in_file(&file, &text));
    }
    out
}
