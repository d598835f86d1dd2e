//! The interface every state backend implements.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journal::Entry;
use crate::State;

/// Which stored state a [`Snapshot`] was read from: a write succeeds only over it.
/// Opaque; a backend makes it from what its store offers (a file's identity, an ETag, a
/// generation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

impl Version {
    /// No state is stored yet.
    pub fn absent() -> Version {
        Version(String::new())
    }

    pub fn is_absent(&self) -> bool {
        self.0.is_empty()
    }
}

/// What [`StateStore::read`] found.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The stored state with the journal of an unfinished run replayed over it.
    pub state: State,
    /// The stored state's version.
    pub version: Version,
    /// How many journal entries were replayed: when any were, the holder of the lock should
    /// fold them in with a write.
    pub replayed: usize,
}

/// Who holds the lock, stored with it for the next one to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// What `anycloud force-unlock` takes.
    pub id: String,
    pub operation: String,
    pub holder: String,
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// The holder's command line (a lock written by an older anycloud has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
}

impl LockInfo {
    /// The lock this process would hold for `operation`.
    pub fn for_this_process(operation: &str) -> LockInfo {
        use std::os::unix::fs::MetadataExt;
        let holder = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| match std::fs::metadata("/proc/self") {
                Ok(m) => format!("uid {}", m.uid()),
                Err(_) => "an unknown user".into(),
            });
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.into(),
            holder,
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    pub fn describe(&self) -> String {
        let since = std::time::UNIX_EPOCH + Duration::from_secs(self.since);
        let ago = std::time::SystemTime::now()
            .duration_since(since)
            .map(|d| {
                format!(
                    ", {} ago",
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                )
            })
            .unwrap_or_default();
        let running = if self.command.is_empty() {
            format!("'{}'", self.operation)
        } else {
            format!("'{}' (`{}`)", self.operation, self.command)
        };
        format!(
            "{} (pid {} on {}, running {running} since {}{ago}; lock id {})",
            self.holder,
            self.pid,
            self.host,
            humantime::format_rfc3339_seconds(since),
            self.id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state {store} is locked by {}; waited {}. Try again when it finishes, or pass --lock-timeout. If that run is gone for good, `anycloud force-unlock {}` removes its lock", .holder.describe(), humantime::format_duration(Duration::from_secs(.waited.as_secs())), .holder.id)]
    Locked {
        store: String,
        holder: Box<LockInfo>,
        waited: Duration,
    },
    #[error("the state {store} changed since it was read (another run wrote it): this run's final write was refused. Run the command again")]
    Stale { store: String },
    #[error("the lock on the state {store} was removed while this run held it (anycloud force-unlock?): it writes nothing more, and starts nothing more. What it did before is in the state's journal, up to the moment the lock was removed")]
    LockLost { store: String },
    #[error("the state {store} is not locked by this run")]
    NotLocked { store: String },
    #[error("the state {store} has no lock with id {id}{}", .current.as_ref().map(|c| format!(" (it is locked by {})", c.describe())).unwrap_or_else(|| " (it is not locked)".into()))]
    NoSuchLock {
        store: String,
        id: String,
        current: Option<Box<LockInfo>>,
    },
    #[error("cannot read the state {store}: {source}")]
    Read {
        store: String,
        source: std::io::Error,
    },
    #[error("cannot read the state {store}: {source}{}", .recovery.as_deref().map(|r| format!("; {r}")).unwrap_or_default())]
    Invalid {
        store: String,
        source: crate::StateError,
        /// Where a good copy may be, said in the error (the local file's `.backup`).
        recovery: Option<String>,
    },
    #[error("cannot write the state {store}: {source}")]
    Write {
        store: String,
        source: std::io::Error,
    },
}

/// A place the state lives.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Where it lives, for messages.
    fn describe(&self) -> String;

    /// The state (unborn when none is stored yet), with the journal of an unfinished run
    /// replayed over it.
    async fn read(&self) -> Result<Snapshot, StoreError>;

    /// Takes the lock for `operation`, waiting up to `timeout` for a holder to let go.
    async fn lock(&self, operation: &str, timeout: Duration) -> Result<LockInfo, StoreError>;

    /// Lets go of the lock this store holds.
    async fn unlock(&self) -> Result<(), StoreError>;

    /// Removes the lock with id `id`, whoever holds it; returns who held it. A holder that
    /// lives on can write nothing more.
    async fn force_unlock(&self, id: &str) -> Result<LockInfo, StoreError>;

    /// Appends to the journal of the state last read (needs the lock). With `durable`, the
    /// entries (and all before them) are on disk when it returns: an operation's intent must
    /// be, before the operation starts. Without, they survive the process (not necessarily
    /// the machine) and the next durable record carries them to disk. `lineage` is the
    /// state's (an unborn state's new one).
    async fn record(
        &self,
        lineage: &str,
        entries: &[Entry],
        durable: bool,
    ) -> Result<(), StoreError>;

    /// Stores `state` (needs the lock) if the stored one is still `expected`, and with it
    /// folds the journal away. Returns the new version.
    async fn write(&self, state: &State, expected: &Version) -> Result<Version, StoreError>;

    /// Bytes written to the store so far (journal and state): what an operation costs.
    fn bytes_written(&self) -> u64 {
        0
    }
}
