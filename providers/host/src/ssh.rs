//! A VM reached over SSH (russh), behind the same [`Host`] trait as this machine.
//!
//! One connection per host and key, shared by every step on it (each step is a channel).
//! The connection is (re)made on demand, retried while the machine boots, and refuses a
//! host key other than the pinned one. Connections to one address start a few at a time:
//! sshd drops connections beyond `MaxStartups` (10 by default) still authenticating, and
//! 200 deployments on one machine, each with its own key, would otherwise all knock at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;

use crate::scripts;
use crate::transport::{Host, Output, TransportError};

/// How long opening a channel and starting a command may take (its input is sent after).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How often a running command's session is checked for having ended.
const WATCH_EVERY: Duration = Duration::from_secs(10);
/// Connections to one address (host and port) that may be authenticating at once: half of
/// sshd's default `MaxStartups` of 10. sshd counts a connection as starting until it has
/// reaped the child that served it, a little after the client is done with it; under load
/// (CI with tests in parallel) 8 at once was seen to pass 10 in sshd's count.
pub const STARTUPS_PER_ADDRESS: usize = 5;

/// A command that says nothing for this long is taken for lost (every long step streams
/// its log): the step is retried, as after a cut connection.
const SILENCE_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key_path: PathBuf,
    /// The host key's `SHA256:…` fingerprint. `None` trusts the first key seen, which
    /// [`SshHost::host_key`] then reports so the caller can pin it.
    pub pinned: Option<String>,
    /// How long to keep trying to reach a machine that is still booting.
    pub connect_timeout: Duration,
    /// A fresh cloud VM may refuse the key until its init has installed it.
    pub retry_refused_key: bool,
}

impl SshTarget {
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

pub struct SshHost {
    target: SshTarget,
    key: Arc<PrivateKey>,
    public_key: String,
    key_fingerprint: String,
    session: tokio::sync::Mutex<Option<Arc<Handle<KeyCheck>>>>,
    seen_host_key: Arc<Mutex<Option<String>>>,
    /// The key this connection trusts: the target's pin, or the first key met. A reconnect
    /// (after a dropped connection) must meet the same key.
    pin: Mutex<Option<String>>,
    /// sshd allows 10 sessions per connection by default (MaxSessions): stay under it.
    channels: tokio::sync::Semaphore,
    commands: AtomicU64,
    /// Shared by every connection to the same address (see [`STARTUPS_PER_ADDRESS`]).
    startups: Arc<tokio::sync::Semaphore>,
    connections: AtomicU64,
}

/// Checks the server's key against the pin and remembers what it saw.
struct KeyCheck {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for KeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let public = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        let fingerprint = public.fingerprint(HashAlg::Sha256).to_string();
        let accepted = self.pinned.as_deref().is_none_or(|p| p == fingerprint);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        Ok(accepted)
    }
}

enum Attempt {
    /// Worth trying again while the machine may still be booting.
    Transient(String),
    Permanent(TransportError),
}

impl SshHost {
    pub fn new(target: SshTarget) -> Result<SshHost, TransportError> {
        SshHost::with_startups(
            target,
            Arc::new(tokio::sync::Semaphore::new(STARTUPS_PER_ADDRESS)),
        )
    }

    /// A host whose connection starts take turns with others' to the same address.
    pub fn with_startups(
        target: SshTarget,
        startups: Arc<tokio::sync::Semaphore>,
    ) -> Result<SshHost, TransportError> {
        let (key, info) = crate::keys::load(&target.key_path)
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        Ok(SshHost {
            key: Arc::new(key),
            public_key: info.public_key,
            key_fingerprint: info.fingerprint,
            session: tokio::sync::Mutex::new(None),
            seen_host_key: Arc::new(Mutex::new(None)),
            pin: Mutex::new(target.pinned.clone()),
            channels: tokio::sync::Semaphore::new(8),
            commands: AtomicU64::new(0),
            startups,
            connections: AtomicU64::new(0),
            target,
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// How many commands (round trips) this connection has run.
    pub fn round_trips(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// How many times it connected (and signed in).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The fingerprint of the host key offered on the last connection.
    pub fn host_key(&self) -> Option<String> {
        self.seen_host_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connects now (waiting for the machine if needed) and returns the host key's fingerprint.
    pub async fn connect(&self) -> Result<String, TransportError> {
        self.session().await?;
        self.host_key()
            .ok_or_else(|| TransportError::Io("connected without a host key".into()))
    }

    async fn session(&self) -> Result<Arc<Handle<KeyCheck>>, TransportError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        *slot = None;
        let waited = anycloud_provider::retry::wait_for(
            Duration::from_millis(250),
            Duration::from_secs(5),
            self.target.connect_timeout,
            || self.attempt(),
            |e: &Attempt| matches!(e, Attempt::Transient(_)),
            |e: &Attempt, _| {
                if let Attempt::Transient(why) = e {
                    anycloud_provider::output::line(&format!(
                        "waiting for SSH on {}: {why}",
                        self.target.describe()
                    ));
                }
            },
        )
        .await;
        match waited {
            Ok(handle) => {
                let mut pin = self.pin.lock().unwrap_or_else(|p| p.into_inner());
                if pin.is_none() {
                    *pin = self.host_key();
                }
                drop(pin);
                let handle = Arc::new(handle);
                *slot = Some(handle.clone());
                Ok(handle)
            }
            Err(Attempt::Permanent(e)) => Err(e),
            // Waited long enough: retrying the whole step would only wait again.
            Err(Attempt::Transient(why)) => Err(TransportError::GaveUp(format!(
                "{}: {why} (tried for {}s)",
                self.target.describe(),
                self.target.connect_timeout.as_secs()
            ))),
        }
    }

    async fn attempt(&self) -> Result<Handle<KeyCheck>, Attempt> {
        let config = Arc::new(client::Config {
            // A dead peer (a VM stopped under us) is noticed within a minute.
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            ..Default::default()
        });
        // Held until signed in (or failed): that is the span sshd's MaxStartups counts.
        let _turn = self
            .startups
            .acquire()
            .await
            .map_err(|e| Attempt::Permanent(TransportError::Io(e.to_string())))?;
        let pinned = self.pin.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let check = KeyCheck {
            pinned: pinned.clone(),
            seen: self.seen_host_key.clone(),
        };
        let address = (self.target.host.as_str(), self.target.port);
        let connected = tokio::time::timeout(
            Duration::from_secs(20),
            client::connect(config, address, check),
        )
        .await;
        let mut handle = match connected {
            Err(_) => return Err(Attempt::Transient("no answer within 20s".into())),
            Ok(Err(e)) => {
                if let (Some(pinned), Some(seen)) = (&pinned, self.host_key()) {
                    if *pinned != seen {
                        return Err(Attempt::Permanent(TransportError::HostKeyChanged {
                            host: self.target.describe(),
                            pinned: pinned.clone(),
                            offered: seen,
                        }));
                    }
                }
                return Err(Attempt::Transient(e.to_string()));
            }
            Ok(Ok(h)) => h,
        };
        // An RSA key must sign with SHA-2 (OpenSSH 8.8 refuses SHA-1); others have one hash.
        let hash = if self.key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(self.key.clone(), hash);
        let auth = handle
            .authenticate_publickey(self.target.user.clone(), key)
            .await
            .map_err(|e| Attempt::Transient(format!("authentication: {e}")))?;
        if !auth.success() {
            let refused = format!(
                "{} refused the key {} ({}). To let anycloud in, add this line to ~{}/.ssh/authorized_keys on {}:\n  {}",
                self.target.describe(),
                self.target.key_path.display(),
                self.key_fingerprint,
                self.target.user,
                self.target.host,
                self.public_key
            );
            return Err(if self.target.retry_refused_key {
                Attempt::Transient(refused)
            } else {
                Attempt::Permanent(TransportError::Refused(refused))
            });
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// Runs `command` with `stdin`, collecting both streams and the exit status.
    async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        stream: bool,
    ) -> Result<Output, TransportError> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let _slot = self
            .channels
            .acquire()
            .await
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let session = self.session().await?;
        let lost = |e: russh::Error| {
            TransportError::Unreachable(format!("{}: {e}", self.target.describe()))
        };
        // Starting a command takes moments: a connection that dies meanwhile must not leave
        // it waiting for a reply that never comes. Its input is sent afterwards, while its
        // output is read: however large either is, neither side waits on the other.
        let start = async {
            let channel = session.channel_open_session().await.map_err(lost)?;
            channel.exec(true, command).await.map_err(lost)?;
            Ok::<_, TransportError>(channel)
        };
        let channel = tokio::time::timeout(START_LIMIT, start)
            .await
            .map_err(|_| {
                TransportError::Unreachable(format!(
                    "{}: the command did not start within {}s",
                    self.target.describe(),
                    START_LIMIT.as_secs()
                ))
            })??;
        let (mut channel, input) = channel.split();
        // Waits for the window the command's reading opens; dropped unfinished once the
        // channel has closed (a command that ended without reading all of it).
        let send = async {
            input.data_bytes(stdin.to_vec()).await?;
            input.eof().await
        };
        tokio::pin!(send);
        let mut sending = true;
        let mut send_failed = None;
        let (mut stdout, mut stderr) = (
            crate::transport::Answer::default(),
            crate::transport::Tail::default(),
        );
        let (mut status, mut signal) = (None, None);
        let mut lines = LineSplitter::default();
        let mut quiet_since = std::time::Instant::now();
        loop {
            // The keepalives notice a dead peer; this notices a session that ended without
            // telling the channel, and a command silent for far longer than any step is.
            let message = tokio::select! {
                sent = &mut send, if sending => {
                    sending = false;
                    // The session is gone: the messages end, or the watch below notices.
                    send_failed = sent.err();
                    continue;
                }
                m = channel.wait() => m,
                _ = tokio::time::sleep(WATCH_EVERY) => {
                    if session.is_closed() || quiet_since.elapsed() > SILENCE_LIMIT {
                        break;
                    }
                    continue;
                }
            };
            let Some(message) = message else { break };
            quiet_since = std::time::Instant::now();
            match message {
                // stdout is the step's answer (ids, probe facts), kept in the guard up to its
                // limit, past which the command is ended rather than read to its end; stderr
                // is what it has to say.
                ChannelMsg::Data { data } if !stdout.push(&data) => {
                    let _ = input.close().await;
                    return Err(TransportError::TooLarge(crate::transport::Answer::LIMIT));
                }
                ChannelMsg::Data { .. } => {}
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    stderr.push(&data);
                    if stream {
                        lines.feed(&data);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status as i32),
                ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
                _ => {}
            }
        }
        match status {
            Some(status) => Ok(Output {
                status,
                stdout: stdout.into_string()?,
                stderr: stderr.into_string(),
            }),
            // Without an exit status the script may have been cut short: the caller retries,
            // and the scripts are written to be run again.
            None => Err(TransportError::Unreachable(format!(
                "{}: the connection ended before the command finished{}{}",
                self.target.describe(),
                signal
                    .map(|s| format!(" (signal {s:?})"))
                    .unwrap_or_default(),
                send_failed
                    .map(|e| format!(" (sending its input: {e})"))
                    .unwrap_or_default()
            ))),
        }
    }
}

/// `command` as root where the login user may use sudo without a password, as cloud images
/// log in (`admin`, `ubuntu`, `azureuser`): every step installs, starts and writes what only
/// root may. A user without sudo runs it as themselves (a machine of their own, set up).
pub fn as_root(command: &str) -> String {
    format!(
        "if [ \"$(id -u)\" != 0 ] && sudo -n true 2>/dev/null; then exec sudo -n {command}; else exec {command}; fi"
    )
}

/// Splits streamed bytes into lines for the progress display.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if !text.is_empty() {
                anycloud_provider::output::line(text);
            }
        }
    }
}

#[async_trait]
impl Host for SshHost {
    async fn run(&self, script: &str) -> Result<Output, TransportError> {
        self.exec(&as_root("bash -s"), script.as_bytes(), true)
            .await
    }

    async fn upload(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), TransportError> {
        let sha256 = anycloud_provider::digest::sha256_hex(contents);
        let script = scripts::upload(path, mode, contents.len(), &sha256);
        let command = as_root(&format!("bash -c {}", crate::render::quote(&script)));
        let out = self.exec(&command, contents, false).await?;
        let failed = format!(
            "writing {path} on {}: {}",
            self.target.describe(),
            out.stderr.trim()
        );
        match out.status {
            0 => Ok(()),
            // The bytes did not all arrive (a cut connection): sending them again may work.
            scripts::UPLOAD_INCOMPLETE => Err(TransportError::Io(failed)),
            // No permission, no space: sending them again will not help.
            _ => Err(TransportError::Refused(failed)),
        }
    }
}

/// One connection per target (machine, user, key and pin), shared by every step on it;
/// connection starts to one address take turns ([`STARTUPS_PER_ADDRESS`]).
#[derive(Default)]
pub struct SshPool {
    all: Mutex<std::collections::HashMap<SshTarget, Arc<SshHost>>>,
    startups: Mutex<std::collections::HashMap<(String, u16), Arc<tokio::sync::Semaphore>>>,
}

impl SshPool {
    pub fn get(&self, target: SshTarget) -> Result<Arc<SshHost>, TransportError> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get(&target) {
            return Ok(c.clone());
        }
        let startups = self
            .startups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((target.host.clone(), target.port))
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(STARTUPS_PER_ADDRESS)))
            .clone();
        let host = Arc::new(SshHost::with_startups(target.clone(), startups)?);
        all.insert(target, host.clone());
        Ok(host)
    }

    /// Round trips made by every connection so far.
    pub fn round_trips(&self) -> u64 {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.values().map(|c| c.round_trips()).sum()
    }

    /// Connections made (signed in) so far, reconnections included.
    pub fn connections(&self) -> u64 {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.values().map(|c| c.connections()).sum()
    }
}
