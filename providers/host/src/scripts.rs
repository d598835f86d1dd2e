//! The bash scripts sent to a host. Each is idempotent: check, then act, so a re-run after a
//! crash or a dropped connection finishes the job and duplicates nothing.

use crate::layout::VmLayout;
use crate::render::quote;

const PRELUDE: &str = "set -euo pipefail\n";

/// Serialises supervisord changes on one host: two `supervisorctl update`s at once (the two
/// upload programs are created in parallel) make one of them fail.
fn supervisor_lock(layout: &VmLayout) -> String {
    let dir = quote(&layout.supervisor_dir);
    format!("mkdir -p {dir}\nexec 9>{dir}/.lock\nflock 9\n")
}

/// Sets `$pat` to an extended regex matching exactly this deployment's supervisord: pgrep
/// and pkill read patterns as regexes, and the path may hold `.` or `+`.
fn supervisord_pattern() -> &'static str {
    "pat=$(printf 'supervisord -c %s' \"$conf\" | sed 's/[][\\.*^$+?(){}|]/\\\\&/g')\n"
}

/// Runs a supervisorctl command, showing its output (it reports errors on stdout) on failure.
fn ctl(args: &str, what: &str) -> String {
    format!(
        "if ! out=$(supervisorctl -c \"$conf\" {args} 2>&1); then echo \"supervisorctl {what} failed: $out\" >&2; exit 1; fi\n"
    )
}

/// Waits for a leftover run of the same step to finish first: a script whose connection
/// dropped runs on (it has no terminal to lose), and its retry must not race it.
fn step_lock(layout: &VmLayout, step: &str) -> String {
    let dir = quote(&layout.log_dir);
    format!("mkdir -p {dir}\nexec 8>{dir}/.{step}.lock\nflock 8\n")
}

/// Shows a long-running tool's log on stderr as it grows (the SSH transport streams stderr
/// to the progress display); stops with the script.
fn follow(log: &str) -> String {
    format!(
        "touch {log}\n(tail -n 0 -s 0.2 -F --pid=$$ {log} >&2 2>/dev/null 8>&- 9>&- &)\n",
        log = quote(log)
    )
}

/// Prints the last lines of a tool's log on failure, so errors carry the tool's own words.
fn or_tail(log: &str, what: &str) -> String {
    format!(
        "|| {{ echo \"{what} failed; last lines of {log}:\" >&2; tail -n 20 {log} >&2 || true; exit 1; }}",
        log = quote(log)
    )
}

/// Installs Docker, supervisord and rclone where missing (as root on Debian), starts dockerd
/// when it is not running, and makes the deployment's directories.
pub fn vm_init(layout: &VmLayout) -> String {
    let log = quote(&format!("{}/vm-init.log", layout.log_dir));
    let dockerd_log = quote(&format!("{}/dockerd.log", layout.log_dir));
    format!(
        "{PRELUDE}{lock}\
mkdir -p {logdir} {mnt}/input {mnt}/output {mnt}/checkpoint {sup}/conf.d
missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v supervisord >/dev/null 2>&1 || missing+=(supervisor)
test -x /usr/bin/rclone || missing+=(rclone)
if [ ${{#missing[@]}} -gt 0 ]; then
  if [ \"$(id -u)\" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    {follow}{{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq \"${{missing[@]}}\"; }} >>{log} 2>&1 {apt_fail}
  else
    echo \"missing on this host: ${{missing[*]}}; install them, or run anycloud as root on Debian so it can\" >&2
    exit 1
  fi
fi
if ! docker info >/dev/null 2>&1; then
  setsid dockerd --iptables=false --bridge=none </dev/null >{dockerd_log} 2>&1 8>&- &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 {dockerd_fail}
fi
",
        lock = step_lock(layout, "vm-init"),
        follow = follow(&format!("{}/vm-init.log", layout.log_dir)).replace('\n', "\n    "),
        logdir = quote(&layout.log_dir),
        mnt = quote(&layout.mnt),
        sup = quote(&layout.supervisor_dir),
        apt_fail = or_tail(&format!("{}/vm-init.log", layout.log_dir), "apt-get install"),
        dockerd_fail = or_tail(&format!("{}/dockerd.log", layout.log_dir), "starting dockerd"),
    )
}

/// (Re)starts the deployment's private supervisord with its current configuration.
pub fn supervisord_restart(layout: &VmLayout) -> String {
    let conf = quote(&layout.supervisord_conf());
    let log = format!("{}/supervisord.log", layout.log_dir);
    format!(
        "{PRELUDE}{lock}\
conf={conf}
{pattern}pkill -f -- \"$pat\" || true
for _ in $(seq 1 100); do pgrep -f -- \"$pat\" >/dev/null || break; sleep 0.1; done
# 9>&-: the daemon must not inherit the lock, or it would hold it for its whole life.
setsid supervisord -c \"$conf\" </dev/null >/dev/null 2>&1 9>&- {fail}
for _ in $(seq 1 100); do supervisorctl -c \"$conf\" pid >/dev/null 2>&1 && break; sleep 0.1; done
supervisorctl -c \"$conf\" pid >/dev/null 2>&1 {fail}
",
        lock = supervisor_lock(layout),
        pattern = supervisord_pattern(),
        fail = or_tail(&log, "supervisord")
    )
}

/// Stops the private supervisord (and with it the upload programs).
pub fn supervisord_stop(layout: &VmLayout) -> String {
    let conf = quote(&layout.supervisord_conf());
    format!(
        "{PRELUDE}\
conf={conf}
{pattern}pkill -f -- \"$pat\" || true
for _ in $(seq 1 300); do pgrep -f -- \"$pat\" >/dev/null || exit 0; sleep 0.1; done
echo \"supervisord ($conf) did not stop\" >&2
exit 1
",
        pattern = supervisord_pattern(),
    )
}

/// Checks that rclone reaches the storage, retrying while credentials propagate.
pub fn rclone_check(layout: &VmLayout, target: &str, retries: u64, sleep_secs: u64) -> String {
    let log = format!("{}/rclone-check.log", layout.log_dir);
    format!(
        "{PRELUDE}{follow}\
export RCLONE_CONFIG={config}
/usr/bin/rclone lsd {target} --retries {retries} --retries-sleep {sleep_secs}s --log-file={qlog} >/dev/null {fail}
",
        follow = follow(&log),
        config = quote(&layout.rclone_config),
        target = quote(target),
        qlog = quote(&log),
        fail = or_tail(&log, "rclone connectivity check")
    )
}

/// One-shot download: `sync` for the read-only input, `copy` for the checkpoint restore.
pub fn download(layout: &VmLayout, verb: &str, source: &str, dest: &str, log_name: &str) -> String {
    let log = format!("{}/{log_name}", layout.log_dir);
    format!(
        "{PRELUDE}{lock}{follow}\
export RCLONE_CONFIG={config}
mkdir -p {dest}
/usr/bin/rclone {verb} {source} {dest} --verbose --fast-list --log-file={qlog} {fail}
",
        lock = step_lock(layout, log_name.trim_end_matches(".log")),
        follow = follow(&log),
        config = quote(&layout.rclone_config),
        source = quote(source),
        dest = quote(dest),
        qlog = quote(&log),
        fail = or_tail(&log, &format!("rclone {verb}"))
    )
}

/// Loads a changed or new program into supervisord and makes sure it runs. `update`
/// rereads the configuration and (re)starts what changed.
pub fn program_apply(layout: &VmLayout, program: &str) -> String {
    let log = format!("{}/{program}.stdout.log", layout.log_dir);
    format!(
        "{PRELUDE}{lock}\
conf={conf}
{update}\
status=$(supervisorctl -c \"$conf\" status {program} 2>&1 | awk '{{print $2}}' || true)
case \"$status\" in
  RUNNING|STARTING) ;;
  STOPPED|EXITED|FATAL|BACKOFF) {start} ;;
  *) echo \"{program} is '$status' after supervisorctl update\" >&2; tail -n 20 {qlog} >&2 || true; exit 1 ;;
esac
",
        lock = supervisor_lock(layout),
        conf = quote(&layout.supervisord_conf()),
        update = ctl("update", "update"),
        start = ctl(&format!("start {program}"), &format!("start {program}")).trim_end(),
        qlog = quote(&log),
    )
}

/// Stops a program and removes it from supervisord (nothing to do if supervisord is gone).
pub fn program_remove(layout: &VmLayout, program: &str) -> String {
    format!(
        "{PRELUDE}{lock}\
conf={conf}
rm -f {path}
if supervisorctl -c \"$conf\" pid >/dev/null 2>&1; then
  {update}\
fi
",
        lock = supervisor_lock(layout),
        conf = quote(&layout.supervisord_conf()),
        path = quote(&layout.program_path(program)),
        update = ctl("update", "update"),
    )
}

/// The last upload before a container or VM goes: copy, then verify with `check --one-way`
/// that everything on the disk is in the bucket. Fails (and so keeps the VM) otherwise.
/// `--checksum`, unlike the upload loop's size-and-modtime comparison, cannot skip a file
/// rewritten with the same size within the modify window.
pub fn final_flush(layout: &VmLayout, pairs: &[(String, String)]) -> String {
    let log = format!("{}/rclone-flush.log", layout.log_dir);
    let mut script = format!(
        "{PRELUDE}{}{}export RCLONE_CONFIG={}\n",
        step_lock(layout, "flush"),
        follow(&log),
        quote(&layout.rclone_config)
    );
    // Without rclone.conf nothing can be uploaded: that is fine only if there is nothing
    // to upload (rclone never ran here); otherwise fail, and so keep the data.
    script.push_str("if [ ! -f \"$RCLONE_CONFIG\" ]; then\n");
    for (dir, _) in pairs {
        script.push_str(&format!(
            "  if [ -d {d} ] && [ -n \"$(ls -A {d})\" ]; then echo \"{d} holds data but $RCLONE_CONFIG is missing: cannot upload it\" >&2; exit 1; fi\n",
            d = quote(dir)
        ));
    }
    script.push_str("  exit 0\nfi\n");
    for (dir, remote) in pairs {
        script.push_str(&format!(
            "if [ -d {dir} ]; then\n  \
             /usr/bin/rclone copy {dir} {remote} --checksum --verbose --no-update-modtime --log-file={qlog} {copy_fail}\n  \
             /usr/bin/rclone check {dir} {remote} --one-way --log-file={qlog} {check_fail}\n\
             fi\n",
            dir = quote(dir),
            remote = quote(remote),
            qlog = quote(&log),
            copy_fail = or_tail(&log, "final upload"),
            check_fail = or_tail(&log, "final upload check"),
        ));
    }
    script
}

/// Starts the container unless one with the same spec already runs (or finished cleanly).
pub fn container_run(
    layout: &VmLayout,
    name: &str,
    spec_digest: &str,
    mounts: &[String],
    docker_args: &str,
) -> String {
    let mkdirs = if mounts.is_empty() {
        String::new()
    } else {
        format!(
            "mkdir -p {}\n",
            mounts
                .iter()
                .map(|m| quote(m))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    format!(
        "{PRELUDE}{lock}\
name={name}
if current=$(docker inspect -f '{{{{index .Config.Labels \"anycloud.spec\"}}}} {{{{.State.Status}}}} {{{{.State.ExitCode}}}}' \"$name\" 2>/dev/null); then
  case \"$current\" in
    \"{spec_digest} running 0\"|\"{spec_digest} exited 0\") docker inspect -f '{{{{.Id}}}}' \"$name\"; exit 0 ;;
  esac
  docker rm -f \"$name\" >/dev/null
fi
{mkdirs}docker {docker_args}
",
        lock = supervisor_lock(layout),
        name = quote(name),
    )
}

/// Stops the container so nothing more is written, leaving it for the flush and removal.
pub fn container_stop(name: &str) -> String {
    format!(
        "{PRELUDE}if docker inspect {name} >/dev/null 2>&1; then docker stop --time 30 {name} >/dev/null; fi\n",
        name = quote(name)
    )
}

pub fn container_remove(name: &str) -> String {
    format!(
        "{PRELUDE}docker rm -f {} >/dev/null 2>&1 || true\n",
        quote(name)
    )
}

/// One round trip that reports everything a refresh needs about a deployment's host.
pub fn probe(layout: &VmLayout, container: &str) -> String {
    format!(
        "set -uo pipefail
conf={conf}
echo \"host_dir=$([ -d {mnt} ] && echo present || echo missing)\"
echo \"supervisord=$(supervisorctl -c \"$conf\" pid >/dev/null 2>&1 && [ -f \"$conf\" ] && echo up || echo down)\"
supervisorctl -c \"$conf\" status 2>/dev/null | awk '{{print \"program.\" $1 \"=\" $2}}'
echo \"container=$(docker inspect -f '{{{{.State.Status}}}}:{{{{.State.ExitCode}}}}:{{{{.Id}}}}:{{{{index .Config.Labels \"anycloud.spec\"}}}}' {container} 2>/dev/null || echo missing)\"
echo \"rclone_config=$(sha256sum < {rclone} 2>/dev/null | cut -c1-64 || echo missing)\"
now=$(date +%s)
for entry in rclone-output:{output_log} rclone-checkpoint:{checkpoint_log}; do
  log=${{entry#*:}}
  [ -f \"$log\" ] || continue
  if tail -n 30 \"$log\" | grep -q -E 'ERROR|Failed to'; then result=errors; else result=ok; fi
  echo \"upload.${{entry%%:*}}=$(( now - $(stat -c %Y \"$log\") )):$result\"
done
",
        output_log = quote(&format!("{}/rclone-output.log", layout.log_dir)),
        checkpoint_log = quote(&format!("{}/rclone-checkpoint.stdout.log", layout.log_dir)),
        conf = quote(&layout.supervisord_conf()),
        mnt = quote(&layout.mnt),
        container = quote(container),
        rclone = quote(&layout.rclone_config),
    )
}

/// The exit status of [`upload`] when fewer or other bytes arrived than were sent.
pub const UPLOAD_INCOMPLETE: i32 = 75;

/// Receives a file on stdin and puts it at `path` atomically: a temporary name in the same
/// directory, checked against the size and sha256 sent, the mode set, then a rename. A cut
/// connection ends stdin early like a finished file would, so the check is what keeps a
/// half-sent file from replacing a good one.
pub fn upload(path: &str, mode: u32, size: usize, sha256: &str) -> String {
    format!(
        "{PRELUDE}\
p={path}
d=$(dirname \"$p\")
mkdir -p \"$d\"
t=$(mktemp \"$d/.anycloud-upload.XXXXXX\")
trap 'rm -f \"$t\"' EXIT
cat >\"$t\"
if [ \"$(stat -c %s \"$t\")\" != {size} ] || [ \"$(sha256sum <\"$t\" | cut -c1-64)\" != {sha256} ]; then
  echo \"$p: the upload arrived incomplete\" >&2
  exit {UPLOAD_INCOMPLETE}
fi
chmod {mode:o} \"$t\"
mv -f \"$t\" \"$p\"
trap - EXIT
",
        path = quote(path),
    )
}

/// One round trip for everything a refresh needs of one host: which of `dirs` exist, then a
/// [`probe`] of each deployment on it, each section headed by its layout's `mnt`.
pub fn host_probe(deployments: &[(VmLayout, String)], dirs: &[String]) -> String {
    let mut script = String::from("set -uo pipefail\n");
    for dir in dirs {
        script.push_str(&format!(
            "echo \"dir.\"{d}\"=$([ -d {d} ] && echo present || echo missing)\"\n",
            d = quote(dir)
        ));
    }
    for (layout, container) in deployments {
        script.push_str(&format!("echo {}\n", quote(&format!("@@ {}", layout.mnt))));
        // Each probe in a subshell: its variables and `set` options stay its own.
        script.push_str("(\n");
        script.push_str(probe(layout, container).trim_start_matches("set -uo pipefail\n"));
        script.push_str(")\n");
    }
    script
}

/// Makes a directory (a bucket, a deployment's host dir) if it is missing.
pub fn make_dir(path: &str) -> String {
    format!("{PRELUDE}mkdir -p -- {}\n", quote(path))
}

/// Removes a deployment's host directory, once its data has been flushed.
pub fn remove_dir(path: &str) -> String {
    format!("{PRELUDE}rm -rf -- {}\n", quote(path))
}

/// Leaves a host as a new VM would find it: no container, no private supervisord.
pub fn host_cleanup(layout: &VmLayout, container: &str) -> String {
    format!(
        "{}{}",
        container_remove(container),
        supervisord_stop(layout).trim_start_matches(PRELUDE)
    )
}
