use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds the state lock, written into the lock file for the next one to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub operation: String,
    pub holder: String,
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state {} is locked by {} (pid {} on {}, running '{}' since unix time {}); waited {:?}. Try again when it finishes, or pass --lock-timeout", .path.display(), .holder.holder, .holder.pid, .holder.host, .holder.operation, .holder.since, .waited)]
    Held {
        path: PathBuf,
        holder: Box<LockInfo>,
        waited: Duration,
    },
    #[error("cannot lock the state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An exclusive advisory lock (flock) on `<state>.lock`, released when dropped or when the
/// process dies — so a kill -9 never leaves a stale lock behind.
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn acquire(
        state_path: &Path,
        operation: &str,
        timeout: Duration,
    ) -> Result<StateLock, LockError> {
        let mut p = state_path.as_os_str().to_owned();
        p.push(".lock");
        let path = PathBuf::from(p);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = crate::store::open_private(&path).map_err(io)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let mut text = String::new();
                        let _ = file.read_to_string(&mut text);
                        let info: Option<LockInfo> = serde_json::from_str(&text).ok();
                        let info = info.unwrap_or(LockInfo {
                            operation: "unknown".into(),
                            holder: "unknown".into(),
                            pid: 0,
                            host: "unknown".into(),
                            since: 0,
                        });
                        return Err(LockError::Held {
                            path: state_path.into(),
                            holder: Box::new(info),
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let info = LockInfo {
            operation: operation.into(),
            holder: holder_name(),
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(serde_json::to_string(&info).expect("plain data").as_bytes())
            .map_err(io)?;
        Ok(StateLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The user running anycloud, for the lock holder's description.
fn holder_name() -> String {
    use std::os::unix::fs::MetadataExt;
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid {}", m.uid()),
            Err(_) => "an unknown user".into(),
        })
}
