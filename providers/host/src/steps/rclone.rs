//! `rclone`: its config (cloud-native auth only) written, and the connectivity check, whose
//! tries (`connectivity_check: { retries, retries_sleep }`) also wait out an identity's
//! propagation.

use anycloud_provider::{attr_str, Attrs, DeploymentSpec, Result};
use serde_json::json;

use super::{attr_u64, run, upload, HostContext, KindPlan};
use crate::layout::VmLayout;
use crate::scripts;
use crate::transport::Host;

pub(super) fn plan(spec: &DeploymentSpec, ctx: &HostContext) -> KindPlan {
    let mut p = KindPlan::default();
    let a = &mut p.attrs;
    a.insert("config".into(), json!(ctx.rclone_conf));
    a.insert(
        "config_sha256".into(),
        json!(anycloud_provider::digest::sha256_hex(&ctx.rclone_conf)),
    );
    a.insert("check_target".into(), json!(ctx.check_target));
    a.insert("check_retries".into(), json!(spec.check.retries));
    a.insert(
        "check_retries_sleep_secs".into(),
        json!(spec.check.retries_sleep_secs),
    );
    p
}

pub(super) async fn apply(host: &dyn Host, layout: &VmLayout, attrs: &Attrs) -> Result<()> {
    upload(
        host,
        &layout.rclone_config,
        attr_str(attrs, "config")?,
        0o600,
    )
    .await?;
    let script = scripts::rclone_check(
        layout,
        attr_str(attrs, "check_target")?,
        attr_u64(attrs, "check_retries", 30),
        attr_u64(attrs, "check_retries_sleep_secs", 15),
    );
    run(host, &script, "rclone").await?;
    Ok(())
}
