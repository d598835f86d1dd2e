//! The remote store's logic against an object store kept in memory that checks conditions
//! as S3, Azure Blob and GCS do. (The same suite runs against moto, Azurite and
//! fake-gcs-server in each provider's tests.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anycloud_provider::objects::{Condition, Object, ObjectStore};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use anycloud_state::{conformance, RemoteStore};

#[derive(Default)]
struct Memory {
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    next: Mutex<u64>,
    /// Writes whatever the condition, as an S3-compatible server without `If-None-Match`
    /// does.
    careless: bool,
}

impl Memory {
    fn holds(&self, key: &str, when: &Condition) -> bool {
        if self.careless {
            return true;
        }
        let objects = self.objects.lock().unwrap();
        match when {
            Condition::Always => true,
            Condition::Absent => !objects.contains_key(key),
            Condition::Matches(v) => objects.get(key).is_some_and(|(_, g)| g.to_string() == *v),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Memory {
    fn describe(&self, key: &str) -> String {
        format!("memory://{key}")
    }
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        Ok(self.objects.lock().unwrap().get(key).map(|(b, g)| Object {
            body: b.clone(),
            version: g.to_string(),
        }))
    }
    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String> {
        if !self.holds(key, &when) {
            return Err(ProviderError::new(
                ErrorCode::Conflict,
                "precondition failed",
            ));
        }
        let mut next = self.next.lock().unwrap();
        *next += 1;
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (body, *next));
        Ok(next.to_string())
    }
    async fn delete(&self, key: &str, when: Condition) -> Result<()> {
        if !self.holds(key, &when) {
            return Err(ProviderError::new(
                ErrorCode::Conflict,
                "precondition failed",
            ));
        }
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn resource(n: u32) -> anycloud_state::Resource {
    anycloud_state::Resource {
        kind: "bucket".into(),
        provider: "test".into(),
        attributes: [("n".to_owned(), serde_json::json!(n))].into(),
        private: serde_json::Value::Null,
        keep_on_destroy: false,
        dependencies: vec![],
        pending: None,
    }
}

fn entry(address: &str, n: u32) -> anycloud_state::Entry {
    anycloud_state::Entry {
        address: address.into(),
        resource: Some(resource(n)),
    }
}

#[test]
fn the_remote_store_passes_the_conformance_suite() {
    let make = || {
        let memory: Arc<dyn ObjectStore> = Arc::new(Memory::default());
        (
            RemoteStore::new(memory.clone(), "team/state.json"),
            RemoteStore::new(memory, "team/state.json"),
        )
    };
    runtime().block_on(conformance::run(&make));
}

#[test]
fn a_store_that_ignores_conditions_is_refused_at_its_first_lock() {
    use anycloud_state::StateStore;
    let memory = Arc::new(Memory {
        careless: true,
        ..Memory::default()
    });
    let store = RemoteStore::new(memory.clone(), "team/state.json");
    let runtime = runtime();
    let refused = runtime
        .block_on(store.lock("apply", std::time::Duration::from_secs(1)))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("does not honour conditional writes"),
        "{refused}"
    );
    assert!(
        memory.objects.lock().unwrap().is_empty(),
        "the lock it made is gone again"
    );
    // A store that honours them locks at the cost of one more request.
    let store = RemoteStore::new(Arc::new(Memory::default()), "team/state.json");
    runtime
        .block_on(store.lock("apply", std::time::Duration::from_secs(1)))
        .unwrap();
}

/// Lets a fold land in the middle of a read, as a force-unlocked holder's write still in
/// flight would: the first listing of the journal first writes `fold` over the state's
/// `version` and deletes the batches it folds, exactly as that holder's fold does.
struct FoldDuringRead {
    inner: Arc<Memory>,
    fold: Mutex<Option<(String, Vec<u8>, String)>>,
}

#[async_trait::async_trait]
impl ObjectStore for FoldDuringRead {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String> {
        self.inner.put(key, body, when).await
    }
    async fn delete(&self, key: &str, when: Condition) -> Result<()> {
        self.inner.delete(key, when).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let fold = self.fold.lock().unwrap().take();
        if let Some((key, body, version)) = fold {
            self.inner
                .put(&key, body, Condition::Matches(version))
                .await
                .expect("the zombie's fold lands");
            for batch in self.inner.list(prefix).await? {
                self.inner.delete(&batch, Condition::Always).await?;
            }
        }
        self.inner.list(prefix).await
    }
}

#[test]
fn a_fold_landing_between_the_state_and_the_journal_is_read_whole() {
    use anycloud_state::{State, StateStore};
    let runtime = runtime();
    let memory = Arc::new(Memory::default());
    const KEY: &str = "team/state.json";
    let zombie = RemoteStore::new(memory.clone(), KEY);
    let (version, folded) = runtime.block_on(async {
        zombie
            .lock("apply", std::time::Duration::ZERO)
            .await
            .unwrap();
        let mut state = zombie.read().await.unwrap().state;
        state.lineage = "lineage-1".into();
        state.serial = 1;
        state.resources.insert("a".into(), resource(1));
        let version = zombie
            .write(&state, &anycloud_state::Version::absent())
            .await
            .unwrap();
        // What it made next is in the journal, and in the fold it is about to write.
        let made = entry("b", 2);
        zombie
            .record("lineage-1", std::slice::from_ref(&made), true)
            .await
            .unwrap();
        let mut folded: State = state.clone();
        folded.serial = 2;
        folded.resources.insert("b".into(), resource(2));
        (version, folded)
    });
    let newcomer = RemoteStore::new(
        Arc::new(FoldDuringRead {
            inner: memory.clone(),
            fold: Mutex::new(Some((
                KEY.into(),
                anycloud_state::to_bytes(&folded),
                version.0.clone(),
            ))),
        }),
        KEY,
    );
    let snapshot = runtime.block_on(async {
        // The zombie's lock is taken from it, as `force-unlock` does.
        let lock = memory.get("team/state.json.lock").await.unwrap().unwrap();
        let info: anycloud_state::LockInfo = serde_json::from_slice(&lock.body).unwrap();
        newcomer.force_unlock(&info.id).await.unwrap();
        newcomer
            .lock("apply", std::time::Duration::ZERO)
            .await
            .unwrap();
        newcomer.read().await.unwrap()
    });
    assert_eq!(
        snapshot.state.serial, 2,
        "the folded state, not the one before it"
    );
    assert!(
        snapshot.state.resources.contains_key("b"),
        "what the zombie recorded is there: {:?}",
        snapshot.state.resources.keys().collect::<Vec<_>>()
    );
}

/// A force-unlocked holder's fold can still land after the new holder has read the state
/// and written batches of its own (its write was in flight). The new holder's batches are
/// then one serial behind the stored state; they were never folded into it, and whoever
/// reads next replays them: nothing the new holder made is orphaned.
#[test]
fn a_newer_holders_batches_survive_a_fold_landing_over_them() {
    use anycloud_state::{StateStore, StoreError, Version};
    let runtime = runtime();
    const KEY: &str = "team/state.json";
    let memory = Arc::new(Memory::default());
    let zombie = RemoteStore::new(memory.clone(), KEY);
    let newcomer = RemoteStore::new(memory.clone(), KEY);
    runtime.block_on(async {
        let zombie_lock = zombie.lock("apply", Duration::ZERO).await.unwrap();
        let mut state = zombie.read().await.unwrap().state;
        state.lineage = "lineage-1".into();
        state.serial = 1;
        state.resources.insert("a".into(), resource(1));
        let v1 = zombie.write(&state, &Version::absent()).await.unwrap();
        zombie
            .record("lineage-1", &[entry("b", 2)], true)
            .await
            .unwrap();
        // The fold the zombie is about to write: its batch folded in.
        let mut folded = state.clone();
        folded.serial = 2;
        folded.resources.insert("b".into(), resource(2));
        folded.folded_locks = vec![zombie_lock.id.clone()];

        newcomer.force_unlock(&zombie_lock.id).await.unwrap();
        newcomer.lock("apply", Duration::ZERO).await.unwrap();
        let read = newcomer.read().await.unwrap();
        assert!(read.state.resources.contains_key("b"));
        newcomer
            .record("lineage-1", &[entry("n", 3)], true)
            .await
            .unwrap();

        // The zombie's fold, in flight since before the force-unlock, lands now.
        memory
            .put(
                KEY,
                anycloud_state::to_bytes(&folded),
                Condition::Matches(v1.0.clone()),
            )
            .await
            .unwrap();
        memory
            .delete("team/state.json.journal/0000000000", Condition::Always)
            .await
            .unwrap();

        // The newcomer's own fold is refused: the state moved under it.
        let mut mine = read.state.clone();
        mine.resources.insert("n".into(), resource(3));
        assert!(matches!(
            newcomer.write(&mine, &read.version).await,
            Err(StoreError::Stale { .. })
        ));
        newcomer.unlock().await.unwrap();

        let next = RemoteStore::new(memory.clone(), KEY).read().await.unwrap();
        let names: Vec<&String> = next.state.resources.keys().collect();
        assert_eq!(names, ["a", "b", "n"], "what the newcomer made is not lost");
    });
}

/// The other side of replaying what a fold did not fold in: batches a fold did fold in
/// (replayed by its read), left behind by a crash before they were deleted, never come back
/// over what that run changed after them.
#[test]
fn batches_a_fold_replayed_are_not_replayed_again_when_left_behind() {
    use anycloud_state::{StateStore, Version};
    let runtime = runtime();
    const KEY: &str = "team/state.json";
    const BATCH: &str = "team/state.json.journal/0000000000";
    let memory = Arc::new(Memory::default());
    let crashed = RemoteStore::new(memory.clone(), KEY);
    let next = RemoteStore::new(memory.clone(), KEY);
    let z = entry("z", 0);
    runtime.block_on(async {
        let lock = crashed.lock("apply", Duration::ZERO).await.unwrap();
        let mut state = crashed.read().await.unwrap().state;
        state.lineage = "lineage-1".into();
        state.serial = 1;
        crashed.write(&state, &Version::absent()).await.unwrap();
        crashed.record("lineage-1", &[z], true).await.unwrap();
        let left = memory.get(BATCH).await.unwrap().unwrap().body;
        // It dies; the next run reads its journal, removes z, folds, and dies before the
        // batch it folded is deleted.
        next.force_unlock(&lock.id).await.unwrap();
        next.lock("apply", Duration::ZERO).await.unwrap();
        let read = next.read().await.unwrap();
        assert!(read.state.resources.contains_key("z"));
        let mut changed = read.state.clone();
        changed.resources.remove("z");
        next.write(&changed, &read.version).await.unwrap();
        memory.put(BATCH, left, Condition::Always).await.unwrap();
        next.unlock().await.unwrap();
        let now = RemoteStore::new(memory.clone(), KEY).read().await.unwrap();
        assert!(
            !now.state.resources.contains_key("z"),
            "a batch that fold replayed came back"
        );
    });
}
