//! `vm_init`: Docker, supervisord and rclone installed where missing, the deployment's
//! directories made, its private supervisord running.

use anycloud_provider::{attr_str, Attrs, Result};
use serde_json::json;

use super::{run, upload, HostContext, KindPlan};
use crate::layout::VmLayout;
use crate::transport::Host;
use crate::{render, scripts};

pub(super) fn plan(ctx: &HostContext) -> KindPlan {
    let conf = render::supervisord_conf(&ctx.layout, &format!("anycloud-{}", ctx.deployment));
    let mut p = KindPlan::default();
    p.attrs.insert("supervisord_conf".into(), json!(conf));
    p
}

pub(super) async fn apply(host: &dyn Host, layout: &VmLayout, attrs: &Attrs) -> Result<()> {
    run(host, &scripts::vm_init(layout), "VM init").await?;
    upload(
        host,
        &layout.supervisord_conf(),
        attr_str(attrs, "supervisord_conf")?,
        0o644,
    )
    .await?;
    run(
        host,
        &scripts::supervisord_restart(layout),
        "starting supervisord",
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(host: &dyn Host, layout: &VmLayout) -> Result<()> {
    run(
        host,
        &scripts::supervisord_stop(layout),
        "stopping supervisord",
    )
    .await?;
    Ok(())
}
