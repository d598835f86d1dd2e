//! The local file store passes the suite every store must pass, and keeps what only a file
//! can promise: mode 0600, a `.backup` of the previous state, a journal at O(1) bytes per
//! operation, a v1 state migrated on read.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anycloud_state::{conformance, Entry, LocalStore, Resource, State, StateStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_local_store_passes_the_conformance_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    let make = || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".anycloud/state.json");
        dirs.lock().unwrap().push(dir);
        (LocalStore::new(&path), LocalStore::new(&path))
    };
    runtime().block_on(conformance::run(&make));
}

fn resource(attrs: usize) -> Resource {
    Resource {
        kind: "container".into(),
        provider: "local".into(),
        attributes: (0..attrs)
            .map(|i| {
                (
                    format!("attribute-{i}"),
                    serde_json::json!("a value of some length"),
                )
            })
            .collect(),
        private: serde_json::Value::Null,
        keep_on_destroy: false,
        dependencies: vec!["deployment.a.vm".into()],
        pending: None,
    }
}

#[test]
fn journal_appends_cost_the_same_whatever_the_size_of_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut big = State::new();
    for i in 0..5000 {
        big.resources
            .insert(format!("deployment.d{i}.container"), resource(10));
    }
    LocalStore::save_unchecked(&path, &big).unwrap();
    let store = LocalStore::new(&path);
    let rt = runtime();
    rt.block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        let before = store.bytes_written();
        let one = Entry {
            address: "deployment.new.container".into(),
            resource: Some(resource(10)),
        };
        store
            .record(&snap.state.lineage, std::slice::from_ref(&one), true)
            .await
            .unwrap();
        let first = store.bytes_written() - before;
        let before = store.bytes_written();
        store
            .record(&snap.state.lineage, std::slice::from_ref(&one), true)
            .await
            .unwrap();
        let second = store.bytes_written() - before;
        let state_bytes = std::fs::metadata(&path).unwrap().len();
        assert!(second < 1024, "{second} bytes for one entry");
        assert!(first < 2048, "{first} bytes for the header and one entry");
        assert!(state_bytes > 1_000_000, "the state is big: {state_bytes}");
    });
}

#[test]
fn files_are_private_and_the_previous_state_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = LocalStore::new(&path);
    runtime().block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        let mut s = snap.state.clone();
        s.ensure_lineage();
        s.serial = 1;
        let v = store.write(&s, &snap.version).await.unwrap();
        s.serial = 2;
        store.write(&s, &v).await.unwrap();
        store.unlock().await.unwrap();
    });
    for p in [path.clone(), store.backup_path(), store.lock_path()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    assert_eq!(LocalStore::load(&store.backup_path()).unwrap().serial, 1);
    assert_eq!(LocalStore::load(&path).unwrap().serial, 2);
}

/// A state file that cannot be read (a bad hand edit, a full disk) says where the copy kept
/// by the write before is, and how to put it back.
#[test]
fn a_corrupt_state_points_at_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut s = State::new();
    s.serial = 1;
    LocalStore::save_unchecked(&path, &s).unwrap();
    s.serial = 2;
    LocalStore::save_unchecked(&path, &s).unwrap();
    std::fs::write(&path, "{\"version\": 2, \"lineage\": ").unwrap();
    let store = LocalStore::new(&path);
    let err = runtime().block_on(store.read()).unwrap_err().to_string();
    let backup = store.backup_path();
    assert!(err.contains("cannot read the state"), "{err}");
    assert!(
        err.contains(&format!("cp {} {}", backup.display(), path.display())),
        "{err}"
    );
    // Without a readable backup there is nothing to point at.
    std::fs::write(&backup, "not json").unwrap();
    let err = runtime().block_on(store.read()).unwrap_err().to_string();
    assert!(!err.contains(".backup"), "{err}");
}

#[test]
fn a_killed_holder_leaves_no_lock_behind() {
    // flock is released by the kernel when its holder dies: no force-unlock needed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let rt = runtime();
    let first = LocalStore::new(&path);
    rt.block_on(first.lock("apply", Duration::ZERO)).unwrap();
    drop(first);
    let second = LocalStore::new(&path);
    rt.block_on(second.lock("apply", Duration::ZERO)).unwrap();
}

#[test]
fn a_journal_left_behind_by_a_crash_after_its_fold_is_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = LocalStore::new(&path);
    let stale = dir.path().join("journal-at-the-crash");
    runtime().block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        let mut state = snap.state.clone();
        state.ensure_lineage();
        let z = Entry {
            address: "z".into(),
            resource: Some(resource(1)),
        };
        store
            .record(&state.lineage, std::slice::from_ref(&z), true)
            .await
            .unwrap();
        std::fs::copy(store.journal_path(), &stale).unwrap();
        z.apply(&mut state);
        state.serial += 1;
        let v = store.write(&state, &snap.version).await.unwrap();
        // The run dies after the new state replaced the old, before its journal went.
        std::fs::copy(&stale, store.journal_path()).unwrap();
        // A later run removes z.
        let again = store.read().await.unwrap();
        assert_eq!(
            again.replayed, 0,
            "the journal of an older serial is not replayed"
        );
        assert!(
            !store.journal_path().exists(),
            "the lock holder tidies it away"
        );
        state.resources.remove("z");
        state.serial += 1;
        store.write(&state, &v).await.unwrap();
        std::fs::copy(&stale, store.journal_path()).unwrap();
        store.unlock().await.unwrap();
    });
    let state = LocalStore::load(&path).unwrap();
    assert!(!state.resources.contains_key("z"), "{state:?}");
}

#[test]
fn a_journal_whose_last_line_a_crash_cut_short_is_carried_on_whole_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let rt = runtime();
    let lineage = {
        let first = LocalStore::new(&path);
        rt.block_on(async {
            first.lock("apply", Duration::ZERO).await.unwrap();
            let mut s = first.read().await.unwrap().state;
            s.ensure_lineage();
            let x = Entry {
                address: "x".into(),
                resource: Some(resource(1)),
            };
            first.record(&s.lineage, &[x], true).await.unwrap();
            s.lineage
        })
    };
    // The run dies half-way through writing its next line.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("state.json.journal"))
        .unwrap()
        .write_all(br#"{"address":"y","resource":{"kind":"cont"#)
        .unwrap();
    let second = LocalStore::new(&path);
    rt.block_on(async {
        second.lock("apply", Duration::ZERO).await.unwrap();
        let snap = second.read().await.unwrap();
        assert_eq!(snap.replayed, 1);
        let w = Entry {
            address: "w".into(),
            resource: Some(resource(2)),
        };
        second.record(&lineage, &[w], true).await.unwrap();
    });
    // What the second run appended is not glued to the torn line: both entries replay.
    let state = LocalStore::load(&path).unwrap();
    assert!(state.resources.contains_key("x") && state.resources.contains_key("w"));
    assert!(!state.resources.contains_key("y"));
}
