//! `RemoteStore`: the state in a cloud's object store (S3, Azure Blob, GCS), with the
//! store's own conditional writes as the only locking:
//!
//! - `KEY` is the state; its version is the store's (an ETag, a generation), and a write
//!   names the version it read, so a writer that lost its lock can never replace a newer
//!   state.
//! - `KEY.lock` is the lock: created only if absent, holding the holder's [`LockInfo`];
//!   deleted by its holder, or by `force-unlock` naming its id, only while it is still the
//!   object that was read.
//! - `KEY.journal/NNNNNNNNNN` are the journal's batches, each created only if absent: a
//!   holder that lost its lock and writes on collides with the new holder's batch, or finds
//!   the lock no longer its own, and stops. A batch is what [`StateStore::record`] makes
//!   durable at once: the intents of every operation about to start, with the results that
//!   came since the last batch. So a run costs one write per wave of operations, not one
//!   per operation; a run killed between batches leaves the latest results unrecorded, and
//!   those operations pending, which the next plan resolves (as after a crash mid-operation).
//! - A store that ignores conditional writes is refused at its first lock: the lock is
//!   created a second time, which must be refused.
//! - A read is consistent: the state's version is read again after the journal, and a read
//!   across which it moved (a fold landing between) is made again. A batch names its
//!   writer's lock and a fold records the locks it folded in (`folded_locks`), so a batch one
//!   serial behind under another holder's lock is replayed, never tidied away.
//! - A retried write refused by its own earlier success (the answer was lost) is
//!   recognised: a lock holding this run's id, a state holding these bytes. No lock is held
//!   across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anycloud_provider::objects::{Condition, ObjectStore};
use anycloud_provider::{ErrorCode, ProviderError};

use crate::journal::{self, Entry};
use crate::store::{LockInfo, Snapshot, StateStore, StoreError, Version};
use crate::{format, State};

/// How often a waiting `lock` asks again.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// How many taken batch numbers a flush skips before it stops believing the store.
const MAX_RENUMBER: u32 = 64;

pub struct RemoteStore {
    objects: Arc<dyn ObjectStore>,
    key: String,
    /// The lock this store holds, and the version of its object.
    held: Mutex<Option<(LockInfo, String)>>,
    /// Lineage and serial of the stored state last read or written: what the journal's
    /// batches apply to.
    stored: Mutex<(String, u64)>,
    /// Never held across an await: the executor awaits one record while another's future
    /// waits, unpolled, for its turn.
    journal: Mutex<Journal>,
    written: AtomicU64,
}

#[derive(Default)]
struct Journal {
    /// The number of the next batch.
    next: u64,
    /// Results not yet in a batch.
    waiting: Vec<Entry>,
    /// The lineage the last entries were recorded under.
    lineage: String,
    /// Batches there are (read or written), removed by the next fold.
    keys: Vec<String>,
    /// The locks of the batches replayed by the last read: what the next fold folds in.
    locks: std::collections::BTreeSet<String>,
}

fn is_condition(e: &ProviderError) -> bool {
    e.is(ErrorCode::Conflict)
}

impl RemoteStore {
    /// The state at `key` of `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>, key: impl Into<String>) -> RemoteStore {
        RemoteStore {
            objects,
            key: key.into(),
            held: Mutex::new(None),
            stored: Mutex::new((String::new(), 0)),
            journal: Mutex::new(Journal::default()),
            written: AtomicU64::new(0),
        }
    }

    fn name(&self) -> String {
        self.objects.describe(&self.key)
    }

    fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    fn journal_prefix(&self) -> String {
        format!("{}.journal/", self.key)
    }

    fn read_err(&self, e: ProviderError) -> StoreError {
        StoreError::Read {
            store: self.name(),
            source: std::io::Error::other(e),
        }
    }

    fn write_err(&self, e: ProviderError) -> StoreError {
        StoreError::Write {
            store: self.name(),
            source: std::io::Error::other(e),
        }
    }

    /// Transient failures (throttling, a dropped connection) are tried again under the
    /// providers' policy; a failed condition is an answer, never retried.
    async fn retried<T, F, Fut>(&self, call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        anycloud_provider::retry::with_retries(call, |_, _| {}).await
    }

    async fn current_lock(&self) -> Result<Option<(LockInfo, String)>, StoreError> {
        let key = self.lock_key();
        let got = self
            .retried(|| self.objects.get(&key))
            .await
            .map_err(|e| self.read_err(e))?;
        Ok(got.map(|o| {
            let info = serde_json::from_slice(&o.body).unwrap_or_else(|_| unreadable_lock());
            (info, o.version)
        }))
    }

    /// The fence before every write: the lock object is still the one this store made.
    async fn check_held(&self) -> Result<(), StoreError> {
        let ours = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(info, version)| (info.id.clone(), version.clone()));
        let Some((id, version)) = ours else {
            return Err(StoreError::NotLocked { store: self.name() });
        };
        match self.current_lock().await? {
            Some((info, now)) if info.id == id && now == version => Ok(()),
            _ => Err(StoreError::LockLost { store: self.name() }),
        }
    }

    fn held_id(&self) -> Option<String> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(info, _)| info.id.clone())
    }

    fn is_held(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts every waiting entry in a new batch. Batches are numbered when made, so their
    /// order is the order of their entries; two may be on their way at once (an operation's
    /// entries are never in two in flight: its result waits for its intent's batch).
    async fn flush(&self) -> Result<(), StoreError> {
        let (body, entries, mut n) = {
            let mut journal = self.journal();
            if journal.waiting.is_empty() {
                return Ok(());
            }
            let base = self.stored.lock().unwrap_or_else(|p| p.into_inner()).1;
            let entries = std::mem::take(&mut journal.waiting);
            let lock = self.held_id().unwrap_or_default();
            let mut body = journal::header_line(&journal.lineage, base, &lock);
            body.extend(journal::entry_lines(&entries));
            journal.next += 1;
            (body, entries, journal.next - 1)
        };
        let put_back = |entries: Vec<Entry>| {
            let mut journal = self.journal();
            let later = std::mem::replace(&mut journal.waiting, entries);
            journal.waiting.extend(later);
        };
        if let Err(e) = self.check_held().await {
            put_back(entries);
            return Err(e);
        }
        let mut renumbered = 0;
        loop {
            let key = format!("{}{n:010}", self.journal_prefix());
            match self
                .retried(|| self.objects.put(&key, body.clone(), Condition::Absent))
                .await
            {
                Ok(_) => {
                    self.journal().keys.push(key);
                    break;
                }
                // That number is someone else's: a holder force-unlocked before this one
                // locked, writing on. Unless this one lost its lock too, the next number.
                Err(e) if is_condition(&e) => {
                    renumbered += 1;
                    let lost = match self.check_held().await {
                        Err(lost) => Some(lost),
                        // More than a zombie could have written: the store misanswers.
                        Ok(()) if renumbered > MAX_RENUMBER => Some(self.write_err(e)),
                        Ok(()) => None,
                    };
                    if let Some(lost) = lost {
                        put_back(entries);
                        return Err(lost);
                    }
                    let mut journal = self.journal();
                    n = journal.next;
                    journal.next += 1;
                }
                Err(e) => {
                    put_back(entries);
                    return Err(self.write_err(e));
                }
            }
        }
        self.written.fetch_add(body.len() as u64, Ordering::Relaxed);
        // Once more, now that the intents are down: a holder force-unlocked meanwhile must
        // not start their operations.
        self.check_held().await
    }
}

impl RemoteStore {
    /// The state and the journal's batches that apply to it, replayed.
    async fn read_once(&self) -> Result<Snapshot, StoreError> {
        let got = self
            .retried(|| self.objects.get(&self.key))
            .await
            .map_err(|e| self.read_err(e))?;
        let (mut state, version) = match got {
            Some(o) => {
                let state =
                    format::from_bytes(&o.body).map_err(|source| StoreError::Invalid {
                        store: self.name(),
                        source,
                        recovery: Some(
                            "if the bucket keeps versions, an earlier version of the object is the state before the last write".into(),
                        ),
                    })?;
                (state, Version(o.version))
            }
            None => (State::unborn(), Version::absent()),
        };
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) =
            (state.lineage.clone(), state.serial);
        let prefix = self.journal_prefix();
        let keys = self
            .retried(|| self.objects.list(&prefix))
            .await
            .map_err(|e| self.read_err(e))?;
        let mut header = None;
        let mut entries = Vec::new();
        let mut next = 0;
        let mut stale = Vec::new();
        let mut locks = std::collections::BTreeSet::new();
        for key in &keys {
            if let Some(n) = key
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
            let Some(object) = self
                .retried(|| self.objects.get(key))
                .await
                .map_err(|e| self.read_err(e))?
            else {
                continue;
            };
            match journal::parse(&object.body) {
                Some((h, batch))
                    if journal::applies(&h, &state.lineage, state.serial)
                        || journal::unfolded(&h, &state) =>
                {
                    if !h.lock.is_empty() {
                        locks.insert(h.lock.clone());
                    }
                    if header.is_none() {
                        header = Some(h);
                    }
                    entries.extend(batch);
                }
                _ => stale.push(key.clone()),
            }
        }
        let replayed = entries.len();
        if let Some(h) = &header {
            journal::replay(&mut state, h, &entries);
        }
        // The store's own bookkeeping: the next fold writes its own.
        state.folded_locks.clear();
        {
            let mut journal = self.journal();
            journal.next = journal.next.max(next);
            journal.keys = keys;
            journal.locks = locks;
        }
        if self.is_held() {
            // Batches of a state that has moved on (folded, and the run died before it
            // removed them) are never replayed: tidy them away.
            for key in stale {
                let _ = self.objects.delete(&key, Condition::Always).await;
            }
        }
        Ok(Snapshot {
            state,
            version,
            replayed,
        })
    }

    /// The stored state's version now (absent if there is none).
    async fn stored_version(&self) -> Result<Version, StoreError> {
        let got = self
            .retried(|| self.objects.get(&self.key))
            .await
            .map_err(|e| self.read_err(e))?;
        Ok(got.map_or_else(Version::absent, |o| Version(o.version)))
    }

    /// Everything here rests on the store refusing a create over an object that exists. An
    /// endpoint that drops the condition (an S3-compatible server without `If-None-Match`,
    /// a proxy that strips it) would let two holders lock at once: so the lock just made is
    /// created once more, which must be refused. One request per lock.
    async fn check_conditions_hold(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        match self
            .retried(|| self.objects.put(key, body.to_vec(), Condition::Absent))
            .await
        {
            Err(e) if is_condition(&e) => Ok(()),
            answered => {
                *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let _ = self
                    .retried(|| self.objects.delete(key, Condition::Always))
                    .await;
                let how = match answered {
                    Ok(_) => "it replaced an object that exists".to_owned(),
                    Err(e) => format!("it answered: {}", e.message),
                };
                Err(StoreError::Write {
                    store: self.name(),
                    source: std::io::Error::other(format!(
                        "the store does not honour conditional writes (asked to create {key} only if absent, {how}): two runs could hold its lock at once, so anycloud does not keep state there. Use an endpoint that supports If-None-Match (S3, Azure Blob, GCS do)"
                    )),
                })
            }
        }
    }
}

/// What a lock object that does not parse (written by hand, cut short) is shown as: still a
/// lock, removable by `force-unlock` with the id it is shown with.
fn unreadable_lock() -> LockInfo {
    LockInfo {
        id: "unreadable".into(),
        operation: "unknown".into(),
        holder: "an unreadable lock object".into(),
        pid: 0,
        host: String::new(),
        since: 0,
        command: String::new(),
    }
}

#[async_trait::async_trait]
impl StateStore for RemoteStore {
    fn describe(&self) -> String {
        self.name()
    }

    async fn read(&self) -> Result<Snapshot, StoreError> {
        // A fold deletes its batches after it writes the state: a fold landing between this
        // read of the state and of the journal (a force-unlocked holder's write, in flight)
        // would leave the old state without the batches that make it current. So the state
        // must be the same version after the journal is read; if it moved, read again.
        const ATTEMPTS: u32 = 5;
        for _ in 1..ATTEMPTS {
            let snapshot = self.read_once().await?;
            if self.stored_version().await? == snapshot.version {
                return Ok(snapshot);
            }
        }
        self.read_once().await
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<LockInfo, StoreError> {
        let start = Instant::now();
        let key = self.lock_key();
        let info = LockInfo::for_this_process(operation);
        let body = serde_json::to_vec(&info).expect("plain data");
        loop {
            match self
                .retried(|| self.objects.put(&key, body.clone(), Condition::Absent))
                .await
            {
                Ok(version) => {
                    *self.held.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((info.clone(), version));
                    self.check_conditions_hold(&key, &body).await?;
                    return Ok(info);
                }
                Err(e) if is_condition(&e) => {}
                Err(e) => return Err(self.write_err(e)),
            }
            // Held: by whom? (It may have gone in between: then try again.)
            let current = self.current_lock().await?;
            let waited = start.elapsed();
            let holder = match current {
                // This very lock: an attempt whose answer was lost made it, and the retry
                // was refused.
                Some((holder, version)) if holder.id == info.id => {
                    *self.held.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((info.clone(), version));
                    return Ok(info);
                }
                Some((holder, _)) => holder,
                None if waited < timeout.max(LOCK_POLL) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => {
                    return Err(StoreError::Write {
                        store: self.name(),
                        source: std::io::Error::other(
                            "the lock object is refused as present and read as absent: the store answers inconsistently",
                        ),
                    })
                }
            };
            if waited >= timeout {
                return Err(StoreError::Locked {
                    store: self.name(),
                    holder: Box::new(holder),
                    waited,
                });
            }
            tokio::time::sleep(LOCK_POLL.min(timeout - waited)).await;
        }
    }

    async fn unlock(&self) -> Result<(), StoreError> {
        // Results not yet in a batch go in one first: they are what this run did. The lock
        // goes even if that fails (a store still down): leaving it would only make the next
        // run ask for a force-unlock; the operations stay pending for the next plan.
        let flushed = if self.is_held() {
            self.flush().await
        } else {
            Ok(())
        };
        let ours = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((_, version)) = ours else {
            return Err(StoreError::NotLocked { store: self.name() });
        };
        let key = self.lock_key();
        match self
            .retried(|| {
                self.objects
                    .delete(&key, Condition::Matches(version.clone()))
            })
            .await
        {
            Ok(()) => flushed,
            // Not ours any more (force-unlocked, maybe taken since): nothing to let go.
            Err(e) if is_condition(&e) || e.is(ErrorCode::NotFound) => flushed,
            Err(e) => Err(self.write_err(e)),
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<LockInfo, StoreError> {
        let key = self.lock_key();
        match self.current_lock().await? {
            Some((info, version)) if info.id == id => {
                match self
                    .retried(|| {
                        self.objects
                            .delete(&key, Condition::Matches(version.clone()))
                    })
                    .await
                {
                    Ok(()) => Ok(info),
                    Err(e) if is_condition(&e) => Err(StoreError::NoSuchLock {
                        store: self.name(),
                        id: id.to_owned(),
                        current: self.current_lock().await?.map(|(i, _)| Box::new(i)),
                    }),
                    Err(e) => Err(self.write_err(e)),
                }
            }
            current => Err(StoreError::NoSuchLock {
                store: self.name(),
                id: id.to_owned(),
                current: current.map(|(i, _)| Box::new(i)),
            }),
        }
    }

    async fn record(
        &self,
        lineage: &str,
        entries: &[Entry],
        durable: bool,
    ) -> Result<(), StoreError> {
        if !self.is_held() {
            return Err(StoreError::NotLocked { store: self.name() });
        }
        {
            let mut journal = self.journal();
            journal.lineage = lineage.to_owned();
            journal.waiting.extend_from_slice(entries);
        }
        if durable {
            self.flush().await?;
        }
        Ok(())
    }

    async fn write(&self, state: &State, expected: &Version) -> Result<Version, StoreError> {
        if self.is_held() {
            self.check_held().await?;
        }
        let folding: Vec<String> = {
            let journal = self.journal();
            let mut locks: Vec<String> = journal.locks.iter().cloned().collect();
            locks.extend(self.held_id());
            locks.sort();
            locks.dedup();
            locks
        };
        let body = format::to_bytes_folding(state, &folding);
        let when = if expected.is_absent() {
            Condition::Absent
        } else {
            Condition::Matches(expected.0.clone())
        };
        let len = body.len() as u64;
        let version = match self
            .retried(|| self.objects.put(&self.key, body.clone(), when.clone()))
            .await
        {
            Ok(v) => v,
            Err(e) if is_condition(&e) => {
                // A retry of a write whose answer was lost is refused by its own success:
                // the stored bytes tell.
                match self.retried(|| self.objects.get(&self.key)).await {
                    Ok(Some(stored)) if stored.body == body => stored.version,
                    _ => return Err(StoreError::Stale { store: self.name() }),
                }
            }
            Err(e) => return Err(self.write_err(e)),
        };
        self.written.fetch_add(len, Ordering::Relaxed);
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) =
            (state.lineage.clone(), state.serial);
        // Folded: the journal's batches apply to a state no longer stored, and go.
        let spent = {
            let mut journal = self.journal();
            journal.waiting.clear();
            journal.locks.clear();
            std::mem::take(&mut journal.keys)
        };
        for key in spent {
            let _ = self.objects.delete(&key, Condition::Always).await;
        }
        Ok(Version(version))
    }

    fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}
