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

/// Makes the run directory (0700) and insists it is this user's own: a directory another user
/// made first could hand them the supervisord socket.
fn own_run_dir(layout: &VmLayout) -> String {
    format!(
        "install -d -m 0700 {d}\n[ -O {d} ] || {{ echo \"{d} belongs to another user: refusing to put the supervisord socket there\" >&2; exit 1; }}\n",
        d = quote(&layout.run_dir)
    )
}

/// The addresses of the clouds' instance metadata services: AWS's (IPv4 and IPv6), Azure's
/// and GCP's IPv4 (`metadata.google.internal` is 169.254.169.254), GCP's IPv6.
const METADATA_V4: &str = "169.254.169.254/32";
const METADATA_V6: &[&str] = &["fd00:ec2::254/128", "fd20:ce::254/128"];

/// A bash function, `block_metadata`, that keeps containers from the machine's metadata
/// service, which hands the machine's identity (a token for its role, managed identity or
/// service account, valid for hours and usable anywhere) to whoever asks. AWS stops a
/// container with IMDSv2's hop limit; Azure and GCP have none. Packets for it that arrive
/// from another interface (a container's bridge) are dropped before routing; the machine's
/// own processes (rclone) reach it as before. Checked, then added: run again (the boot
/// script does after a reboot, which forgets the rule), it adds nothing. Docker never
/// flushes the raw table, so a restart of dockerd keeps it.
pub fn block_metadata() -> String {
    let v6: String = METADATA_V6
        .iter()
        .map(|a| {
            format!(
                "    ip6tables -w -t raw -C PREROUTING ! -i lo -d {a} -j DROP 2>/dev/null ||\n      ip6tables -w -t raw -I PREROUTING ! -i lo -d {a} -j DROP 2>/dev/null || true\n"
            )
        })
        .collect();
    format!(
        "block_metadata() {{
  if [ \"$(id -u)\" != 0 ]; then
    echo \"warning: not root, so job containers on this machine can reach its cloud metadata service (its identity's credentials)\" >&2
    return 0
  fi
  command -v iptables >/dev/null 2>&1 || {{ echo \"iptables is missing: cannot keep job containers from the metadata service\" >&2; return 1; }}
  iptables -w -t raw -C PREROUTING ! -i lo -d {METADATA_V4} -j DROP 2>/dev/null ||
    iptables -w -t raw -I PREROUTING ! -i lo -d {METADATA_V4} -j DROP || return 1
  if command -v ip6tables >/dev/null 2>&1; then
{v6}  fi
}}
"
    )
}

/// Installs Docker, supervisord and rclone where missing (as root on Debian), starts dockerd
/// when it is not running, and makes the deployment's directories (0750). With `gpus`, the
/// NVIDIA container toolkit too, set up as a Docker runtime, then `nvidia-smi` run in a
/// container of the job's image `gpus` (which the job pulls anyway): a machine whose GPUs a
/// container cannot use fails the step with nvidia-smi's (or Docker's) own words.
pub fn vm_init(layout: &VmLayout, gpus: Option<&str>, keep_from_metadata: bool) -> String {
    let log = quote(&format!("{}/vm-init.log", layout.log_dir));
    let dockerd_log = quote(&format!("{}/dockerd.log", layout.log_dir));
    format!(
        "{PRELUDE}{lock}\
mkdir -p {logdir} {sup}/conf.d
install -d -m 0750 {mnt} {mnt}/input {mnt}/output {mnt}/checkpoint
missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v supervisord >/dev/null 2>&1 || missing+=(supervisor)
test -x /usr/bin/rclone || missing+=(rclone)
if [ ${{#missing[@]}} -gt 0 ]; then
  if [ \"$(id -u)\" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    {follow}{{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq \"${{missing[@]}}\"; }} >>{log} 2>&1 {apt_fail}
  else
    echo \"missing on this host: ${{missing[*]}}; install them, or log in as root or as a user with passwordless sudo on Debian so anycloud can\" >&2
    exit 1
  fi
fi
if ! docker info >/dev/null 2>&1; then
  setsid dockerd --iptables=false </dev/null >{dockerd_log} 2>&1 8>&- &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 {dockerd_fail}
fi
{block}{gpu}",
        block = if keep_from_metadata {
            format!(
                "{}block_metadata || {{ echo \"could not keep job containers from the metadata service\" >&2; exit 1; }}\n",
                block_metadata()
            )
        } else {
            String::new()
        },
        gpu = match gpus {
            Some(image) => format!("{}{}", nvidia_toolkit(layout), gpu_check(image)),
            None => String::new(),
        },
        lock = step_lock(layout, "vm-init"),
        follow = follow(&format!("{}/vm-init.log", layout.log_dir)).replace('\n', "\n    "),
        logdir = quote(&layout.log_dir),
        mnt = quote(&layout.mnt),
        sup = quote(&layout.supervisor_dir),
        apt_fail = or_tail(&format!("{}/vm-init.log", layout.log_dir), "apt-get install"),
        dockerd_fail = or_tail(&format!("{}/dockerd.log", layout.log_dir), "starting dockerd"),
    )
}

/// `nvidia-smi` in a container of `image` given every GPU: the driver, the toolkit and
/// Docker's runtime all work, or the step fails with what nvidia-smi (or Docker) said.
pub fn gpu_check(image: &str) -> String {
    let image = quote(image);
    format!(
        "if ! gpu_out=$(docker run --rm --quiet --gpus all --entrypoint nvidia-smi {image} 2>&1); then
  echo \"the job asks for GPUs but a container cannot use them (docker run --gpus all --entrypoint nvidia-smi {image}):\" >&2
  printf '%s\\n' \"$gpu_out\" | tail -n 20 >&2
  exit 1
fi
"
    )
}

/// (Re)starts the deployment's private supervisord with its current configuration.
/// The NVIDIA container toolkit from NVIDIA's apt repository, set up as Docker's runtime
/// for `docker run --gpus` (the image must bring the NVIDIA driver).
fn nvidia_toolkit(layout: &VmLayout) -> String {
    let log = format!("{}/vm-init.log", layout.log_dir);
    format!(
        "if ! command -v nvidia-ctk >/dev/null 2>&1; then
  if [ \"$(id -u)\" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    {{ apt-get -o DPkg::Lock::Timeout=600 install -y -qq curl gnupg ca-certificates &&
      curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg &&
      curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list |
        sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' >/etc/apt/sources.list.d/nvidia-container-toolkit.list &&
      apt-get -o DPkg::Lock::Timeout=600 update -qq &&
      apt-get -o DPkg::Lock::Timeout=600 install -y -qq nvidia-container-toolkit; }} >>{qlog} 2>&1 {fail}
  else
    echo \"the job asks for GPUs: install the NVIDIA container toolkit on this host, or run anycloud as root on Debian or Ubuntu so it can\" >&2
    exit 1
  fi
fi
if ! docker info --format '{{{{json .Runtimes}}}}' 2>/dev/null | grep -q nvidia; then
  nvidia-ctk runtime configure --runtime=docker >>{qlog} 2>&1 {configure_fail}
  if [ -d /run/systemd/system ]; then systemctl restart docker; else pkill -HUP dockerd || true; fi
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
",
        qlog = quote(&log),
        fail = or_tail(&log, "installing the NVIDIA container toolkit"),
        configure_fail = or_tail(&log, "nvidia-ctk runtime configure"),
    )
}

/// Installs the boot script as a systemd unit where this host has systemd and the steps run
/// as root: after a reboot, or a crash of supervisord or dockerd, the upload programs and an
/// interrupted job come back by themselves. Elsewhere the boot script is there to be run.
pub fn boot_install(layout: &VmLayout) -> String {
    let unit = layout.unit_name();
    format!(
        "{PRELUDE}if [ \"$(id -u)\" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  cat >/etc/systemd/system/{unit} <<'UNIT'
[Unit]
Description=anycloud: upload programs and job of {mnt}
After=docker.service network-online.target
Wants=docker.service network-online.target

[Service]
ExecStart={boot} --watch
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now {unit} >/dev/null 2>&1
fi
",
        mnt = layout.mnt,
        boot = quote(&layout.boot_script()),
    )
}

/// Stops and removes the boot unit, if there is one.
fn boot_uninstall(layout: &VmLayout) -> String {
    let unit = layout.unit_name();
    format!(
        "if [ -f /etc/systemd/system/{unit} ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now {unit} >/dev/null 2>&1 || true
  rm -f /etc/systemd/system/{unit}
  systemctl daemon-reload || true
fi
"
    )
}

pub fn supervisord_restart(layout: &VmLayout) -> String {
    let conf = quote(&layout.supervisord_conf());
    let log = format!("{}/supervisord.log", layout.log_dir);
    format!(
        "{PRELUDE}{lock}\
conf={conf}
{pattern}pkill -f -- \"$pat\" || true
for _ in $(seq 1 100); do pgrep -f -- \"$pat\" >/dev/null || break; sleep 0.1; done
# 9>&-: the daemon must not inherit the lock, or it would hold it for its whole life.
{run_dir}setsid supervisord -c \"$conf\" </dev/null >/dev/null 2>&1 9>&- {fail}
for _ in $(seq 1 100); do supervisorctl -c \"$conf\" pid >/dev/null 2>&1 && break; sleep 0.1; done
supervisorctl -c \"$conf\" pid >/dev/null 2>&1 {fail}
",
        lock = supervisor_lock(layout),
        pattern = supervisord_pattern(),
        run_dir = own_run_dir(layout),
        fail = or_tail(&log, "supervisord")
    )
}

/// Stops the private supervisord (and with it the upload programs).
pub fn supervisord_stop(layout: &VmLayout) -> String {
    let conf = quote(&layout.supervisord_conf());
    format!(
        "{PRELUDE}{uninstall}\
conf={conf}
{pattern}pkill -f -- \"$pat\" || true
for _ in $(seq 1 300); do pgrep -f -- \"$pat\" >/dev/null || exit 0; sleep 0.1; done
echo \"supervisord ($conf) did not stop\" >&2
exit 1
",
        uninstall = boot_uninstall(layout),
        pattern = supervisord_pattern(),
    )
}

/// Checks that rclone reaches the storage, trying `retries` times `sleep_secs` apart while
/// the VM's identity's permissions propagate; each wait is said on stderr (streamed to the
/// step's progress), and a final failure carries rclone's last words.
pub fn rclone_check(layout: &VmLayout, target: &str, retries: u64, sleep_secs: u64) -> String {
    let log = format!("{}/rclone-check.log", layout.log_dir);
    format!(
        "{PRELUDE}{follow}\
export RCLONE_CONFIG={config}
# The upload steps are written for (and tested on) rclone 1.59 and newer: older ones are
# refused here, with the version found, rather than failing later in a program's log.
version=$(/usr/bin/rclone version 2>/dev/null | sed -n '1s/^rclone v\\([0-9]*\\)\\.\\([0-9]*\\).*/\\1 \\2/p') || version=
read -r major minor <<<\"$version\" || true
if [ -z \"$version\" ] || [ \"$major\" -lt 1 ] || {{ [ \"$major\" = 1 ] && [ \"$minor\" -lt 59 ]; }}; then
  echo \"/usr/bin/rclone is $(/usr/bin/rclone version 2>/dev/null | head -n 1 || echo 'not working'): anycloud needs rclone 1.59 or newer. Install a newer one, e.g. from https://rclone.org/install/\" >&2
  exit 1
fi
# rclone's listing commands ignore --retries: the wait for an identity's permissions to
# spread (seconds on AWS and GCP, minutes for Azure role assignments) is this loop's.
tries={retries}
for try in $(seq 1 \"$tries\"); do
  if /usr/bin/rclone lsd {target} --low-level-retries 1 --log-file={qlog} >/dev/null 2>>{qlog}; then
    exit 0
  fi
  said=$(grep -v '^[[:space:]]*$' {qlog} | tail -n 1)
  if [ \"$try\" -lt \"$tries\" ]; then
    echo \"connectivity check $try/$tries failed (permissions may still be spreading); trying again in {sleep_secs}s: $said\" >&2
    sleep {sleep_secs}
  fi
done
echo \"rclone cannot reach {shown} after $tries tries {sleep_secs}s apart; last lines of {log}:\" >&2
tail -n 20 {qlog} >&2 || true
exit 1
",
        follow = follow(&log),
        config = quote(&layout.rclone_config),
        target = quote(target),
        shown = target.replace(['"', '\\', '$', '`'], "_"),
        qlog = quote(&log),
        retries = retries.max(1),
    )
}

/// Clears `dest` of what would send a download written as root out of it. rclone (1.60,
/// measured) writes through whatever it finds at a destination path: it overwrites the file
/// a link names (then, seeing the link's own size, removes the link and writes again), writes
/// into the directory a link names, and writes into a device node. No flag of rclone's helps
/// on the destination side (`--links`, `--copy-links` and `--skip-links` concern what it
/// reads; with `--copy-links` it even compares against, and overwrites, a linked file). The
/// job can write the checkpoint: every link and device node under it goes before the
/// restore, each said on stderr. A checkpoint never holds links (its upload skips them), so
/// this leaves what a restore on a new machine leaves. `find -delete` removes each relative
/// to the directory it found it in, never through a link. The input is mounted read-only
/// into the job, but a machine that kept its disk may hold links its owner made: the same.
fn clear_links(dest: &str, verb: &str) -> String {
    format!(
        "find {d} -mindepth 1 \\( -type l -printf 'removed the link %p -> %l before rclone {verb}: it would write through it\\n' -delete \\) \\
  -o \\( \\( -type b -o -type c \\) -printf 'removed the device node %p before rclone {verb}: it would write into the device\\n' -delete \\) >&2 \\
  || {{ echo \"could not clear {shown} of links before rclone {verb}\" >&2; exit 1; }}
",
        d = quote(dest),
        shown = dest.replace(['"', '\\', '$', '`'], "_"),
    )
}

/// Sets `$guard`, the command rclone runs under so that it follows no link and opens no
/// device node in `dest` that appears while it writes (the job may be running: a restore run
/// again on a machine that kept its disk): its own mount namespace (a user namespace too
/// when not root) where `dest` is bind-mounted on itself `nosymfollow,nodev` (Linux 5.10+),
/// so such a file fails instead. Tried first; where this host cannot, rclone runs as before
/// and a warning says what is left open.
fn no_follow_guard(dest: &str) -> String {
    format!(
        "ns=(unshare -m --propagation private)
[ \"$(id -u)\" = 0 ] || ns=(unshare -r -m --propagation private)
nofollow='mount --bind \"$1\" \"$1\" && mount -o remount,bind,nosymfollow,nodev \"$1\" && o=$(findmnt -rn -o VFS-OPTIONS --target \"$1\") && [[ ,$o, == *,nosymfollow,* && ,$o, == *,nodev,* ]]'
guard=()
if \"${{ns[@]}}\" /bin/bash -c \"$nofollow\" _ {d} >/dev/null 2>&1; then
  guard=(\"${{ns[@]}}\" /bin/bash -c \"$nofollow && shift && exec \\\"\\$@\\\"\" _ {d})
else
  echo \"warning: cannot mount {shown} nosymfollow,nodev for rclone (needs Linux 5.10+, and root or user namespaces): a link made there while rclone writes would be followed\" >&2
fi
",
        d = quote(dest),
        shown = dest.replace(['"', '\\', '$', '`'], "_"),
    )
}

/// One-shot download: `sync` for the read-only input, `copy` for the checkpoint restore.
/// Written as root into a directory the job may write, it never follows what the job made
/// there out of it (`clear_links`, `no_follow_guard`).
pub fn download(layout: &VmLayout, verb: &str, source: &str, dest: &str, log_name: &str) -> String {
    download_with(layout, verb, source, dest, log_name, "", "")
}

/// Where a machine keeps the listing of the input it downloaded last (`INPUT_LISTING`: one
/// line per object, sorted), and the source it came from: what a refresh compares the
/// input bucket with, on the machine, with the same rclone and remote.
pub fn input_listing(layout: &VmLayout) -> (String, String) {
    (
        format!("{}/input.listing", layout.log_dir),
        format!("{}/input.source", layout.log_dir),
    )
}

/// An input bucket's listing: path, size and modification time of every object, sorted.
/// No hash: a local or SMB-like remote would read every byte to make one.
/// `source` is a shell word (quoted, or an expansion).
fn input_listing_of(source: &str) -> String {
    format!(
        "/usr/bin/rclone lsf -R --files-only --fast-list --format pst --separator \"$(printf '\\t')\" {source} | LC_ALL=C sort"
    )
}

/// The input's download (`rclone sync`), its listing taken first and kept with its digest
/// (`listing_sha256=` on stdout) once the sync is done. Listed before: an object added
/// while it syncs is counted as new later, never as downloaded when it was not.
/// `only_if_changed`: skip the sync when the bucket lists as it did at the last download
/// (a new run of the job on a machine whose input is still current).
pub fn download_input(
    layout: &VmLayout,
    source: &str,
    dest: &str,
    only_if_changed: bool,
) -> String {
    let log = format!("{}/rclone-input.log", layout.log_dir);
    let (listing, source_file) = input_listing(layout);
    let (listing, source_file) = (quote(&listing), quote(&source_file));
    let digest = format!("echo \"listing_sha256=$(sha256sum < {listing} | cut -c1-64)\"\n");
    let skip = if only_if_changed {
        format!(
            "if [ -f {listing} ] && cmp -s \"$now\" {listing}; then rm -f \"$now\"; echo \"the input is as downloaded last: not synced again\" >&2; {digest}exit 0; fi\n"
        )
    } else {
        String::new()
    };
    let before = format!(
        "now=$(mktemp)
{list} > \"$now\" 2>>{qlog} || {{ rm -f \"$now\"; echo \"cannot list the input {shown}; last lines of {qlog}:\" >&2; tail -n 20 {qlog} >&2 || true; exit 1; }}
{skip}",
        list = input_listing_of(&quote(source)),
        qlog = quote(&log),
        shown = source.replace(['"', '\\', '$', '`'], "_"),
    );
    let after = format!(
        "mv \"$now\" {listing}
printf '%s\\n' {source} > {source_file}
{digest}",
        source = quote(source),
    );
    download_with(
        layout,
        "sync",
        source,
        dest,
        "rclone-input.log",
        &before,
        &after,
    )
}

fn download_with(
    layout: &VmLayout,
    verb: &str,
    source: &str,
    dest: &str,
    log_name: &str,
    before: &str,
    after: &str,
) -> String {
    let log = format!("{}/{log_name}", layout.log_dir);
    format!(
        "{PRELUDE}{lock}{follow}\
export RCLONE_CONFIG={config}
{before}mkdir -p {dest}
{clear}{guard}\
\"${{guard[@]}}\" /usr/bin/rclone {verb} {source} {dest} --verbose --fast-list{update} --log-file={qlog} {fail}
{after}",
        clear = clear_links(dest, verb),
        guard = no_follow_guard(dest),
        // A copy down (the checkpoint restore) never replaces what is newer here: a
        // restore run again on a machine that kept its disk keeps the job's latest work.
        update = if verb == "copy" { " --update" } else { "" },
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
        // The output's upload keeps what it would overwrite of an earlier run: the last one
        // too.
        let keep = if *dir == layout.mount("output") {
            format!(
                "keep=()\n  if [ -f {k} ]; then keep=(env KEEP_LOG={qlog} /bin/bash {k}); fi\n  \"${{keep[@]}}\" ",
                k = quote(&layout.output_keep_script()),
                qlog = quote(&log),
            )
        } else {
            String::new()
        };
        script.push_str(&format!(
            "if [ -d {dir} ]; then\n  \
             {keep}/usr/bin/rclone copy {dir} {remote} --checksum --verbose --no-update-modtime --log-file={qlog} {copy_fail}\n  \
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

/// What Docker keeps of a job's output on its machine, where its daemon logs to files
/// (json-file, its default) and keeps everything unless told: 256 MiB, the newest.
pub const JOB_LOG_OPTS: &str = "--log-opt max-size=64m --log-opt max-file=4";

/// How long apply watches a job it started: one that ends within this is recorded as ended
/// by the apply itself (and a failure named in its output: a typo in the command, a missing
/// file), as a refresh would record it later. Either way the job's exit is the job's, never
/// the apply's failure: one failure model, whenever it ends.
pub const EARLY_EXIT_SECS: u32 = 2;

/// Starts the container unless one with the same spec already runs (or finished cleanly);
/// one that was killed from outside (a reboot) is started again as it was, keeping its logs.
/// `watch`: wait up to [`EARLY_EXIT_SECS`] for the job to end (not for a restart policy,
/// under which Docker starts it again). A job that ended is told before the ids, in the
/// probe's words prefixed `job.` ([`probe`]'s `container=` facts and last lines).
/// `resync`: a script run before a new run starts (never under a job that runs on): the
/// input's download again, so a new run sees the bucket as it is now.
#[allow(clippy::too_many_arguments)]
pub fn container_run(
    layout: &VmLayout,
    name: &str,
    spec_digest: &str,
    mounts: &[String],
    docker_args: &str,
    image_user: Option<&str>,
    watch: bool,
    resync: Option<&str>,
) -> String {
    let watch = if watch {
        format!(
            "timeout {EARLY_EXIT_SECS} docker wait \"$name\" >/dev/null 2>&1 || true
if [ \"$(docker inspect -f '{{{{.State.Status}}}}' \"$name\")\" = exited ]; then
  docker inspect -f 'job.container={{{{.State.Status}}}}:{{{{.State.ExitCode}}}}:{{{{.Id}}}}:{{{{println}}}}job.container.finished={{{{.State.FinishedAt}}}}{{{{println}}}}job.container.error={{{{.State.Error}}}}' \"$name\"
  if [ \"$(docker inspect -f '{{{{.State.ExitCode}}}}' \"$name\")\" != 0 ]; then
    docker logs --tail {JOB_TAIL_LINES} \"$name\" 2>&1 | tail -n {JOB_TAIL_LINES} | tail -c {JOB_TAIL_BYTES} | awk '{{print \"job.container.log.\" NR \"=\" $0}}'
  fi
fi
"
        )
    } else {
        String::new()
    };
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
    # Running, or ended by itself (an in-place change, such as idle_shutdown's, runs no
    # job again: one that ended stays as it ended).
    \"{spec_digest} running 0\"|\"{spec_digest} exited \"[0-9]|\"{spec_digest} exited \"[1-9][0-9]|\"{spec_digest} exited \"1[01][0-9]|\"{spec_digest} exited \"12[0-7]) {print_ids}; exit 0 ;;
    \"{spec_digest} exited \"12[89]|\"{spec_digest} exited \"1[3-9][0-9]|\"{spec_digest} exited \"2[0-9][0-9])
      rm -f {hold}
      docker start \"$name\" >/dev/null && {print_ids} && exit 0 ;;
  esac
  docker rm -f \"$name\" >/dev/null
fi
{resync}{mkdirs}{job_user}rm -f {hold}
# A new run: the output upload keeps what this run would overwrite of earlier ones. A
# round under way is stopped rather than waited for: the next one starts over for this run.
mkdir -p {log_dir}
exec 7>{log_dir}/.rclone-output.lock
if ! flock -n 7; then
  trap 'supervisorctl -c {conf} start rclone-output >/dev/null 2>&1 || true' EXIT
  supervisorctl -c {conf} stop rclone-output >/dev/null 2>&1 || true
  flock -w 120 7 || {{ echo \"the output upload of the previous run still holds its lock after 2 minutes: not starting a new run in the middle of it (see {log_dir}/rclone-output.log)\" >&2; exit 1; }}
fi
date -u +%Y-%m-%dT%H%M%S.%3NZ > {stamp}
rm -f {log_dir}/rclone-output.uploaded.* {log_dir}/rclone-output.leftover.* {log_dir}/rclone-output.failed.* {log_dir}/job.log {log_dir}/job.log.* {idle_record}
# Docker's json-file driver keeps all a job prints: bounded here, when the job starts, and
# not in the recorded run spec, whose change would replace every running job.
log_opts=
if [ \"$(docker info -f '{{{{.LoggingDriver}}}}' 2>/dev/null)\" = json-file ]; then log_opts=\"{JOB_LOG_OPTS}\"; fi
docker run $log_opts {run_args} >/dev/null || exit $?
exec 7>&-
{watch}{print_ids}
",
        job_user = image_user
            .map(|image| mounts_for_image_user(layout, image))
            .unwrap_or_default(),
        print_ids = "docker inspect -f '{{.Id}} {{.Image}}' \"$name\"",
        resync = resync
            .map(|script| format!("/bin/bash -c {} >&2 || exit 1\n", quote(script)))
            .unwrap_or_default(),
        run_args = docker_args.strip_prefix("run ").unwrap_or(docker_args),
        log_dir = quote(&layout.log_dir),
        stamp = quote(&layout.run_stamp()),
        idle_record = quote(&layout.idle_record()),
        hold = quote(&layout.hold_file()),
        conf = quote(&layout.supervisord_conf()),
        lock = supervisor_lock(layout),
        name = quote(name),
    )
}

/// Makes the mounts usable by the user the image runs as (its `USER`: notebook and many ML
/// images are not root): the input readable (it stays read-only, mounted `:ro`), output and
/// checkpoint its own. A name is looked up in the image's `/etc/passwd` without running it.
/// The upload programs and the final flush run as root and read whatever mode it writes.
fn mounts_for_image_user(layout: &VmLayout, image: &str) -> String {
    format!(
        "image={image}
docker image inspect \"$image\" >/dev/null 2>&1 || docker pull \"$image\" >/dev/null 2>&1 || true
job_user=$(docker image inspect -f '{{{{.Config.User}}}}' \"$image\" 2>/dev/null) || job_user=
job_user=${{job_user%%:*}}
if [ -n \"$job_user\" ] && [ \"$job_user\" != root ] && [ \"$job_user\" != 0 ]; then
  if [[ \"$job_user\" =~ ^[0-9]+$ ]]; then
    job_uid=$job_user
  else
    job_uid=
    # A command of its own: an image without one cannot be created (it is never started).
    if made=$(docker create \"$image\" anycloud-never-started 2>/dev/null); then
      job_uid=$(docker cp \"$made:/etc/passwd\" - 2>/dev/null | tar -xO 2>/dev/null | awk -F: -v n=\"$job_user\" '$1 == n {{ print $3; exit }}') || job_uid=
      docker rm \"$made\" >/dev/null 2>&1 || true
    fi
    [[ \"$job_uid\" =~ ^[0-9]+$ ]] || {{ echo \"the image {shown} runs as user '$job_user', which its /etc/passwd does not name: cannot give it /mnt/output and /mnt/checkpoint\" >&2; exit 1; }}
  fi
  if [ -d {input} ]; then chmod 0755 {input}; chmod -R a+rX {input}; fi
  # -h: a link the job left there is changed itself, never what it points at.
  for mount in {output} {checkpoint}; do
    if [ -d \"$mount\" ]; then chown -R -h \"$job_uid\" \"$mount\"; fi
  done
fi
",
        image = quote(image),
        shown = image.replace(['"', '\\', '$', '`', '\''], "_"),
        input = quote(&layout.mount("input")),
        output = quote(&layout.mount("output")),
        checkpoint = quote(&layout.mount("checkpoint")),
    )
}

/// Stops the container so nothing more is written, leaving it for the flush and removal.
pub fn container_stop(layout: &VmLayout, name: &str) -> String {
    // The hold first: the boot script must not start again what anycloud stops.
    format!(
        "{PRELUDE}mkdir -p {sup}\ntouch {hold}\nif docker inspect {name} >/dev/null 2>&1; then docker stop --time 30 {name} >/dev/null; fi\n",
        sup = quote(&layout.supervisor_dir),
        hold = quote(&layout.hold_file()),
        name = quote(name)
    )
}

pub fn container_remove(name: &str) -> String {
    format!(
        "{PRELUDE}docker rm -f {} >/dev/null 2>&1 || true\n",
        quote(name)
    )
}

/// Stops the job (held: the boot script must not start it again) and the checkpoint's
/// upload, deletes the checkpoint on the machine and, given its `remote`, in its bucket, and
/// starts the upload again (it has nothing to upload until the next run writes). Without
/// `remote` the caller empties the bucket afterwards, with its own credentials.
pub fn clear_checkpoint(
    layout: &VmLayout,
    container: &str,
    dir: &str,
    remote: Option<&str>,
) -> String {
    let log = format!("{}/rclone-checkpoint-clear.log", layout.log_dir);
    let in_bucket = match remote {
        Some(remote) => format!(
            "export RCLONE_CONFIG={rclone}\n/usr/bin/rclone delete {remote} --log-file={qlog} {delete_fail}\n",
            rclone = quote(&layout.rclone_config),
            remote = quote(remote),
            qlog = quote(&log),
            delete_fail = or_tail(&log, "deleting the checkpoint"),
        ),
        None => String::new(),
    };
    format!(
        "{PRELUDE}{lock}conf={conf}
touch {hold}
if docker inspect {name} >/dev/null 2>&1; then docker stop --time 30 {name} >/dev/null; fi
# Whatever happens below, the checkpoint's upload runs again afterwards.
trap 'supervisorctl -c \"$conf\" start rclone-checkpoint >/dev/null 2>&1 || true' EXIT
supervisorctl -c \"$conf\" stop rclone-checkpoint >/dev/null 2>&1 || true
case \"$(supervisorctl -c \"$conf\" status rclone-checkpoint 2>/dev/null | awk '{{print $2}}')\" in
  RUNNING|STARTING|BACKOFF|STOPPING) echo \"the checkpoint's upload did not stop: nothing was deleted\" >&2; exit 1 ;;
esac
# The machine's copy first: were the bucket's emptied first and this failed, the upload
# would put the old checkpoint back.
if [ -d {dir} ]; then find {dir} -mindepth 1 -delete || {{ echo \"cannot empty {dir}\" >&2; exit 1; }}; fi
{in_bucket}",
        lock = supervisor_lock(layout),
        conf = quote(&layout.supervisord_conf()),
        hold = quote(&layout.hold_file()),
        name = quote(container),
        dir = quote(dir),
    )
}

/// What one read of a job's log brings back at most: a job may print gigabytes, which a
/// reader takes in pieces of this size, each from the last whole line of the one before.
pub const JOB_LOG_BYTES: usize = 4 << 20;

/// How a job stands (`state STATUS CODE`), then its output with Docker's timestamps, at most
/// [`JOB_LOG_BYTES`] of it.
pub fn job_log(container: &str, since: Option<&str>, tail: Option<usize>) -> String {
    let since = since
        .map(|s| format!(" --since {}", quote(s)))
        .unwrap_or_default();
    let tail = tail.map(|n| format!(" --tail {n}")).unwrap_or_default();
    format!(
        "{PRELUDE}name={name}
if ! state=$(docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' \"$name\" 2>/dev/null); then
  echo \"the job's container $name is not on its machine (anycloud status shows what is)\" >&2
  exit 3
fi
echo \"state $state $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)\"
# Cut by head: docker's SIGPIPE is no failure.
docker logs --timestamps{since}{tail} \"$name\" 2>&1 | head -c {JOB_LOG_BYTES} || [ \"${{PIPESTATUS[0]}}\" = 141 ]
",
        name = quote(container),
    )
}

/// The upload programs' own logs (the output's, the checkpoint's, the last upload's), each
/// under a `==> NAME <==` header, the last `tail` lines of each (default 50).
pub fn upload_logs(layout: &VmLayout, tail: Option<usize>) -> String {
    let n = tail.unwrap_or(50);
    let logs: Vec<String> = [
        "rclone-output.log",
        "rclone-checkpoint.stdout.log",
        "rclone-flush.log",
    ]
    .iter()
    .map(|f| quote(&format!("{}/{f}", layout.log_dir)))
    .collect();
    format!(
        "{PRELUDE}found=0
for log in {logs}; do
  [ -f \"$log\" ] || continue
  found=1
  echo \"==> $(basename \"$log\") <==\"
  tail -n {n} \"$log\"
done
[ \"$found\" = 1 ] || echo \"no upload has logged anything yet on this machine ({dir})\"
",
        logs = logs.join(" "),
        dir = layout.log_dir,
    )
}

/// The lines of a failed job's output a refresh brings back (status and plan show them).
pub const JOB_TAIL_LINES: usize = 5;
/// And at most this many bytes of them: a line may be as long as the job made it.
pub const JOB_TAIL_BYTES: usize = 4096;

/// One round trip that reports everything a refresh needs about a deployment's host.
pub fn probe(layout: &VmLayout, container: &str) -> String {
    format!(
        "set -uo pipefail
conf={conf}
echo \"host_dir=$([ -d {mnt} ] && echo present || echo missing)\"
# One supervisorctl (a python start, ~0.2 s) and none without a socket: a refresh probes
# thousands of these. It answers 0 or 3 (some program not running) when it reached
# supervisord, 4 when it did not.
if [ -S {sock} ] && [ -f \"$conf\" ]; then programs=$(supervisorctl -c \"$conf\" status 2>/dev/null); asked=$?; else asked=4; fi
case $asked in
  0|3) echo supervisord=up; printf '%s\\n' \"$programs\" | awk 'NF {{print \"program.\" $1 \"=\" $2}}' ;;
  *) echo supervisord=down ;;
esac
if info=$(docker inspect -f '{{{{.State.Status}}}}:{{{{.State.ExitCode}}}}:{{{{.Id}}}}:{{{{index .Config.Labels \"anycloud.spec\"}}}}{{{{println}}}}{{{{.State.StartedAt}}}}{{{{println}}}}{{{{.State.FinishedAt}}}}{{{{println}}}}{{{{.Image}}}}{{{{println}}}}{{{{.Config.Image}}}}{{{{println}}}}{{{{.State.Error}}}}' {container} 2>/dev/null); then
  {{ read -r job; read -r started; read -r finished; read -r image_id; IFS= read -r tag; IFS= read -r error; }} <<<\"$info\"
  # What the tag names now: a rebuilt image under the same tag is a new image to run.
  echo \"container.image_id=$image_id\"
  echo \"container.tag_id=$(docker image inspect -f '{{{{.Id}}}}' \"$tag\" 2>/dev/null)\"
else
  job=missing started= finished= error=
fi
echo \"container=$job\"
case \"$job\" in
  missing) ;;
  running:*) echo \"container.started=$started\" ;;
  *) echo \"container.finished=$finished\"; echo \"container.error=$error\" ;;
esac
case \"$job\" in
  missing|running:*|exited:0:*) ;;
  *) docker logs --tail {tail} {container} 2>&1 | tail -n {tail} | tail -c {JOB_TAIL_BYTES} | awk '{{print \"container.log.\" NR \"=\" $0}}' ;;
esac
{idle}echo \"rclone_config=$(sha256sum < {rclone} 2>/dev/null | cut -c1-64 || echo missing)\"
now=$(date +%s)
for entry in rclone-output:{output_log} rclone-checkpoint:{checkpoint_log}; do
  log=${{entry#*:}}
  [ -f \"$log\" ] || continue
  if tail -n 30 \"$log\" | grep -q -E 'ERROR|Failed to'; then result=errors; else result=ok; fi
  echo \"upload.${{entry%%:*}}=$(( now - $(stat -c %Y \"$log\") )):$result\"
done
for entry in rclone-output:{output_ok} rclone-checkpoint:{checkpoint_ok}; do
  ok=${{entry#*:}}
  if [ -f \"$ok\" ]; then echo \"success.${{entry%%:*}}=$(( now - $(stat -c %Y \"$ok\") ))\"; else echo \"success.${{entry%%:*}}=never\"; fi
done
",
        idle = crate::idle::probe_lines(layout),
        output_ok = quote(&crate::render::last_success_path(layout, "rclone-output")),
        checkpoint_ok = quote(&crate::render::last_success_path(layout, "rclone-checkpoint")),
        output_log = quote(&format!("{}/rclone-output.log", layout.log_dir)),
        checkpoint_log = quote(&format!("{}/rclone-checkpoint.stdout.log", layout.log_dir)),
        conf = quote(&layout.supervisord_conf()),
        sock = quote(&layout.supervisor_socket),
        mnt = quote(&layout.mnt),
        container = quote(container),
        rclone = quote(&layout.rclone_config),
        tail = JOB_TAIL_LINES,
    ) + &input_probe(layout)
}

/// How the input bucket stands against what was downloaded from it last (the machine's
/// kept listing): `input.listing_sha256=` of that listing, and `input.changed=NEW:CHANGED:GONE`
/// object counts (`unreadable` when the bucket could not be listed). Only where an input
/// was downloaded: one listing of the bucket per refresh.
fn input_probe(layout: &VmLayout) -> String {
    let (listing, source_file) = input_listing(layout);
    format!(
        "if [ -f {listing} ] && [ -f {source_file} ]; then
  echo \"input.listing_sha256=$(sha256sum < {listing} | cut -c1-64)\"
  (export RCLONE_CONFIG={rclone}; timeout 120 {list}) 2>/dev/null \\
    | awk -F'\\t' 'FILENAME == ARGV[1] {{ if (NF) old[$1] = $0; next }} NF {{ seen[$1] = 1; if (!($1 in old)) n++; else if (old[$1] != $0) c++ }} END {{ for (p in old) if (!(p in seen)) g++; printf \"input.changed=%d:%d:%d\\n\", n, c, g }}' {listing} - \\
    || echo input.changed=unreadable
fi
",
        list = input_listing_of(&format!("\"$(head -n 1 {})\"", quote(&source_file))),
        listing = quote(&listing),
        source_file = quote(&source_file),
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
/// Makes a directory (a bucket, a deployment's host dir) if it is missing, readable by its
/// owner only.
pub fn make_dir(path: &str) -> String {
    format!(
        "{PRELUDE}mkdir -p -- {p}\nchmod 0700 -- {p}\n",
        p = quote(path)
    )
}

/// Prints the contents of an owner file (nothing when there is none).
pub fn read_owner(file: &str) -> String {
    format!(
        "{PRELUDE}if [ -f {f} ]; then cat -- {f}; fi
",
        f = quote(file)
    )
}

/// Makes `dir` (0700) and records `lineage` in its owner file.
pub fn claim_dir(dir: &str, owner_file: &str, lineage: &str) -> String {
    let file = format!("{dir}/{owner_file}");
    format!(
        "{}printf '%s\\n' {l} > {t}
mv -f -- {t} {f}
",
        make_dir(dir),
        l = quote(lineage),
        t = quote(&format!("{file}.tmp")),
        f = quote(&file),
    )
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
