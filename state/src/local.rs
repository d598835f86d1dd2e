//! The state in a local file: `state.json` (written atomically, the previous copy kept as
//! `state.json.backup`, mode 0600), `state.json.lock` (an advisory `flock`, released by the
//! kernel if its holder dies, holding the holder's details) and `state.json.journal`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::journal::{self, Entry};
use crate::store::{LockInfo, Snapshot, StateStore, StoreError, Version};
use crate::{format, State};

/// Test-only (documented in README): pause the fold at `before-replace` or `after-replace`
/// so a crash trial can kill the process exactly there.
pub const PAUSE_IN_FOLD: &str = "ANYCLOUD_TEST_PAUSE_IN_FOLD";

pub struct LocalStore {
    path: PathBuf,
    held: Mutex<Option<Held>>,
    /// Shared with the thread an fsync runs on, so the caller's thread is not blocked.
    journal: Mutex<Option<Arc<File>>>,
    /// The stored state's lineage and serial as last read or written: what the journal
    /// applies to.
    stored: Mutex<(String, u64)>,
    written: AtomicU64,
}

struct Held {
    file: File,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
}

fn version_of(meta: &fs::Metadata) -> Version {
    Version(format!(
        "{}:{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

impl LocalStore {
    pub fn new(path: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            path: path.into(),
            held: Mutex::new(None),
            journal: Mutex::new(None),
            stored: Mutex::new((String::new(), 0)),
            written: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock_path(&self) -> PathBuf {
        with_suffix(&self.path, ".lock")
    }

    pub fn journal_path(&self) -> PathBuf {
        with_suffix(&self.path, ".journal")
    }

    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".backup")
    }

    /// The state at `path` with its journal replayed, without locking: for tests, fixtures
    /// and reading commands.
    pub fn load(path: &Path) -> Result<State, StoreError> {
        LocalStore::new(path).read_now().map(|s| s.state)
    }

    /// Writes `state` at `path` without a lock or a version check: for fixtures only.
    pub fn save_unchecked(path: &Path, state: &State) -> Result<(), StoreError> {
        let store = LocalStore::new(path);
        store.replace(state).map(|_| ())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// What to do about a state file that cannot be read: the copy kept by the write before.
    fn recovery(&self) -> Option<String> {
        let backup = self.backup_path();
        let readable = fs::read(&backup)
            .ok()
            .is_some_and(|b| format::from_bytes(&b).is_ok());
        readable.then(|| {
            format!(
                "the state before the last write is in {b}: compare the two, and `cp {b} {s}` if it is the one to keep",
                b = backup.display(),
                s = self.path.display()
            )
        })
    }

    fn read_err(&self, source: std::io::Error) -> StoreError {
        StoreError::Read {
            store: self.name(),
            source,
        }
    }

    fn write_err(&self, source: std::io::Error) -> StoreError {
        StoreError::Write {
            store: self.name(),
            source,
        }
    }

    fn read_now(&self) -> Result<Snapshot, StoreError> {
        let (mut state, version) = match File::open(&self.path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| self.read_err(e))?;
                let meta = f.metadata().map_err(|e| self.read_err(e))?;
                let state = format::from_bytes(&bytes).map_err(|source| StoreError::Invalid {
                    store: self.name(),
                    source,
                    recovery: self.recovery(),
                })?;
                (state, version_of(&meta))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (State::unborn(), Version::absent())
            }
            Err(e) => return Err(self.read_err(e)),
        };
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) =
            (state.lineage.clone(), state.serial);
        let mut replayed = 0;
        match fs::read(self.journal_path()) {
            Ok(bytes) => {
                match journal::parse(&bytes) {
                    Some((header, entries))
                        if journal::applies(&header, &state.lineage, state.serial) =>
                    {
                        journal::replay(&mut state, &header, &entries);
                        replayed = entries.len();
                    }
                    // Folded already (the run died before removing it): the lock holder
                    // tidies it away.
                    _ if self.check_held().is_ok() => {
                        let _ = fs::remove_file(self.journal_path());
                    }
                    _ => {}
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.read_err(e)),
        }
        if self.check_held().is_ok() {
            // A folded journal whose freeing a run did not live to see.
            let _ = fs::remove_file(with_suffix(&self.path, ".journal.folded"));
        }
        Ok(Snapshot {
            state,
            version,
            replayed,
        })
    }

    fn current_version(&self) -> Result<Version, StoreError> {
        match fs::metadata(&self.path) {
            Ok(m) => Ok(version_of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Version::absent()),
            Err(e) => Err(self.read_err(e)),
        }
    }

    /// Errors unless this store holds the lock and nobody removed it since.
    fn check_held(&self) -> Result<(), StoreError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = held.as_ref() else {
            return Err(StoreError::NotLocked { store: self.name() });
        };
        let ours = held.file.metadata().map_err(|e| self.read_err(e))?;
        match fs::metadata(self.lock_path()) {
            Ok(now) if same_file(&ours, &now) => Ok(()),
            _ => Err(StoreError::LockLost { store: self.name() }),
        }
    }

    /// Writes `state` over whatever is stored and drops the journal it folds.
    fn replace(&self, state: &State) -> Result<Version, StoreError> {
        let body = format::to_bytes(state);
        let backup = self.backup_path();
        // Only builds of tests read it (the `test-hooks` feature).
        let pause = if cfg!(feature = "test-hooks") {
            std::env::var(PAUSE_IN_FOLD).ok()
        } else {
            None
        };
        let folding = self.journal_path().exists();
        let pause_at = |phase: &str| {
            if folding && pause.as_deref() == Some(phase) {
                eprintln!("anycloud-test: paused in fold ({phase})");
                std::thread::sleep(Duration::from_secs(30));
            }
        };
        // A locked store checks its lock once more right before the new state replaces the
        // old: a holder force-unlocked meanwhile writes nothing.
        let locked = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let lost = std::cell::Cell::new(false);
        let replaced =
            anycloud_provider::files::write_atomically_with(&self.path, &body, 0o600, || {
                pause_at("before-replace");
                if locked && self.check_held().is_err() {
                    lost.set(true);
                    return Err(std::io::Error::other("the lock was lost"));
                }
                if self.path.exists() {
                    // A hard link keeps the old copy without a moment where `path` is missing.
                    let _ = fs::remove_file(&backup);
                    if fs::hard_link(&self.path, &backup).is_err() {
                        fs::copy(&self.path, &backup)?;
                    }
                    let _ = fs::set_permissions(&backup, fs::Permissions::from_mode(0o600));
                }
                Ok(())
            });
        if lost.get() {
            return Err(StoreError::LockLost { store: self.name() });
        }
        replaced.map_err(|e| self.write_err(e))?;
        self.written.fetch_add(body.len() as u64, Ordering::Relaxed);
        pause_at("after-replace");
        // The state now holds everything the journal said.
        let ours = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (Some(ours), Ok(there)) = (&ours, fs::metadata(self.journal_path())) {
            if !ours.metadata().is_ok_and(|m| same_file(&m, &there)) {
                // Not the journal this store wrote: leave it to its writer.
                return self.current_version();
            }
        }
        // Out of the way at once (a rename), freed on a thread of its own: a journal of a
        // big run takes as long to free as the state takes to write, and a leftover is
        // tidied by the next reader.
        let spent = with_suffix(&self.path, ".journal.folded");
        match fs::rename(self.journal_path(), &spent) {
            Ok(()) => {
                anycloud_provider::files::sync_dir(&self.path);
                std::thread::spawn(move || fs::remove_file(spent));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.write_err(e)),
        }
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) =
            (state.lineage.clone(), state.serial);
        self.current_version()
    }
}

#[async_trait::async_trait]
impl StateStore for LocalStore {
    fn describe(&self) -> String {
        self.name()
    }

    async fn read(&self) -> Result<Snapshot, StoreError> {
        self.read_now()
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<LockInfo, StoreError> {
        let path = self.lock_path();
        let io = |e| self.write_err(e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let start = Instant::now();
        enum Attempt {
            Held(File),
            /// The file locked was force-unlocked away meanwhile: try the new one at once.
            Replaced,
            Error(StoreError),
        }
        let once = || async {
            let mut file = open_private(&path, false).map_err(|e| Attempt::Error(io(e)))?;
            match file.try_lock() {
                Ok(()) => {
                    // A force-unlock may have removed the file we locked: then the lock is
                    // the new file's, not ours; try again at once.
                    let ours = file.metadata().map_err(|e| Attempt::Error(io(e)))?;
                    match fs::metadata(&path) {
                        Ok(now) if same_file(&ours, &now) => {}
                        _ => return Err(Attempt::Replaced),
                    }
                    let info = LockInfo::for_this_process(operation);
                    let write = |file: &mut File| -> std::io::Result<()> {
                        file.set_len(0)?;
                        file.rewind()?;
                        file.write_all(serde_json::to_string(&info).expect("plain data").as_bytes())
                    };
                    write(&mut file).map_err(|e| Attempt::Error(io(e)))?;
                    *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held { file });
                    Ok(info)
                }
                Err(std::fs::TryLockError::WouldBlock) => Err(Attempt::Held(file)),
                Err(std::fs::TryLockError::Error(e)) => Err(Attempt::Error(io(e))),
            }
        };
        let attempt = || async {
            loop {
                match once().await {
                    Err(Attempt::Replaced) => continue,
                    other => return other,
                }
            }
        };
        let poll = Duration::from_millis(100);
        let waited = anycloud_provider::retry::wait_for(
            poll,
            poll,
            timeout,
            attempt,
            |e: &Attempt| matches!(e, Attempt::Held(_)),
            |_, _| {},
        )
        .await;
        match waited {
            Ok(info) => Ok(info),
            Err(Attempt::Error(e)) => Err(e),
            Err(Attempt::Replaced) => unreachable!("retried at once"),
            Err(Attempt::Held(mut file)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str(&text).unwrap_or(LockInfo {
                    id: "unknown".into(),
                    operation: "unknown".into(),
                    holder: "unknown".into(),
                    pid: 0,
                    host: "unknown".into(),
                    since: 0,
                    command: String::new(),
                });
                Err(StoreError::Locked {
                    store: self.name(),
                    holder: Box::new(holder),
                    waited: start.elapsed(),
                })
            }
        }
    }

    async fn unlock(&self) -> Result<(), StoreError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(held) = held {
            let _ = held.file.set_len(0);
            let _ = held.file.unlock();
        }
        Ok(())
    }

    async fn force_unlock(&self, id: &str) -> Result<LockInfo, StoreError> {
        let read = || -> Option<(LockInfo, fs::Metadata)> {
            let mut file = File::open(self.lock_path()).ok()?;
            let mut text = String::new();
            file.read_to_string(&mut text).ok()?;
            Some((serde_json::from_str(&text).ok()?, file.metadata().ok()?))
        };
        match read() {
            // Unlinked only if it is still the file whose holder was read.
            Some((info, meta))
                if info.id == id
                    && fs::metadata(self.lock_path()).is_ok_and(|now| same_file(&meta, &now)) =>
            {
                fs::remove_file(self.lock_path()).map_err(|e| self.write_err(e))?;
                anycloud_provider::files::sync_dir(&self.lock_path());
                Ok(info)
            }
            current => Err(StoreError::NoSuchLock {
                store: self.name(),
                id: id.to_owned(),
                current: current.map(|(info, _)| Box::new(info)),
            }),
        }
    }

    async fn record(
        &self,
        lineage: &str,
        entries: &[Entry],
        durable: bool,
    ) -> Result<(), StoreError> {
        // The fence: an intent is made durable, and a journal opened, only by the holder of
        // the lock, checked before and after. With a lock on a path a narrow race remains:
        // a holder paused between its check and its write, force-unlocked meanwhile, can
        // still append to a journal the next holder has replaced (not to the new one).
        if durable {
            self.check_held()?;
        }
        let file = {
            let mut open = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            if open.is_none() {
                if !durable {
                    self.check_held()?;
                }
                let (stored_lineage, stored_serial) = self
                    .stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let path = self.journal_path();
                // A journal of the stored state that is there already (one replayed and not
                // folded, or whose first line a crash cut short) is carried over, complete
                // lines only, into a new file that replaces it: nothing is truncated or
                // appended in place of what another writer may hold open.
                let mut fresh = journal::header_line(lineage, stored_serial, "");
                if let Some((h, entries)) = fs::read(&path).ok().and_then(|b| journal::parse(&b)) {
                    if h.lineage == lineage && journal::applies(&h, &stored_lineage, stored_serial)
                    {
                        fresh.extend(journal::entry_lines(&entries));
                    }
                }
                anycloud_provider::files::write_atomically(&path, &fresh, 0o600)
                    .map_err(|e| self.write_err(e))?;
                self.written
                    .fetch_add(fresh.len() as u64, Ordering::Relaxed);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| self.write_err(e))?;
                *open = Some(Arc::new(file));
            }
            let file = open.as_ref().expect("opened above").clone();
            let bytes = journal::entry_lines(entries);
            (&*file).write_all(&bytes).map_err(|e| self.write_err(e))?;
            self.written
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            file
        };
        if durable {
            // On a thread of its own: appends of others go on meanwhile, and the fsync
            // covers everything written before it.
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| self.write_err(std::io::Error::other(e)))?
                .map_err(|e| self.write_err(e))?;
            // Once more, now that the intents are down: a holder force-unlocked while they
            // were written must not start their operations.
            self.check_held()?;
        }
        Ok(())
    }

    async fn write(&self, state: &State, expected: &Version) -> Result<Version, StoreError> {
        self.check_held()?;
        if &self.current_version()? != expected {
            return Err(StoreError::Stale { store: self.name() });
        }
        self.replace(state)
    }

    fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}
