//! The one-shot downloads: `sync.input` (`rclone sync` of the input bucket, once) and
//! `sync.checkpoint_restore` (`rclone copy` of the checkpoint bucket, once).

use anycloud_provider::{attr_str, Attrs, BucketRole, Kind, Result};
use serde_json::json;

use super::{run, HostContext, KindPlan};
use crate::layout::VmLayout;
use crate::scripts;
use crate::transport::Host;

fn role(kind: Kind) -> BucketRole {
    if kind == Kind::SyncInput {
        BucketRole::Input
    } else {
        BucketRole::Checkpoint
    }
}

pub(super) fn plan(kind: Kind, ctx: &HostContext) -> Result<KindPlan> {
    let role = role(kind);
    let mut p = KindPlan::default();
    p.attrs.insert("source".into(), json!(ctx.remote(role)?));
    p.attrs
        .insert("destination".into(), json!(ctx.layout.mount(role.as_str())));
    p.force_new = vec!["source".into(), "destination".into()];
    Ok(p)
}

pub(super) async fn apply(
    host: &dyn Host,
    kind: Kind,
    layout: &VmLayout,
    attrs: &Attrs,
) -> Result<()> {
    let (verb, log) = if kind == Kind::SyncInput {
        ("sync", "rclone-input.log")
    } else {
        ("copy", "rclone-checkpoint-restore.log")
    };
    let script = scripts::download(
        layout,
        verb,
        attr_str(attrs, "source")?,
        attr_str(attrs, "destination")?,
        log,
    );
    run(host, &script, &format!("rclone {verb}")).await?;
    Ok(())
}
