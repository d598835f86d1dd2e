//! The suite every [`StateStore`] must pass, run against a fresh, empty store from `make`
//! for each case (two stores from one `make` call share one place, as two processes would).
//! The local store runs it in `state/tests/`; a remote store runs it against its emulator.
//! Each case panics with what went wrong.

use std::future::Future;
use std::time::Duration;

use crate::journal::Entry;
use crate::store::{StateStore, StoreError};
use crate::{Pending, Resource, State};

/// Two handles on one empty place, as two processes would have.
pub trait MakeStores {
    type Store: StateStore;
    fn pair(&self) -> (Self::Store, Self::Store);
}

impl<S: StateStore, F: Fn() -> (S, S)> MakeStores for F {
    type Store = S;
    fn pair(&self) -> (S, S) {
        self()
    }
}

fn resource(n: u32, pending: Option<Pending>) -> Resource {
    Resource {
        kind: "bucket".into(),
        provider: "test".into(),
        attributes: [("n".to_owned(), serde_json::json!(n))].into(),
        private: serde_json::Value::Null,
        keep_on_destroy: false,
        dependencies: vec![],
        pending,
    }
}

fn entry(address: &str, r: Option<Resource>) -> Entry {
    Entry {
        address: address.into(),
        resource: r,
    }
}

const NO_WAIT: Duration = Duration::ZERO;

/// Runs every case.
pub async fn run<M: MakeStores>(make: &M) {
    unborn_state_reads_empty(make).await;
    lock_excludes_a_second_holder(make).await;
    a_stale_write_is_refused(make).await;
    force_unlock_frees_the_lock_and_fences_the_old_holder(make).await;
    a_crash_between_journal_and_fold_loses_nothing(make).await;
    a_folded_journal_never_undoes_a_later_write(make).await;
    records_in_flight_never_wait_for_each_other(make).await;
}

pub async fn unborn_state_reads_empty<M: MakeStores>(make: &M) {
    let (a, _) = make.pair();
    let snap = a.read().await.expect("read of an empty store");
    assert!(snap.state.resources.is_empty());
    assert!(
        snap.state.lineage.is_empty(),
        "no lineage before the first write"
    );
    assert!(snap.version.is_absent());
    assert_eq!(snap.replayed, 0);
}

pub async fn lock_excludes_a_second_holder<M: MakeStores>(make: &M) {
    let (a, b) = make.pair();
    let held = a.lock("apply", NO_WAIT).await.expect("first lock");
    match b.lock("plan", Duration::from_millis(300)).await {
        Err(StoreError::Locked { holder, .. }) => {
            assert_eq!(holder.id, held.id, "the second learns who holds it");
            assert_eq!(holder.operation, "apply");
        }
        other => panic!("a second lock must be refused while the first is held: {other:?}"),
    }
    a.unlock().await.unwrap();
    b.lock("plan", NO_WAIT)
        .await
        .expect("lock after the first let go");
    b.unlock().await.unwrap();
}

pub async fn a_stale_write_is_refused<M: MakeStores>(make: &M) {
    let (a, b) = make.pair();
    let before = b.read().await.unwrap();
    a.lock("apply", NO_WAIT).await.unwrap();
    let snap = a.read().await.unwrap();
    let mut s = snap.state.clone();
    s.ensure_lineage();
    s.serial += 1;
    s.resources.insert("x".into(), resource(1, None));
    let v1 = a.write(&s, &snap.version).await.expect("first write");
    assert_ne!(v1, snap.version);
    s.serial += 1;
    match a.write(&s, &snap.version).await {
        Err(StoreError::Stale { .. }) => {}
        other => panic!("a write over a version no longer stored must be refused: {other:?}"),
    }
    a.unlock().await.unwrap();
    // `b` read before `a` wrote: its write must not clobber `a`'s.
    b.lock("apply", NO_WAIT).await.unwrap();
    let mut old = before.state.clone();
    old.ensure_lineage();
    match b.write(&old, &before.version).await {
        Err(StoreError::Stale { .. }) => {}
        other => panic!("a writer that read before another wrote must be refused: {other:?}"),
    }
    let now = b.read().await.unwrap();
    assert!(
        now.state.resources.contains_key("x"),
        "the first write stands"
    );
    b.unlock().await.unwrap();
}

pub async fn force_unlock_frees_the_lock_and_fences_the_old_holder<M: MakeStores>(make: &M) {
    let (a, b) = make.pair();
    let held = a.lock("apply", NO_WAIT).await.unwrap();
    let snap = a.read().await.unwrap();
    let mut s = snap.state.clone();
    s.ensure_lineage();
    match b.force_unlock("not-the-id").await {
        Err(StoreError::NoSuchLock { current, .. }) => {
            assert_eq!(current.map(|c| c.id), Some(held.id.clone()));
        }
        other => panic!("force-unlock with a wrong id must be refused: {other:?}"),
    }
    let removed = b.force_unlock(&held.id).await.expect("force-unlock by id");
    assert_eq!(removed.id, held.id);
    b.lock("apply", NO_WAIT)
        .await
        .expect("the lock is free after a force-unlock");
    // The old holder lives on: it may write nothing more.
    match a
        .record(&s.lineage, &[entry("y", Some(resource(2, None)))], true)
        .await
    {
        Err(StoreError::LockLost { .. }) => {}
        other => panic!("a journal append after losing the lock must be refused: {other:?}"),
    }
    match a.write(&s, &snap.version).await {
        Err(StoreError::LockLost { .. }) | Err(StoreError::Stale { .. }) => {}
        other => panic!("a write after losing the lock must be refused: {other:?}"),
    }
    let now = b.read().await.unwrap();
    assert!(!now.state.resources.contains_key("y"));
    b.unlock().await.unwrap();
    let _ = a.unlock().await;
}

pub async fn a_crash_between_journal_and_fold_loses_nothing<M: MakeStores>(make: &M) {
    let (a, b) = make.pair();
    let lock = a.lock("apply", NO_WAIT).await.unwrap();
    let snap = a.read().await.unwrap();
    let mut state = snap.state.clone();
    state.ensure_lineage();
    let lineage = state.lineage.clone();
    // One operation finished, one started and never seen to finish, one deleted.
    a.record(
        &lineage,
        &[entry("done", Some(resource(1, Some(Pending::Create))))],
        true,
    )
    .await
    .unwrap();
    a.record(&lineage, &[entry("done", Some(resource(1, None)))], false)
        .await
        .unwrap();
    a.record(
        &lineage,
        &[
            entry("started", Some(resource(2, Some(Pending::Create)))),
            entry("gone", None),
        ],
        true,
    )
    .await
    .unwrap();
    // The run dies here: no fold, no unlock. The next run may have to clear its lock.
    drop(a);
    if let Err(StoreError::Locked { .. }) = b.lock("apply", NO_WAIT).await {
        b.force_unlock(&lock.id).await.unwrap();
        b.lock("apply", NO_WAIT).await.unwrap();
    }
    let after = b.read().await.unwrap();
    assert!(
        after.replayed >= 3,
        "the journal is replayed: {}",
        after.replayed
    );
    assert_eq!(after.state.lineage, lineage);
    assert_eq!(after.state.resources["done"].pending, None);
    assert_eq!(after.state.resources["done"].attributes["n"], 1);
    assert_eq!(
        after.state.resources["started"].pending,
        Some(Pending::Create),
        "an intent without a result stays pending"
    );
    assert!(
        after.state.serial > snap.state.serial,
        "a plan from before is stale"
    );
    // Folding it in leaves the same state, with nothing left to replay.
    b.write(&after.state, &after.version).await.expect("fold");
    let folded = b.read().await.unwrap();
    assert_eq!(folded.replayed, 0);
    assert_eq!(folded.state, after.state);
    b.unlock().await.unwrap();
}

pub async fn a_folded_journal_never_undoes_a_later_write<M: MakeStores>(make: &M) {
    let (a, b) = make.pair();
    a.lock("apply", NO_WAIT).await.unwrap();
    let snap = a.read().await.unwrap();
    let mut state: State = snap.state.clone();
    state.ensure_lineage();
    a.record(&state.lineage, &[entry("z", Some(resource(3, None)))], true)
        .await
        .unwrap();
    state.resources.insert("z".into(), resource(3, None));
    state.serial += 1;
    let v = a.write(&state, &snap.version).await.unwrap();
    // A later run removes z; an old journal must never bring it back.
    state.resources.remove("z");
    state.serial += 1;
    a.write(&state, &v).await.unwrap();
    a.unlock().await.unwrap();
    b.lock("plan", NO_WAIT).await.unwrap();
    let now = b.read().await.unwrap();
    assert!(
        !now.state.resources.contains_key("z"),
        "what the journal of an earlier run said must not come back"
    );
    assert_eq!(now.replayed, 0);
    b.unlock().await.unwrap();
}

/// The executor starts a batch's record, then, while that future waits unpolled, awaits
/// another record (a result, a made instance): neither may wait for the other.
pub async fn records_in_flight_never_wait_for_each_other<M: MakeStores>(make: &M) {
    let (a, _) = make.pair();
    a.lock("apply", NO_WAIT).await.unwrap();
    let snap = a.read().await.unwrap();
    let mut state = snap.state.clone();
    state.ensure_lineage();
    let first_entries = [entry("first", Some(resource(1, Some(Pending::Create))))];
    let mut first = Box::pin(a.record(&state.lineage, &first_entries, true));
    // Started, and left waiting (unless it is done at once).
    let mut first_done = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = first.as_mut().poll(cx) {
            first_done = Some(r);
        }
        std::task::Poll::Ready(())
    })
    .await;
    let others = async {
        a.record(
            &state.lineage,
            &[entry("result", Some(resource(2, None)))],
            false,
        )
        .await
        .unwrap();
        a.record(
            &state.lineage,
            &[entry("made", Some(resource(3, None)))],
            true,
        )
        .await
        .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), others)
        .await
        .expect("a record waited for another that was not being polled");
    match first_done {
        Some(done) => done.unwrap(),
        None => first.await.unwrap(),
    }
    let now = a.read().await.unwrap();
    for address in ["first", "result", "made"] {
        assert!(now.state.resources.contains_key(address), "{address}");
    }
    a.unlock().await.unwrap();
}
