//! `anycloud bucket ls|upload|download`: fill an input bucket before a run, fetch results
//! after, through the provider of the deployments that use the bucket (the default provider
//! for a bucket no deployment names yet).

use std::io::IsTerminal;

use anycloud_provider::{BucketAccess, DeploymentSpec, Transfer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{self, UserError};

use super::{BucketCommand, Context};

pub(super) async fn bucket(cx: &Context<'_>, cmd: &BucketCommand) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cx.cli.config, &cx.providers)?;
    let name = match cmd {
        BucketCommand::Ls { name }
        | BucketCommand::Upload { name, .. }
        | BucketCommand::Download { name, .. } => name,
    };
    let user: Option<&DeploymentSpec> = config
        .deployments
        .iter()
        .map(|d| &**d)
        .find(|d| d.buckets.values().any(|b| &b.name == name));
    let provider_name = user
        .map(|d| d.provider.as_str())
        .unwrap_or(cx.providers.default_name());
    let provider = cx.providers.get(provider_name).map_err(UserError::msg)?;
    // Checked as in a config: a name no bucket can have never reaches a path or an API.
    crate::config::check_bucket_name(name, provider).map_err(UserError::msg)?;
    let access: &dyn BucketAccess = provider.buckets().ok_or_else(|| {
        UserError::msg(format!(
            "bucket '{name}' belongs to provider {provider_name}, whose buckets this build cannot reach from here yet; use that cloud's own tools"
        ))
    })?;
    let failed = |e: anycloud_provider::ProviderError| UserError::msg(e.message);
    match cmd {
        BucketCommand::Ls { name } => {
            let files = access.list(name, user).await.map_err(failed)?;
            cx.shell.out(
                &files
                    .iter()
                    .map(|(f, n)| format!("{n:>12}  {f}\n"))
                    .collect::<String>(),
            );
        }
        BucketCommand::Upload { name, source } => {
            let bar = transfer_bar(cx);
            let n = access
                .upload(name, user, source, &watched(&bar))
                .await
                .map_err(failed);
            bar.finish_and_clear();
            let n = n?;
            cx.shell
                .out(&format!("Uploaded {n} file(s) to bucket '{name}'.\n"));
        }
        BucketCommand::Download { name, dest } => {
            let bar = transfer_bar(cx);
            let n = access
                .download(name, user, dest, &watched(&bar))
                .await
                .map_err(failed);
            bar.finish_and_clear();
            let n = n?;
            cx.shell.out(&format!(
                "Downloaded {n} file(s) from bucket '{name}' to {}.\n",
                dest.display()
            ));
        }
    }
    Ok(0)
}

/// A bar of bytes on a terminal's stderr (large transfers take minutes); nothing otherwise.
fn transfer_bar(cx: &Context<'_>) -> ProgressBar {
    if !std::io::stderr().is_terminal() || cx.shell.quiet() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar
}

fn watched(bar: &ProgressBar) -> Transfer {
    let (total, done) = (bar.clone(), bar.clone());
    Transfer::new(
        move |bytes| total.set_length(bytes),
        move |bytes| done.set_position(bytes),
    )
}
