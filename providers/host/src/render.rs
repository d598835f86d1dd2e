//! The text the engine puts on a host: supervisord configuration, the upload programs (the
//! seed's text, with the interval from `sync_interval`), and the container's run spec.

use std::collections::BTreeMap;

use crate::layout::VmLayout;

/// The private supervisord instance's own configuration.
pub fn supervisord_conf(layout: &VmLayout, identifier: &str) -> String {
    let VmLayout {
        supervisor_dir,
        supervisor_socket,
        log_dir,
        ..
    } = layout;
    format!(
        "[unix_http_server]\n\
         file={supervisor_socket}\n\
         chmod=0700\n\
         \n\
         [supervisord]\n\
         pidfile={supervisor_dir}/supervisord.pid\n\
         logfile={log_dir}/supervisord.log\n\
         childlogdir={log_dir}\n\
         identifier={identifier}\n\
         \n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
         \n\
         [supervisorctl]\n\
         serverurl=unix://{supervisor_socket}\n\
         \n\
         [include]\n\
         files={supervisor_dir}/conf.d/*.conf\n"
    )
}

/// `[program:rclone-output]`: upload `/mnt/output` with `rclone copy` (never `sync`: several
/// jobs may share the bucket) every `interval_secs`, through [`output_keep_script`].
pub fn output_program(layout: &VmLayout, remote: &str, interval_secs: u64) -> String {
    let dir = layout.mount("output");
    let log = format!("{}/rclone-output.log", layout.log_dir);
    format!(
        "[program:rclone-output]\n\
         command=/bin/bash -c \"while true; do \\\n    \
         /bin/bash {keep} \\\n    \
         /usr/bin/rclone copy {dir} {remote} --verbose \\\n    \
         --fast-list --no-update-modtime --modify-window 1s \\\n    \
         --log-file={log} && \\\n    \
         touch {ok}; sleep {interval_secs}; done\"\n\
         autostart=true\n\
         autorestart=true\n\
         startsecs=5\n\
         startretries=999\n\
         {}",
        program_footer(layout, "rclone-output"),
        ok = last_success_path(layout, "rclone-output"),
        keep = layout.output_keep_script(),
    )
}

/// Where a run's upload keeps the bucket's files it replaces, under the output bucket.
pub const REPLACED_DIR: &str = ".anycloud-replaced";
/// Where the job's own output (`docker logs`) is kept, under the output bucket.
pub const JOB_LOGS_DIR: &str = ".anycloud-logs";

/// Wraps the output's upload (the rclone command it is given) so that nothing a job wrote
/// is lost to a later run of it: a new container or a new VM starts with an empty or older
/// `/mnt/output`, and a plain `rclone copy` would overwrite the bucket's files of the same
/// names. Before a name the run has not yet uploaded goes up, the bucket's differing
/// version is copied (server-side) into `REPLACED_DIR/<run>/` and then overwritten: no
/// delete or move (rclone's `--backup-dir` is a copy and a delete), so the VM's identity
/// needs none, on any cloud. A name is the run's own (later
/// uploads replace it plainly) once the run wrote it (newer than the run stamp) and
/// uploaded it. A file an earlier run left on the same disk is uploaded once as it is; when
/// the job rewrites it, what that upload put in the bucket goes to
/// `REPLACED_DIR/<run>.rewritten/`, never over the copy kept in `<run>/`. After a round that
/// failed part-way, later rounds keep what they replace in `…/<run>.retryN/`, so a retry
/// never overwrites a kept copy either. The wrapped command uploads only the run's own
/// names, all under a lock the container's start takes too (it stops this program first),
/// so a run cannot begin in the middle. The job's output goes to
/// `JOB_LOGS_DIR/<container>/<run>.log` each round it changed, best-effort (a failed log
/// upload is retried next round, never fails the data's).
pub fn output_keep_script(layout: &VmLayout, remote: &str, container: &str) -> String {
    format!(
        "#!/bin/bash
# Written by anycloud: the output upload, keeping what a later run would overwrite.
set -uo pipefail
dir={dir}
remote={remote}
log=${{KEEP_LOG:-{log}}}
stamp={stamp}
exec 9>{log_dir}/.rclone-output.lock
flock 9
[ -s \"$stamp\" ] || date -u +%Y-%m-%dT%H%M%S.%3NZ > \"$stamp\"
run=$(cat \"$stamp\")
list={log_dir}/rclone-output.uploaded.$run
left={log_dir}/rclone-output.leftover.$run
failed={log_dir}/rclone-output.failed.$run
touch \"$list\" \"$left\"
mkdir -p \"$dir\"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf \"$tmp\"' EXIT
s() {{ LC_ALL=C sort -u \"$@\"; }}
c() {{ LC_ALL=C comm \"$@\"; }}
# Before the upload: what is not yet the run's own, which of it the run wrote (newer than
# its start), what an earlier run left on this disk, and which of that the run rewrote.
find \"$dir\" -type f -printf '%P\\n' | s | c -23 - <(s \"$list\") > \"$tmp/pending\" || exit 1
find \"$dir\" -type f -newer \"$stamp\" -printf '%P\\n' | s | c -12 - \"$tmp/pending\" > \"$tmp/ours\" || exit 1
c -23 \"$tmp/pending\" \"$tmp/ours\" | c -23 - <(s \"$left\") > \"$tmp/older\"
c -12 \"$tmp/ours\" <(s \"$left\") > \"$tmp/rewritten\"
c -23 \"$tmp/ours\" \"$tmp/rewritten\" > \"$tmp/new\"
s \"$tmp/older\" \"$tmp/new\" > \"$tmp/first\"
n=$(cat \"$failed\" 2>/dev/null || echo 0)
retry=
[ \"$n\" -gt 0 ] && retry=.retry$n
# Uploads FILES, keeping what they replace in the bucket under BACKUP: the bucket's
# differing versions are copied aside first, then overwritten. Nothing is deleted or moved
# (--backup-dir would: a copy and a delete), so the VM's identity needs no delete.
keep() {{
  [ -s \"$1\" ] || return 0
  # The check's ERROR lines for files the bucket lacks yet are its answer, not a failure: they
  # reach the upload log, which `status` reads for errors, only when the check itself failed.
  /usr/bin/rclone check \"$dir\" \"$remote\" --one-way --files-from-raw \"$1\" --combined \"$tmp/compared\" \\
    --log-file=\"$tmp/check.log\" >/dev/null 2>&1
  checked=$?
  grep -q '^! ' \"$tmp/compared\" && {{ cat \"$tmp/check.log\" >> \"$log\"; return 1; }}
  [ \"$checked\" = 0 ] || grep -q '^[+*] ' \"$tmp/compared\" || {{ cat \"$tmp/check.log\" >> \"$log\"; return 1; }}
  sed -n 's/^\\* //p' \"$tmp/compared\" > \"$tmp/differ\"
  if [ -s \"$tmp/differ\" ]; then
    /usr/bin/rclone copy \"$remote\" \"$remote/{replaced}/$2$retry\" --files-from-raw \"$tmp/differ\" \\
      --verbose --no-update-modtime --log-file=\"$log\" || return 1
  fi
  /usr/bin/rclone copy \"$dir\" \"$remote\" --files-from-raw \"$1\" \\
    --verbose --fast-list --no-update-modtime --modify-window 1s --log-file=\"$log\"
}}
# A name's first upload by this run keeps the bucket's version under <run>/; an earlier
# run's file, once rewritten, keeps what this run uploaded of it under <run>.rewritten/,
# never over the copy kept first.
if keep \"$tmp/first\" \"$run\"; then
  cat \"$tmp/older\" >> \"$left\"
  cat \"$tmp/new\" >> \"$list\"
else
  echo $((n + 1)) > \"$failed\"
  exit 1
fi
if keep \"$tmp/rewritten\" \"$run.rewritten\"; then
  cat \"$tmp/rewritten\" >> \"$list\"
else
  echo $((n + 1)) > \"$failed\"
  exit 1
fi
joblog={log_dir}/job.log.$run
if docker logs {container} > \"$joblog.new\" 2>&1 && ! cmp -s \"$joblog.new\" \"$joblog\"; then
  if /usr/bin/rclone copyto \"$joblog.new\" \"$remote/{logs}/{container}/$run.log\" --log-file=\"$log\"; then
    mv \"$joblog.new\" \"$joblog\"
  else
    echo \"the job's log was not uploaded: trying again next round\" >> \"$log\"
  fi
fi
\"$@\" --files-from-raw \"$list\"
",
        dir = quote(&layout.mount("output")),
        remote = quote(remote),
        log = quote(&format!("{}/rclone-output.log", layout.log_dir)),
        stamp = quote(&layout.run_stamp()),
        log_dir = quote(&layout.log_dir),
        container = quote(container),
        replaced = REPLACED_DIR,
        logs = JOB_LOGS_DIR,
    )
}

/// The file an upload program touches after each upload that exited 0: its mtime is when
/// the program last uploaded everything (`anycloud status`).
pub fn last_success_path(layout: &VmLayout, program: &str) -> String {
    format!("{}/{program}.last-success", layout.log_dir)
}

/// `[program:rclone-checkpoint]`: the same upload loop for `/mnt/checkpoint`.
pub fn checkpoint_program(layout: &VmLayout, remote: &str, interval_secs: u64) -> String {
    let dir = layout.mount("checkpoint");
    format!(
        "[program:rclone-checkpoint]\n\
         command=/bin/bash -c \"while true; do \\\n    \
         /usr/bin/rclone copy {dir} {remote} \\\n    \
         --verbose --fast-list --no-update-modtime --modify-window 1s && \\\n    \
         touch {ok}; sleep {interval_secs}; done\"\n\
         autostart=true\n\
         autorestart=true\n\
         startsecs=5\n\
         startretries=999\n\
         {}",
        program_footer(layout, "rclone-checkpoint"),
        ok = last_success_path(layout, "rclone-checkpoint"),
    )
}

/// `[program:idle-shutdown]`: the idle watcher ([`crate::idle::watcher_script`]). Started
/// by the private supervisord, so it runs (and comes back after a crash or a reboot, with
/// the boot script) whether or not anycloud's process is alive.
pub fn idle_program(layout: &VmLayout) -> String {
    format!(
        "[program:{program}]\n\
         command=/bin/bash {script}\n\
         autostart=true\n\
         autorestart=true\n\
         startsecs=5\n\
         startretries=999\n\
         {}",
        program_footer(layout, crate::idle::PROGRAM),
        program = crate::idle::PROGRAM,
        script = layout.idle_script(),
    )
}

/// Lines beyond the seed's: where rclone finds its config, that stopping the program stops
/// the rclone it runs too (not just its bash loop), and where the program's own output goes
/// (so a failure can show its tail).
fn program_footer(layout: &VmLayout, program: &str) -> String {
    format!(
        "environment=RCLONE_CONFIG=\"{}\"\n\
         stopasgroup=true\n\
         killasgroup=true\n\
         redirect_stderr=true\n\
         stdout_logfile={}/{program}.stdout.log\n",
        layout.rclone_config, layout.log_dir
    )
}

/// Everything `docker run` needs, in a form that renders to a reviewable multi-line spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    pub name: String,
    pub deployment: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `(host dir, container dir, read_only)`.
    pub mounts: Vec<(String, String, bool)>,
    pub gpus: Option<String>,
    pub shm_size: Option<String>,
    pub network: String,
    pub user: Option<String>,
    /// Docker's `--restart`; none for a job that stays as it ended.
    pub restart: Option<String>,
}

impl RunSpec {
    /// The `docker run` arguments after `docker`, one flag group per line in [`Self::render`].
    pub fn argv_lines(&self) -> Vec<Vec<String>> {
        let mut lines = vec![
            vec![
                "run".into(),
                "--detach".into(),
                "--name".into(),
                self.name.clone(),
            ],
            vec![
                "--label".into(),
                format!("anycloud.deployment={}", self.deployment),
            ],
            vec!["--network".into(), self.network.clone()],
            // An init as PID 1 forwards `docker stop`'s SIGTERM to the job (a shell or python
            // as PID 1 ignores it, and every teardown would wait out the stop timeout).
            vec!["--init".into()],
        ];
        if let Some(user) = &self.user {
            lines.push(vec!["--user".into(), user.clone()]);
        }
        for (host, inside, ro) in &self.mounts {
            let suffix = if *ro { ":ro" } else { "" };
            lines.push(vec!["--volume".into(), format!("{host}:{inside}{suffix}")]);
        }
        for (k, v) in &self.env {
            lines.push(vec!["--env".into(), format!("{k}={v}")]);
        }
        if let Some(gpus) = &self.gpus {
            lines.push(vec!["--gpus".into(), gpus.clone()]);
        }
        if let Some(shm) = &self.shm_size {
            lines.push(vec!["--shm-size".into(), shm.clone()]);
        }
        if let Some(restart) = &self.restart {
            lines.push(vec!["--restart".into(), restart.clone()]);
        }
        lines.push(vec![self.image.clone()]);
        if !self.command.is_empty() {
            lines.push(self.command.clone());
        }
        lines
    }

    pub fn argv(&self) -> Vec<String> {
        self.argv_lines().into_iter().flatten().collect()
    }

    /// The shell-quoted command, one flag group per line, as it appears in plans.
    pub fn render(&self) -> String {
        let lines: Vec<String> = self.argv_lines().iter().map(|l| quote_all(l)).collect();
        format!("docker {}\n", lines.join(" \\\n  "))
    }
}

pub fn quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| {
            // A NUL byte cannot appear in a shell word; the config layer rejects it earlier.
            format!("'{}'", word.replace('\0', "").replace('\'', r"'\''"))
        })
}

pub fn quote_all(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Whether a path may go unquoted into supervisord's command lines (which have no quoting
/// of their own): letters, digits and `/ . _ - + @`.
pub fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c))
}

/// The boot script: brings a deployment back after a reboot, or a crash of supervisord or
/// dockerd, without anycloud: the private supervisord (so the upload programs) first, then
/// the job if something interrupted it (killed by a signal). A job that finished, or failed
/// by itself, or that anycloud stopped (the hold file), is left as it is. With `--watch` it
/// does so every 30 seconds, as the systemd unit runs it.
pub fn boot_script(layout: &VmLayout, container: &str, keep_from_metadata: bool) -> String {
    let (block, call) = if keep_from_metadata {
        (
            crate::scripts::block_metadata(),
            "  # Before any job runs again: a reboot forgot the rule.\n  block_metadata || { echo \"not starting the job: could not keep it from the metadata service\" >&2; exit 1; }\n",
        )
    } else {
        (String::new(), "")
    };
    format!(
        "#!/bin/bash\n\
         # anycloud: brings {mnt} back after a reboot or a crash.\n\
         set -uo pipefail\n\
         conf={conf}\n\
         name={name}\n\
         {block}\
         bring_back() (\n\
         \x20 exec 9>{lock}\n\
         \x20 flock 9\n\
         \x20 install -d -m 0700 {run} && [ -O {run} ] || {{ echo \"{run} belongs to another user\" >&2; exit 1; }}\n\
         \x20 if ! supervisorctl -c \"$conf\" pid >/dev/null 2>&1; then\n\
         \x20   # Upload loops a crashed supervisord left behind: the new one starts its own.\n\
         \x20   pkill -f -- {orphans} || true\n\
         \x20   setsid supervisord -c \"$conf\" </dev/null >/dev/null 2>&1 9>&-\n\
         \x20 fi\n\
         \x20 [ -e {hold} ] && exit 0\n\
         \x20 docker info >/dev/null 2>&1 || exit 0\n\
         {call}\
         \x20 state=$(docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' \"$name\" 2>/dev/null) || exit 0\n\
         \x20 set -- $state\n\
         \x20 if [ \"$1\" = exited ] && [ \"$2\" -ge 128 ]; then docker start \"$name\" >/dev/null; fi\n\
         )\n\
         if [ \"${{1:-}}\" = --watch ]; then\n\
         \x20 while true; do bring_back; sleep 30; done\n\
         fi\n\
         bring_back\n",
        mnt = layout.mnt,
        conf = quote(&layout.supervisord_conf()),
        name = quote(container),
        lock = quote(&format!("{}/.lock", layout.supervisor_dir)),
        run = quote(&layout.run_dir),
        hold = quote(&layout.hold_file()),
        orphans = quote(&format!(
            "^/bin/bash -c while true; do .*{}/(output|checkpoint) ",
            regex_escaped(&layout.mnt)
        )),
    )
}

/// `text` matched literally in an extended regular expression (pkill's).
fn regex_escaped(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}
