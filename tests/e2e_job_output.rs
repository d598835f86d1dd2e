//! What a job prints is shown, never obeyed: a real job on the embedded local cloud prints
//! a window title, a clear-screen, a line of backticks then a heading, and an HTML tag; the
//! plan (on a terminal and as a pull-request comment), `status` and `logs` on a terminal
//! show them as text, and `logs` into a pipe keeps the job's bytes (as `docker logs`).
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them), and
//! util-linux's `script` for a terminal.

mod common;

use common::{build_image, wait_for, Project};

const DEPLOYMENT: &str = "out-hostile";

fn config() -> String {
    r##"
project: hostile
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  out-hostile:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "printf '\\033]0;pwned\\007\\n\\033[2J\\n```\\n# injected heading\\n<img src=x onerror=alert(1)>\\n'; sleep 4; exit 3"]
    buckets: { output: hostile-out }
"##
    .to_owned()
}

/// `anycloud ARGS` in the project with a terminal as its stdout and stderr (`script`),
/// and what the terminal received.
fn on_a_terminal(p: &Project, args: &str) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_anycloud"));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(p.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The job's escape sequences, any of which a terminal would obey.
fn has_the_jobs_escapes(text: &str) -> bool {
    text.contains("\u{1b}]0;pwned") || text.contains("\u{1b}[2J") || text.contains('\u{7}')
}

#[test]
fn a_jobs_escapes_and_markdown_are_shown_as_text() {
    common::remove_leftover_containers(&[DEPLOYMENT]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config());
    p.ok(&["apply", "--auto-approve"]);
    let plan = wait_for(60, "the job to fail", || {
        let plan = p.run(&["plan"]);
        plan.stdout
            .contains("exited with code 3")
            .then_some(plan.stdout)
    });

    // The plan, piped: the escapes are shown.
    assert!(!plan.contains('\u{1b}'), "{plan:?}");
    assert!(
        plan.contains("    | \\u{1b}]0;pwned\\u{7}\n    | \\u{1b}[2J\n    | ```\n"),
        "{plan}"
    );
    // On a terminal (styled): still no escape of the job's.
    let shown = on_a_terminal(&p, "plan");
    assert!(shown.contains("exited with code 3"), "{shown:?}");
    assert!(!has_the_jobs_escapes(&shown), "{shown:?}");
    assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"), "{shown:?}");

    // As a comment: the job's lines in a code block whose fence outlasts its backticks.
    let md = p.ok(&["plan", "--format", "markdown"]).stdout;
    assert!(!md.contains('\u{1b}'), "{md:?}");
    assert!(
        md.contains("> ````\n> \\u{1b}]0;pwned\\u{7}\n> \\u{1b}[2J\n> ```\n> # injected heading\n> <img src=x onerror=alert(1)>\n> ````\n"),
        "{md}"
    );

    // `status`, on a terminal: the job's last output, escaped.
    let status = on_a_terminal(&p, &format!("status {DEPLOYMENT}"));
    assert!(status.contains("last output: "), "{status:?}");
    assert!(!has_the_jobs_escapes(&status), "{status:?}");
    assert!(status.contains("\\u{1b}]0;pwned\\u{7}"), "{status:?}");

    // `logs` (and `--follow`) on a terminal: escaped; into a pipe: the job's bytes.
    for args in [DEPLOYMENT.to_owned(), format!("{DEPLOYMENT} --follow")] {
        let logs = on_a_terminal(&p, &format!("logs {args}"));
        assert!(!has_the_jobs_escapes(&logs), "{args}: {logs:?}");
        assert!(
            logs.contains("\\u{1b}]0;pwned\\u{7}\r\n\\u{1b}[2J\r\n```\r\n# injected heading\r\n"),
            "{args}: {logs:?}"
        );
    }
    let piped = p.ok(&["logs", DEPLOYMENT]).stdout;
    assert_eq!(
        piped,
        "\u{1b}]0;pwned\u{7}\n\u{1b}[2J\n```\n# injected heading\n<img src=x onerror=alert(1)>\n",
        "a saved log is the job's"
    );

    p.ok(&["destroy", "--auto-approve"]);
}
