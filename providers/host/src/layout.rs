//! Where a deployment's files live on its host.

use serde::{Deserialize, Serialize};

/// Paths on the host for one deployment. A cloud VM uses the seed's fixed paths; the local
/// cloud roots everything under its own directory so deployments side by side never collide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLayout {
    /// Directory holding `input/`, `output/` and `checkpoint/` (bind-mounted into the container).
    pub mnt: String,
    /// Log files of rclone, supervisord and dockerd.
    pub log_dir: String,
    /// The private supervisord's configuration directory (`supervisord.conf`, `conf.d/`).
    pub supervisor_dir: String,
    /// The supervisord control socket (kept short: unix sockets allow ~107 bytes).
    pub supervisor_socket: String,
    pub rclone_config: String,
}

impl VmLayout {
    /// The layout of a deployment on this machine, under `base` (the deployment's host dir).
    pub fn under(base: &str) -> VmLayout {
        let digest = anycloud_provider::digest::short_hash(base);
        VmLayout {
            mnt: format!("{base}/mnt"),
            log_dir: format!("{base}/log"),
            supervisor_dir: format!("{base}/supervisor"),
            supervisor_socket: format!("/tmp/anycloud-{digest}.sock"),
            rclone_config: format!("{base}/rclone.conf"),
        }
    }

    /// The seed's paths on a cloud VM (`/mnt/input`, …), under `prefix` (empty on a real VM;
    /// tests root a shared test host elsewhere).
    pub fn on_vm(prefix: &str) -> VmLayout {
        let mnt = format!("{prefix}/mnt");
        VmLayout {
            supervisor_socket: format!(
                "/tmp/anycloud-{}.sock",
                anycloud_provider::digest::short_hash(&mnt)
            ),
            mnt,
            log_dir: format!("{prefix}/var/log/anycloud"),
            supervisor_dir: format!("{prefix}/etc/anycloud/supervisor"),
            rclone_config: format!("{prefix}/etc/anycloud/rclone.conf"),
        }
    }

    pub fn supervisord_conf(&self) -> String {
        format!("{}/supervisord.conf", self.supervisor_dir)
    }

    pub fn program_path(&self, program: &str) -> String {
        format!("{}/conf.d/{program}.conf", self.supervisor_dir)
    }

    pub fn mount(&self, bucket: &str) -> String {
        format!("{}/{bucket}", self.mnt)
    }
}
