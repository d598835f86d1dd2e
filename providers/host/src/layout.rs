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
    /// The supervisord control socket (kept short: unix sockets allow ~107 bytes), in
    /// `run_dir`.
    pub supervisor_socket: String,
    /// A directory of the deploying user's own (0700): nobody else can take the socket's
    /// name first, or reach the socket.
    #[serde(default)]
    pub run_dir: String,
    pub rclone_config: String,
}

impl VmLayout {
    /// The layout of a deployment on a machine, under `base` (the deployment's host dir),
    /// its supervisord socket in `run_dir`.
    pub fn under(base: &str, run_dir: &str) -> VmLayout {
        let digest = anycloud_provider::digest::short_hash(base);
        VmLayout {
            mnt: format!("{base}/mnt"),
            log_dir: format!("{base}/log"),
            supervisor_dir: format!("{base}/supervisor"),
            supervisor_socket: format!("{run_dir}/{digest}.sock"),
            run_dir: run_dir.to_owned(),
            rclone_config: format!("{base}/rclone.conf"),
        }
    }

    /// The seed's paths on a cloud VM (`/mnt/input`, …), under `prefix` (empty on a real VM;
    /// tests root a shared test host elsewhere).
    pub fn on_vm(prefix: &str) -> VmLayout {
        let mnt = format!("{prefix}/mnt");
        let run_dir = format!("{prefix}/run/anycloud");
        VmLayout {
            supervisor_socket: format!(
                "{run_dir}/{}.sock",
                anycloud_provider::digest::short_hash(&mnt)
            ),
            run_dir,
            mnt,
            log_dir: format!("{prefix}/var/log/anycloud"),
            supervisor_dir: format!("{prefix}/etc/anycloud/supervisor"),
            rclone_config: format!("{prefix}/etc/anycloud/rclone.conf"),
        }
    }

    /// The entry point that brings the deployment back after a reboot or a crash.
    pub fn boot_script(&self) -> String {
        format!("{}/boot.sh", self.supervisor_dir)
    }

    /// The systemd unit that runs [`Self::boot_script`] where there is systemd.
    pub fn unit_name(&self) -> String {
        format!(
            "anycloud-{}.service",
            anycloud_provider::digest::short_hash(&self.mnt)
        )
    }

    /// Its presence keeps the boot script from starting the job: anycloud stopped it.
    pub fn hold_file(&self) -> String {
        format!("{}/hold", self.supervisor_dir)
    }

    pub fn supervisord_conf(&self) -> String {
        format!("{}/supervisord.conf", self.supervisor_dir)
    }

    pub fn program_path(&self, program: &str) -> String {
        format!("{}/conf.d/{program}.conf", self.supervisor_dir)
    }

    /// Runs the output's upload so a later run never overwrites an earlier run's files
    /// without keeping them ([`crate::render::output_keep_script`]).
    pub fn output_keep_script(&self) -> String {
        format!("{}/rclone-output-keep.sh", self.supervisor_dir)
    }

    /// When the current run (container) of the job started: names where its upload keeps the
    /// files it replaces, and the list of what it has uploaded.
    pub fn run_stamp(&self) -> String {
        format!("{}/job-run", self.log_dir)
    }

    /// The idle watcher ([`crate::idle::watcher_script`]), run by supervisord.
    pub fn idle_script(&self) -> String {
        format!("{}/idle-shutdown.sh", self.supervisor_dir)
    }

    /// The final verified upload as a file the idle watcher runs
    /// ([`crate::scripts::final_flush`], the same text a teardown sends).
    pub fn final_flush_script(&self) -> String {
        format!("{}/final-flush.sh", self.supervisor_dir)
    }

    /// What the idle watcher did before it stopped the machine ([`crate::idle::Stopped`]);
    /// a new run of the job removes it.
    pub fn idle_record(&self) -> String {
        format!("{}/idle-stop", self.log_dir)
    }

    pub fn mount(&self, bucket: &str) -> String {
        format!("{}/{bucket}", self.mnt)
    }
}

/// The run directory of this machine's user on the local cloud: `/tmp/anycloud-<uid>`, made
/// 0700 and checked to be the user's own before anything is put in it.
pub fn local_run_dir() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    format!("/tmp/anycloud-{uid}")
}
