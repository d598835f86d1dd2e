//! How the engine reaches a VM: one trait, a transport per way of getting there.
//!
//! Every VM step is a bash script (so it can be snapshot-tested and read in a log) plus the
//! files it needs; a transport only runs scripts and writes files.

use std::path::Path;
use std::process::Stdio;

use anycloud_provider::{ErrorCode, ProviderError};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The result of one script on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// What a step says on stderr is kept to its last [`Tail::LIMIT`] bytes: a chatty tool (an
/// install, a long copy) must not fill memory; its end says why it failed.
#[derive(Debug, Default)]
pub struct Tail {
    kept: std::collections::VecDeque<u8>,
    dropped: bool,
}

impl Tail {
    pub const LIMIT: usize = 64 * 1024;

    pub fn push(&mut self, data: &[u8]) {
        self.kept.extend(data);
        if self.kept.len() > Self::LIMIT {
            let excess = self.kept.len() - Self::LIMIT;
            self.kept.drain(..excess);
            self.dropped = true;
        }
    }

    pub fn into_string(self) -> String {
        let (a, b) = self.kept.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.dropped {
            format!("[…earlier output dropped]\n{text}")
        } else {
            text
        }
    }
}

/// A step's stdout is its answer (ids, probe facts, a job's log), read whole, but only up to
/// [`Answer::LIMIT`]: a job printing without end must not exhaust this machine's memory
/// through a script that passes its output on. Past the limit nothing more is kept and the
/// step fails; every script bounds what it prints far below this.
#[derive(Debug, Default)]
pub struct Answer {
    kept: Vec<u8>,
    over: bool,
}

impl Answer {
    pub const LIMIT: usize = 64 << 20;

    /// Keeps `data`; false once the answer has passed the limit (the reader may stop).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if !self.over && self.kept.len() + data.len() > Self::LIMIT {
            self.over = true;
            self.kept = Vec::new();
        }
        if !self.over {
            self.kept.extend_from_slice(data);
        }
        !self.over
    }

    pub fn into_string(self) -> Result<String, TransportError> {
        if self.over {
            return Err(TransportError::TooLarge(Self::LIMIT));
        }
        Ok(String::from_utf8_lossy(&self.kept).into_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The step's answer passed [`Answer::LIMIT`]: asking again would only repeat it.
    #[error("the host's answer is larger than {0} bytes: not read further")]
    TooLarge(usize),
    #[error("cannot reach the host: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Io(String),
    /// The host answered but will not let us in (a refused key, a changed host key): trying
    /// again cannot help.
    #[error("{0}")]
    Refused(String),
    /// The host did not answer within the connect timeout.
    #[error("cannot reach the host: {0}")]
    GaveUp(String),
    /// The host offered a key other than the pinned one.
    #[error("the host key of {host} has changed: anycloud pinned {pinned} (in state, the config or .anycloud/keys/known_hosts) but the host now offers {offered}; anycloud will not talk to it, since someone may be intercepting the connection")]
    HostKeyChanged {
        host: String,
        pinned: String,
        offered: String,
    },
}

impl From<TransportError> for ProviderError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Refused(m) => ProviderError::new(ErrorCode::Permission, m),
            e @ (TransportError::GaveUp(_) | TransportError::TooLarge(_)) => {
                ProviderError::new(ErrorCode::Failed, e.to_string())
            }
            // Only a machine anycloud did not make keeps its pin across a rebuild.
            e @ TransportError::HostKeyChanged { .. } => ProviderError::new(
                ErrorCode::Conflict,
                format!(
                    "{e}. If the machine was rebuilt on purpose, check its new key out of band \
                     (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it), set `vm.host_key:` \
                     to it in the config and run `anycloud apply --refresh=false` once to pin it"
                ),
            ),
            other => ProviderError::new(ErrorCode::Unavailable, other.to_string()),
        }
    }
}

#[async_trait]
pub trait Host: Send + Sync {
    /// Runs `script` with bash, returning its exit status and both streams.
    async fn run(&self, script: &str) -> Result<Output, TransportError>;

    /// Writes `contents` to `path` atomically (temp name, then rename) with `mode`.
    async fn upload(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), TransportError>;
}

/// What a step on this machine may see of anycloud's own environment.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
];

/// This machine, through a local `bash`.
#[derive(Clone, Debug, Default)]
pub struct LocalHost;

#[async_trait]
impl Host for LocalHost {
    async fn run(&self, script: &str) -> Result<Output, TransportError> {
        let mut command = tokio::process::Command::new("bash");
        // A clean environment: the daemons started here (dockerd, supervisord and its rclone
        // loops) live on, and must neither hold the operator's credentials nor pick up stray
        // RCLONE_* settings.
        command.env_clear();
        for (key, value) in std::env::vars_os() {
            if KEPT_ENV.iter().any(|k| key == *k) {
                command.env(key, value);
            }
        }
        let mut child = command
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            // Its own process group: a Ctrl-C at the terminal must not kill in-flight steps.
            .process_group(0)
            .spawn()
            .map_err(|e| TransportError::Unreachable(format!("cannot start bash: {e}")))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // Written while its output is read: a script past the pipe's 64 KiB whose output
        // passes it too would otherwise leave bash waiting on stdout and us on stdin.
        let write_stdin = async move {
            match stdin.write_all(script.as_bytes()).await {
                // bash stopped reading (an `exit` before the end, or it died): its exit
                // status, waited for below, is the answer.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    return Err(TransportError::Io(format!(
                        "writing the script to bash: {e}"
                    )))
                }
                Ok(()) => {}
            }
            // Closed here: the end of the script.
            drop(stdin);
            Ok::<_, TransportError>(())
        };
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let io = |e: std::io::Error| TransportError::Io(format!("reading bash's output: {e}"));
        let read_stdout = async move {
            let mut answer = Answer::default();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = out_pipe.read(&mut chunk).await.map_err(io)?;
                // Past the limit the pipe is closed: the writer gets SIGPIPE rather than
                // being read to its end.
                if n == 0 || !answer.push(&chunk[..n]) {
                    return Ok::<_, TransportError>(answer);
                }
            }
        };
        let read_stderr = async {
            let mut tail = Tail::default();
            let mut chunk = vec![0u8; 8192];
            loop {
                let n = err_pipe.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    return Ok::<_, TransportError>(tail);
                }
                tail.push(&chunk[..n]);
            }
        };
        // Reaped while its pipes are read: a helper it left behind (a `tail --pid` following
        // its log) holds stderr open until bash is gone, and a zombie is not gone.
        let wait = async {
            child
                .wait()
                .await
                .map_err(|e| TransportError::Io(format!("waiting for bash: {e}")))
        };
        let (status, (), stdout, stderr) =
            tokio::try_join!(wait, write_stdin, read_stdout, read_stderr)?;
        Ok(Output {
            status: status.code().unwrap_or(-1),
            stdout: stdout.into_string()?,
            stderr: stderr.into_string(),
        })
    }

    async fn upload(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), TransportError> {
        let path = Path::new(path).to_owned();
        let contents = contents.to_vec();
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            anycloud_provider::files::write_atomically(&path, &contents, mode)
        })
        .await
        .map_err(|e| TransportError::Io(e.to_string()))?
        .map_err(|e| TransportError::Io(format!("writing {shown}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_says_much_keeps_only_the_end_of_it() {
        let out = LocalHost
            .run("head -c 3000000 /dev/zero | tr '\\0' x >&2; echo the-end >&2; echo answer")
            .await
            .unwrap();
        assert_eq!(out.stdout, "answer\n");
        assert!(out.stderr.len() < Tail::LIMIT + 100, "{}", out.stderr.len());
        assert!(out.stderr.starts_with("[…earlier output dropped]"));
        assert!(out.stderr.ends_with("the-end\n"));
    }

    /// A script past the pipe's 64 KiB whose output passes it too (a refresh's probe of
    /// thousands of deployments) finishes: its input is written while its output is read.
    #[tokio::test]
    async fn a_script_of_megabytes_saying_megabytes_finishes() {
        let lines = 25_000;
        let line = |i: usize| format!("line-{i:06}-abcdefghijklmnopqrstuvwxyz0123456789abcdef");
        let script: String = (0..lines).map(|i| format!("echo {}\n", line(i))).collect();
        let expected: String = (0..lines).map(|i| format!("{}\n", line(i))).collect();
        assert!(script.len() > 1 << 20 && expected.len() > 1 << 20);
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), LocalHost.run(&script))
            .await
            .expect("the script finishes within 60s (writing all of it before reading deadlocks)")
            .unwrap();
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert_eq!(out.stdout.len(), expected.len());
        assert!(
            out.stdout == expected,
            "the output differs from the script's echoes"
        );
    }

    /// An answer past the limit is an error, not memory: the pipe is closed on the writer.
    #[tokio::test]
    async fn an_answer_past_the_limit_fails_without_being_kept() {
        let script = format!("head -c {} /dev/zero; echo after >&2", Answer::LIMIT + 1);
        let e = LocalHost.run(&script).await.unwrap_err();
        assert!(matches!(e, TransportError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("larger than 67108864 bytes"), "{e}");
        let just = format!("head -c {} /dev/zero", Answer::LIMIT);
        assert_eq!(
            LocalHost.run(&just).await.unwrap().stdout.len(),
            Answer::LIMIT
        );
    }

    /// A script that ends before bash has read all of it is no error: its status stands.
    #[tokio::test]
    async fn a_script_that_exits_before_its_end_reports_its_status() {
        let script = format!("exit 3\n{}", "echo never\n".repeat(200_000));
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), LocalHost.run(&script))
            .await
            .expect("finishes")
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, "");
    }
}
