//! `idle_shutdown`: a machine that stops costing by itself once its job has ended, whether
//! or not anycloud's process is alive.
//!
//! The watcher is a supervisord program of the deployment's private supervisord
//! ([`crate::render::idle_program`]), so it survives the CLI, and the boot script brings it
//! back after a reboot. Every few seconds it asks Docker how the job stands. Once the job
//! has ended by itself (exited with a code below 128: not killed from outside, which the
//! boot script resumes; not stopped by anycloud, which leaves the hold file) and
//! `idle_shutdown` has passed since, it runs the final upload a teardown runs — the same
//! script, [`crate::scripts::final_flush`]: the keep step, `rclone copy --checksum`, then
//! `rclone check --one-way` — and only when that exits 0 does it write its record
//! ([`Stopped`]; on the machine for a refresh, and best-effort next to the job's logs in
//! the output bucket) and run the power-off. A failed upload or check leaves the machine
//! on and is tried again a minute later.
//!
//! The power-off is the provider's ([`crate::HostContext::power_off`]): `shutdown -h now`
//! (through `sudo -n` when the program does not run as root) on a machine that is the
//! deployment's own; none on the local cloud, whose machine is the operator's. What the
//! cloud makes of an OS shutdown is the provider's to arrange and say (EC2 terminates an
//! instance started with `InstanceInitiatedShutdownBehavior=terminate`). Builds of tests
//! take the command from `ANYCLOUD_TEST_POWER_OFF` ([`crate::testing::power_off`]), so a
//! test observes it instead of losing its machine.

use serde_json::json;

use crate::layout::VmLayout;
use crate::render::{quote, JOB_LOGS_DIR};
use crate::steps::Probe;

/// The watcher's supervisord program.
pub const PROGRAM: &str = "idle-shutdown";

/// Stops the machine: as root directly, else through sudo (cloud images log in as a user
/// with passwordless sudo; the steps start supervisord through it).
pub const POWER_OFF: &str =
    "if [ \"$(id -u)\" = 0 ]; then shutdown -h now; else sudo -n shutdown -h now; fi";

/// How long a failed final upload waits before it is tried again.
pub const RETRY_SECS: u64 = 60;

/// `secs` as the config would write it: `10m`, `1h`, `90s`.
pub fn duration_text(secs: u64) -> String {
    anycloud_provider::duration::text(secs)
}

/// The plan's note on a VM whose deployment sets `idle_shutdown`: when, then `outcome`,
/// what the provider's cloud makes of the machine's own shutdown, in plain words.
pub fn plan_note(idle_secs: u64, outcome: &str) -> String {
    format!(
        "idle_shutdown: {} after its job ends, the machine uploads and verifies its output, then {outcome}",
        duration_text(idle_secs)
    )
}

/// How often the watcher looks at the job: often enough that a short `idle_shutdown` is
/// kept to within a few seconds, never more than twice a minute for a long one.
fn poll_secs(idle_secs: u64) -> u64 {
    (idle_secs / 4).clamp(1, 30)
}

/// The watcher: see the module's docs. `record_remote` is the output bucket's rclone path,
/// where the record goes too; `power_off` the command that stops the machine (none: it
/// stays on, its output verified).
pub fn watcher_script(
    layout: &VmLayout,
    container: &str,
    idle_secs: u64,
    record_remote: Option<&str>,
    power_off: Option<&str>,
) -> String {
    let upload_record = match record_remote {
        Some(remote) => format!(
            "RCLONE_CONFIG={conf} /usr/bin/rclone copyto \"$record\" {dest} --log-file={log} \\\n      || say \"the record was not uploaded to the output bucket (the output itself is verified)\"\n",
            conf = quote(&layout.rclone_config),
            dest = quote(&format!("{remote}/{JOB_LOGS_DIR}/{container}/idle-stop.txt")),
            log = quote(&format!("{}/{PROGRAM}.rclone.log", layout.log_dir)),
        ),
        None => String::new(),
    };
    let (machine, stop) = match power_off {
        Some(command) => (
            "stopped",
            format!(
                "say \"output verified: stopping the machine\"\n  {command} || say \"stopping the machine failed\"\n"
            ),
        ),
        None => (
            "kept",
            "say \"output verified; this machine is not the deployment's to stop: it stays on\"\n"
                .to_owned(),
        ),
    };
    format!(
        "#!/bin/bash
# Written by anycloud: the idle watcher of idle_shutdown, which runs without anycloud.
set -uo pipefail
# Once the job has ended and idle_shutdown has passed: the final upload, verified, then
# the machine stops itself.
name={name}
idle={idle_secs}
hold={hold}
record={record}
flush={flush}
say() {{ echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ) $*\"; }}
while true; do
  sleep {poll}
  # Done already: the machine is on its way down (or stays on where it is not ours).
  [ -e \"$record\" ] && continue
  # anycloud stopped the job (a teardown, a new run): that is no end of the job.
  [ -e \"$hold\" ] && continue
  state=$(docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}} {{{{.State.FinishedAt}}}}' \"$name\" 2>/dev/null) || continue
  set -- $state
  # Ended by itself; 128 and up is a kill from outside, which the boot script resumes.
  [ \"$1\" = exited ] && [ \"$2\" -lt 128 ] || continue
  ended=$(date -u -d \"$3\" +%s 2>/dev/null) || continue
  [ $(( $(date -u +%s) - ended )) -ge \"$idle\" ] || continue
  [ -e \"$hold\" ] && continue
  say \"the job ended at $3 with code $2 and idle_shutdown ({shown}) has passed: the final upload\"
  if ! /bin/bash \"$flush\"; then
    say \"the final upload or its check failed: the machine stays on; trying again in {RETRY_SECS}s\"
    sleep {RETRY_SECS}
    continue
  fi
{others}  printf 'job_finished=%s\\nexit_code=%s\\nidle_shutdown=%s\\nverified_at=%s\\nmachine=%s\\n' \\
    \"${{3%%.*}}Z\" \"$2\" {shown} \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {machine} > \"$record.new\" && mv \"$record.new\" \"$record\"
  {upload_record}  {stop}done
",
        name = quote(container),
        hold = quote(&layout.hold_file()),
        record = quote(&layout.idle_record()),
        flush = quote(&layout.final_flush_script()),
        poll = poll_secs(idle_secs),
        others = match (power_off, machines_dir(layout)) {
            (Some(_), Some(dir)) => format!(
                "  # Another deployment's job on this machine (one of the user's own) keeps it on.
  others=0
  for id in $(docker ps -q --filter label=anycloud.deployment --filter status=running); do
    docker inspect -f '{{{{.Name}}}} {{{{range .Mounts}}}}{{{{.Source}}}} {{{{end}}}}' \"$id\" | grep -v \"^/$name \" | grep -q -F {dir}/ && others=$((others + 1))
  done
  if [ \"$others\" -gt 0 ]; then
    say \"output verified, but $others other job(s) run on this machine: it stays on for now\"
    continue
  fi
",
                dir = quote(&dir)
            ),
            _ => String::new(),
        },
        shown = duration_text(idle_secs),
    )
}

/// Where the other deployments' machines of the same root live, when several share this
/// machine (the local and ssh clouds' `<root>/hosts/<id>`): a cloud VM is one deployment's.
fn machines_dir(layout: &VmLayout) -> Option<String> {
    let base = layout.mnt.strip_suffix("/mnt")?;
    let (hosts, _) = base.rsplit_once('/')?;
    hosts.ends_with("/hosts").then(|| hosts.to_owned())
}

/// What the watcher recorded before it stopped the machine, as the probe read it
/// (`idle.`-prefixed facts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub job_finished: String,
    pub idle_shutdown: String,
    pub verified_at: String,
    /// Whether it stopped the machine or left it on (a machine not the deployment's own).
    pub machine_stopped: bool,
}

impl Stopped {
    pub fn of(probe: &Probe) -> Option<Stopped> {
        let verified_at = probe.get("idle.verified_at");
        if verified_at.is_empty() {
            return None;
        }
        Some(Stopped {
            job_finished: probe.get("idle.job_finished").to_owned(),
            idle_shutdown: probe.get("idle.idle_shutdown").to_owned(),
            verified_at: verified_at.to_owned(),
            machine_stopped: probe.get("idle.machine") == "stopped",
        })
    }

    /// The words a plan and `status` show.
    pub fn describe(&self) -> String {
        if self.machine_stopped {
            format!(
                "the machine stopped itself {} after the job ended; output verified at {}",
                self.idle_shutdown, self.verified_at
            )
        } else {
            format!(
                "output uploaded and verified at {}, {} after the job ended; the machine is not the deployment's own and stays on",
                self.verified_at, self.idle_shutdown
            )
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!(self.describe())
    }
}

/// The line a probe adds for the watcher's record: its `key=value` lines, `idle.`-prefixed.
pub fn probe_lines(layout: &VmLayout) -> String {
    format!(
        "[ -f {record} ] && sed -n 's/^\\([a-z_]*\\)=/idle.\\1=/p' {record}\n",
        record = quote(&layout.idle_record())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(duration_text(600), "10m");
        assert_eq!(duration_text(7200), "2h");
        assert_eq!(duration_text(90), "90s");
        assert_eq!(duration_text(0), "0s");
    }

    #[test]
    fn a_record_reads_back_from_the_probe() {
        let mut probe = Probe::default();
        assert_eq!(Stopped::of(&probe), None);
        for (k, v) in [
            ("idle.job_finished", "2026-12-08T01:00:00Z"),
            ("idle.idle_shutdown", "10m"),
            ("idle.verified_at", "2026-12-08T01:10:04Z"),
            ("idle.machine", "stopped"),
        ] {
            probe.facts.insert(k.into(), v.into());
        }
        let stopped = Stopped::of(&probe).unwrap();
        assert_eq!(
            stopped.describe(),
            "the machine stopped itself 10m after the job ended; output verified at 2026-12-08T01:10:04Z"
        );
    }
}
