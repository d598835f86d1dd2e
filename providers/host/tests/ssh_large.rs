//! Large scripts over SSH (issue 21): a script's input is sent while its output is read, so
//! megabytes each way finish instead of waiting on each other, and sending them is not
//! bound by the time a command has to start.

#[path = "support/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use anycloud_host::keys;
use anycloud_host::{Host, SshHost, SshTarget};
use sshd::TestHost;

/// Longer than the transport's 60 s start limit: the code before the fix gives up at that
/// limit, and one that deadlocks fails here rather than hanging the suite.
const LIMIT: Duration = Duration::from_secs(150);

fn connected() -> (TestHost, tempfile::TempDir, SshHost) {
    let host = TestHost::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keys::ensure_deployment_key(&dir.path().join("keys"), "large-scripts").unwrap();
    host.authorize(&key.public_key);
    let ssh = SshHost::new(SshTarget {
        host: host.address.clone(),
        port: host.port,
        user: host.user.clone(),
        key_path: key.private_path.clone(),
        pinned: None,
        connect_timeout: Duration::from_secs(10),
        retry_refused_key: false,
    })
    .unwrap();
    (host, dir, ssh)
}

/// One line of the script: 64 bytes, of which 24 come back on stdout.
fn script_line(i: usize) -> (String, String) {
    let said = format!("line-{i:07}-abcdefghij");
    let mut line = format!("echo {said} #");
    line.push_str(&"-".repeat(63 - line.len()));
    line.push('\n');
    (line, format!("{said}\n"))
}

/// A refresh's probe of thousands of deployments, over SSH: 10 MiB of script saying 10 MiB.
/// Its first command says megabytes before bash reads on, so the script cannot be sent whole
/// before its output is read (sent first, it stalled until the 60 s start limit gave up on
/// it); the rest keeps both directions busy to the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_ten_megabyte_script_saying_megabytes_runs_over_ssh() {
    let (_host, _dir, ssh) = connected();
    let counted = 1_000_000;
    let mut script = format!("seq 1 {counted}\n");
    let mut expected: String = (1..=counted).map(|n| format!("{n}\n")).collect();
    let lines = ((10 << 20) - script.len()) / 64;
    for i in 0..lines {
        let (line, said) = script_line(i);
        assert_eq!(line.len(), 64);
        script.push_str(&line);
        expected.push_str(&said);
    }
    // A comment up to 10 MiB.
    script.push_str(&"#".repeat((10 << 20) - script.len() - 1));
    script.push('\n');
    assert_eq!(script.len(), 10 << 20);
    assert!(expected.len() > 10 << 20, "{}", expected.len());
    let started = Instant::now();
    let out = tokio::time::timeout(LIMIT, ssh.run(&script))
        .await
        .unwrap_or_else(|_| panic!("no answer within {}s", LIMIT.as_secs()))
        .unwrap();
    eprintln!(
        "10 MiB script, {} bytes of output: {:.1}s",
        out.stdout.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout.len(), expected.len());
    assert!(
        out.stdout == expected,
        "the output differs from the script's echoes"
    );
    // The connection is still good for the next step.
    assert_eq!(ssh.run("echo next").await.unwrap().stdout, "next\n");
}

/// A script that ends long before its input does reports its own status, at once: the rest
/// of its input is not waited on.
#[tokio::test(flavor = "multi_thread")]
async fn a_script_that_exits_before_reading_all_of_its_input_reports_its_status() {
    let (_host, _dir, ssh) = connected();
    let script = format!("echo early\nexit 4\n{}", "echo never\n".repeat(1 << 20));
    let started = Instant::now();
    let out = tokio::time::timeout(LIMIT, ssh.run(&script))
        .await
        .unwrap_or_else(|_| panic!("no answer within {}s", LIMIT.as_secs()))
        .unwrap();
    assert_eq!(out.status, 4, "{}", out.stderr);
    assert_eq!(out.stdout, "early\n");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ssh.run("echo next").await.unwrap().stdout, "next\n");
}

/// An answer without end over SSH (a job's log passed on whole): past the transport's limit
/// the step fails and the command is ended, and the connection serves the next step.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_over_ssh_fails_at_the_limit() {
    let (_host, _dir, ssh) = connected();
    let e = tokio::time::timeout(LIMIT, ssh.run("yes anycloud"))
        .await
        .unwrap_or_else(|_| panic!("no answer within {}s", LIMIT.as_secs()))
        .unwrap_err();
    assert!(
        matches!(e, anycloud_host::TransportError::TooLarge(_)),
        "{e}"
    );
    assert!(e.to_string().contains("larger than 67108864 bytes"), "{e}");
    let next = ssh.run("echo still-here").await.unwrap();
    assert_eq!(next.stdout, "still-here\n");
}
