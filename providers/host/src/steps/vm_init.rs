//! `vm_init`: Docker, supervisord and rclone installed where missing (and the NVIDIA
//! container toolkit when the job asks for GPUs), the deployment's directories made, its
//! private supervisord running, and the boot script that brings it all back after a reboot
//! (a systemd unit where the host has systemd). Where jobs run on Docker's bridge, their
//! containers are kept from the machine's metadata service ([`scripts::block_metadata`]).

use anycloud_provider::{attr_str, Attrs, DeploymentSpec, Result};
use serde_json::json;

use super::{run, upload, HostContext, KindPlan};
use crate::layout::VmLayout;
use crate::transport::Host;
use crate::{render, scripts};

pub(super) fn plan(spec: &DeploymentSpec, ctx: &HostContext) -> KindPlan {
    let conf = render::supervisord_conf(&ctx.layout, &format!("anycloud-{}", ctx.deployment));
    let mut p = KindPlan::default();
    p.attrs.insert("supervisord_conf".into(), json!(conf));
    p.attrs.insert(
        "boot_script".into(),
        json!(render::boot_script(
            &ctx.layout,
            &ctx.container_name(),
            ctx.bridged()
        )),
    );
    if spec.container.gpus.is_some() {
        p.attrs.insert("gpus".into(), json!(true));
        // nvidia-smi is run in a container of the job's own image: it is pulled anyway.
        p.attrs
            .insert("gpu_check_image".into(), json!(spec.container.image));
    }
    if ctx.bridged() {
        p.attrs.insert("block_metadata".into(), json!(true));
    }
    p
}

pub(super) async fn apply(host: &dyn Host, layout: &VmLayout, attrs: &Attrs) -> Result<()> {
    let flag = |key: &str| attrs.get(key).and_then(|g| g.as_bool()).unwrap_or(false);
    run(
        host,
        &scripts::vm_init(
            layout,
            flag("gpus").then(|| {
                attrs
                    .get("gpu_check_image")
                    .and_then(|i| i.as_str())
                    .unwrap_or("ubuntu")
            }),
            flag("block_metadata"),
        ),
        "VM init",
    )
    .await?;
    upload(
        host,
        &layout.supervisord_conf(),
        attr_str(attrs, "supervisord_conf")?,
        0o644,
    )
    .await?;
    upload(
        host,
        &layout.boot_script(),
        attr_str(attrs, "boot_script")?,
        0o755,
    )
    .await?;
    run(
        host,
        &scripts::supervisord_restart(layout),
        "starting supervisord",
    )
    .await?;
    run(
        host,
        &scripts::boot_install(layout),
        "installing the boot unit",
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
