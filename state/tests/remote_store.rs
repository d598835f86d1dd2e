//! The remote store's logic against an object store kept in memory that checks conditions
//! as S3, Azure Blob and GCS do. (The same suite runs against moto, Azurite and
//! fake-gcs-server in each provider's tests.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

#[test]
fn the_remote_store_passes_the_conformance_suite() {
    let make = || {
        let memory: Arc<dyn ObjectStore> = Arc::new(Memory::default());
        (
            RemoteStore::new(memory.clone(), "team/state.json"),
            RemoteStore::new(memory, "team/state.json"),
        )
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(conformance::run(&make));
}

#[test]
fn a_store_that_ignores_conditions_is_refused_at_its_first_lock() {
    use anycloud_state::StateStore;
    let memory = Arc::new(Memory {
        careless: true,
        ..Memory::default()
    });
    let store = RemoteStore::new(memory.clone(), "team/state.json");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
