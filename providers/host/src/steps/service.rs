//! The upload programs `rclone-output` and `rclone-checkpoint`: the seed's supervisord
//! programs, uploading every `sync_interval`; removed with a verified last upload.

use anycloud_provider::{attr_str, Attrs, BucketRole, DeploymentSpec, Kind, Result};
use serde_json::json;

use super::{flush, run, upload, HostContext, HostedPrivate, KindPlan};
use crate::layout::VmLayout;
use crate::transport::Host;
use crate::{render, scripts};

/// The program name and the bucket a service kind uploads.
fn service_of(kind: Kind) -> (&'static str, BucketRole) {
    if kind == Kind::ServiceOutput {
        ("rclone-output", BucketRole::Output)
    } else {
        ("rclone-checkpoint", BucketRole::Checkpoint)
    }
}

pub(super) fn plan(kind: Kind, spec: &DeploymentSpec, ctx: &HostContext) -> Result<KindPlan> {
    let (program, role) = service_of(kind);
    let remote = ctx.remote(role)?;
    let interval = spec.sync_interval_secs;
    let text = match role {
        BucketRole::Output => render::output_program(&ctx.layout, remote, interval),
        _ => render::checkpoint_program(&ctx.layout, remote, interval),
    };
    let mut p = KindPlan::default();
    if role == BucketRole::Output {
        p.attrs.insert(
            "keep_script".into(),
            json!(render::output_keep_script(
                &ctx.layout,
                remote,
                &ctx.container_name()
            )),
        );
    }
    p.attrs.insert("program_name".into(), json!(program));
    p.attrs.insert("program".into(), json!(text));
    p.attrs.insert("status".into(), json!("RUNNING"));
    p.flush = Some(vec![(ctx.layout.mount(role.as_str()), remote.clone())]);
    Ok(p)
}

pub(super) async fn apply(host: &dyn Host, layout: &VmLayout, attrs: &Attrs) -> Result<()> {
    let program = attr_str(attrs, "program_name")?;
    if let Some(keep) = attrs.get("keep_script").and_then(|v| v.as_str()) {
        upload(host, &layout.output_keep_script(), keep, 0o755).await?;
    }
    upload(
        host,
        &layout.program_path(program),
        attr_str(attrs, "program")?,
        0o644,
    )
    .await?;
    run(host, &scripts::program_apply(layout, program), program).await?;
    Ok(())
}

pub(super) async fn delete(host: &dyn Host, private: &HostedPrivate, attrs: &Attrs) -> Result<()> {
    let program = attr_str(attrs, "program_name")?;
    run(
        host,
        &scripts::program_remove(&private.layout, program),
        program,
    )
    .await?;
    flush(host, &private.layout, &private.flush).await
}
