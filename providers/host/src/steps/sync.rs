//! The one-shot downloads: `sync.input` (`rclone sync` of the input bucket, once) and
//! `sync.checkpoint_restore` (`rclone copy` of the checkpoint bucket, once).
//!
//! The input's download records what it downloaded: `downloaded.listing_sha256`, the digest
//! of the bucket's listing (path, size, modification time of each object) taken before the
//! sync, the listing itself kept on the machine. A refresh lists the bucket again there and
//! reads `downloaded.changed` ("1 new file, 1 changed"), which the plan shows as a note; a
//! new run of the job syncs the input again first (the container's create).

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
    if kind == Kind::SyncInput {
        // What was downloaded is read, never planned: a bucket that changed since is a note,
        // not a change (the running job keeps the input it started with).
        p.computed.push("downloaded".into());
    }
    Ok(p)
}

/// The `downloaded` attribute from the digest of the listing downloaded, and the refresh's
/// counts of what differs in the bucket now (`NEW:CHANGED:GONE`, or `unreadable`).
pub(super) fn downloaded(listing_sha256: &str, changed: &str) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    d.insert("listing_sha256".into(), json!(listing_sha256));
    if let Some(since) = changed_since(changed) {
        d.insert("changed".into(), json!(since));
    }
    serde_json::Value::Object(d)
}

/// "1 new file, 2 changed, 1 gone" from `NEW:CHANGED:GONE`; `None` when nothing differs.
fn changed_since(counts: &str) -> Option<String> {
    if counts == "unreadable" {
        return Some("cannot tell: the input bucket could not be listed from its machine".into());
    }
    let n: Vec<u64> = counts.split(':').filter_map(|c| c.parse().ok()).collect();
    let [new, changed, gone] = n[..] else {
        return None;
    };
    let mut parts = vec![];
    if new > 0 {
        parts.push(format!("{new} new file{}", if new == 1 { "" } else { "s" }));
    }
    if changed > 0 {
        parts.push(format!("{changed} changed"));
    }
    if gone > 0 {
        parts.push(format!("{gone} gone"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub(super) async fn apply(
    host: &dyn Host,
    kind: Kind,
    layout: &VmLayout,
    attrs: &Attrs,
) -> Result<Attrs> {
    let (source, dest) = (attr_str(attrs, "source")?, attr_str(attrs, "destination")?);
    let mut attrs = attrs.clone();
    if kind == Kind::SyncInput {
        let out = run(
            host,
            &scripts::download_input(layout, source, dest, false),
            "rclone sync",
        )
        .await?;
        attrs.insert(
            "downloaded".into(),
            downloaded(&listing_sha256(&out.stdout), ""),
        );
    } else {
        let script = scripts::download(
            layout,
            "copy",
            source,
            dest,
            "rclone-checkpoint-restore.log",
        );
        run(host, &script, "rclone copy").await?;
    }
    Ok(attrs)
}

/// The `listing_sha256=` a download of the input prints.
pub(super) fn listing_sha256(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("listing_sha256="))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed_in_the_input_is_said_in_words() {
        assert_eq!(changed_since("0:0:0"), None);
        assert_eq!(changed_since(""), None, "an older machine's probe");
        assert_eq!(changed_since("1:0:0").as_deref(), Some("1 new file"));
        assert_eq!(
            changed_since("2:1:3").as_deref(),
            Some("2 new files, 1 changed, 3 gone")
        );
        assert!(changed_since("unreadable")
            .unwrap()
            .contains("could not be listed"));
    }
}
