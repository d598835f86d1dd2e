//! The SSH transport against OpenSSH's sshd on a test host of its own (a network namespace).

#[path = "support/sshd.rs"]
mod sshd;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anycloud_host::keys::{self, KeyInfo};
use anycloud_host::{Host, SshHost, SshTarget, TransportError};
use sshd::TestHost;

fn client_key(dir: &std::path::Path) -> KeyInfo {
    keys::ensure_deployment_key(&dir.join("keys"), "transport-test").unwrap()
}

fn target(host: &TestHost, key: &KeyInfo, pinned: Option<String>) -> SshTarget {
    SshTarget {
        host: host.address.clone(),
        port: host.port,
        user: host.user.clone(),
        key_path: key.private_path.clone(),
        pinned,
        connect_timeout: Duration::from_secs(10),
        retry_refused_key: false,
    }
}

fn authorised_host() -> (TestHost, tempfile::TempDir, KeyInfo) {
    let host = TestHost::start();
    let dir = tempfile::tempdir().unwrap();
    let key = client_key(dir.path());
    host.authorize(&key.public_key);
    (host, dir, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_scripts_with_status_and_both_streams_and_pins_the_host_key() {
    let (host, _dir, key) = authorised_host();
    let ssh = SshHost::new(target(&host, &key, None)).unwrap();
    let out = ssh
        .run("echo to-stdout\necho to-stderr >&2\nexit 3\n")
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout, "to-stdout\n");
    assert_eq!(out.stderr, "to-stderr\n");
    // The first connection reports the key it trusted, for the caller to pin.
    assert_eq!(ssh.host_key().as_deref(), Some(&*host.host_key_fingerprint));
    // It really ran inside the host's network namespace.
    let out = ssh.run("ip -o -4 addr show").await.unwrap();
    assert!(out.stdout.contains(&host.address), "{}", out.stdout);
    // Channels share one connection: many steps at once.
    let scripts: Vec<String> = (0..8).map(|i| format!("echo {i}")).collect();
    let runs = scripts.iter().map(|s| ssh.run(s));
    for (i, out) in futures::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(out.unwrap().stdout.trim(), i.to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_atomically_with_the_mode_asked() {
    let (host, dir, key) = authorised_host();
    let ssh = SshHost::new(target(&host, &key, None)).unwrap();
    let path = dir.path().join("remote/sub/rclone.conf");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ssh.upload(path.to_str().unwrap(), &body, 0o600)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second upload replaces it; no temporary file is left behind.
    ssh.upload(path.to_str().unwrap(), b"second\n", 0o644)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["rclone.conf".to_owned()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_refused_naming_the_host_and_both_keys() {
    let (mut host, _dir, key) = authorised_host();
    let pinned = host.host_key_fingerprint.clone();
    let ssh = SshHost::new(target(&host, &key, Some(pinned.clone()))).unwrap();
    assert_eq!(ssh.connect().await.unwrap(), pinned);
    host.replace_host_key();
    let ssh = SshHost::new(target(&host, &key, Some(pinned.clone()))).unwrap();
    let started = Instant::now();
    let err = ssh.run("true").await.unwrap_err();
    assert!(
        matches!(err, TransportError::HostKeyChanged { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&host.address), "{message}");
    assert!(message.contains(&pinned), "{message}");
    assert!(message.contains(&host.host_key_fingerprint), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a changed key must not be retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_says_which_line_to_authorise() {
    let host = TestHost::start();
    let dir = tempfile::tempdir().unwrap();
    let key = client_key(dir.path());
    let ssh = SshHost::new(target(&host, &key, None)).unwrap();
    let err = ssh.run("true").await.unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&key.public_key), "{message}");
    assert!(message.contains("authorized_keys"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_a_booting_machine_and_reconnects_after_a_dropped_connection() {
    let (mut host, _dir, key) = authorised_host();
    host.stop_sshd();
    let ssh = std::sync::Arc::new(SshHost::new(target(&host, &key, None)).unwrap());
    let waiting = {
        let ssh = ssh.clone();
        tokio::spawn(async move { ssh.run("echo up").await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.start_sshd();
    assert_eq!(waiting.await.unwrap().unwrap().stdout, "up\n");

    // A command cut off by a dropped connection is an error worth retrying, not a result.
    let long = {
        let ssh = ssh.clone();
        tokio::spawn(async move { ssh.run("sleep 30").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.stop_sshd();
    let err = long.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    host.start_sshd();
    assert_eq!(ssh.run("echo again").await.unwrap().stdout, "again\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn gives_up_on_a_machine_that_never_answers() {
    let (mut host, _dir, key) = authorised_host();
    host.stop_sshd();
    let mut t = target(&host, &key, None);
    t.connect_timeout = Duration::from_secs(2);
    let ssh = SshHost::new(t).unwrap();
    let err = ssh.run("true").await.unwrap_err();
    assert!(matches!(err, TransportError::GaveUp(_)), "{err:?}");
    assert!(err.to_string().contains(&host.address), "{err}");
    // Not worth a retry of the whole step: it would only wait again.
    assert!(!anycloud_provider::ProviderError::from(err).retryable());
}
