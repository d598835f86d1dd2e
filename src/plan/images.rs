//! A missing image is found at plan time (issue 25, item 5): each container the plan creates
//! or replaces has its image asked of its provider (this machine's Docker daemon for the
//! local cloud), once per image. Missing fails the plan, located at the deployment's
//! `container.image`; what could not be told is a warning with the plan.

use std::collections::BTreeMap;
use std::path::Path;

use anycloud_provider::{Diagnostic, ImageCheck, Kind};
use futures::StreamExt;

use super::{Action, Plan};
use crate::graph::Graph;
use crate::registry::Providers;

/// How many images are asked at once: a sweep's deployments mostly share a few images.
const AT_ONCE: usize = 8;

/// The warnings to show with the plan, or the errors that fail it.
pub async fn check(
    config_path: &Path,
    graph: &Graph,
    plan: &Plan,
    providers: &Providers,
) -> Result<Vec<String>, Vec<Diagnostic>> {
    // (provider, image) -> the deployments whose new container runs it.
    let mut wanted: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for change in &plan.changes {
        if change.kind != Kind::Container
            || !matches!(change.action, Action::Create | Action::Replace)
        {
            continue;
        }
        let Some(node) = graph.nodes.get(&change.address) else {
            continue;
        };
        wanted
            .entry((
                node.provider.as_str(),
                node.deployment.container.image.as_str(),
            ))
            .or_default()
            .push(node.deployment.id.as_str());
    }
    let answers: Vec<_> = futures::stream::iter(wanted.iter())
        .map(|((provider, image), ids)| async move {
            let answer = match providers.get(provider) {
                Ok(p) => p.check_image(image).await,
                Err(_) => ImageCheck::Unchecked,
            };
            (ids, answer)
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    for (ids, answer) in answers {
        match answer {
            ImageCheck::Found | ImageCheck::Unchecked => {}
            ImageCheck::Unknown(why) => warnings.push(format!(
                "the image of {} was not checked: {why}",
                deployments(ids)
            )),
            ImageCheck::Missing { message, help } => {
                // One error per image, at the first deployment that runs it: a sweep of
                // thousands on one image is one problem, not thousands.
                let first = ids[0];
                let mut d = crate::config::at_image(
                    config_path,
                    first,
                    format!("{}: {message}", deployments(ids)),
                )
                .with_help(help);
                d.address = Some(format!("deployment.{first}.container"));
                errors.push(d);
            }
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

fn deployments(ids: &[&str]) -> String {
    match ids {
        [one] => format!("deployment {one}"),
        [first, rest @ ..] => format!("deployments {first} and {} more", rest.len()),
        [] => "no deployment".into(),
    }
}
