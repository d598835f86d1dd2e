//! Plans as pull-request comments: within GitHub's 65,536 characters however large the plan,
//! a change among 1,000 deployments shown in full, the same bytes every time.

mod common;

use anycloud::render::{self, COMMENT_LIMIT};

#[test]
fn a_thousand_deployments_fit_a_comment_and_one_change_is_shown_in_full() {
    let text = common::config_text(1000);
    let config = common::parse(&text);
    let first = common::plan(&config, &common::fixed_state());

    // The first plan makes 10,001 resources and reads 1,000 inputs: far past the limit, so
    // it says what it left out.
    let md = render::markdown(&first);
    assert!(md.len() <= COMMENT_LIMIT, "{} bytes", md.len());
    assert!(md.starts_with("### anycloud plan\n\n**Plan: 10001 to add, 0 to change, 0 to replace, 0 to destroy, 1000 to read.**"), "{}", &md[..200]);
    assert!(
        md.contains("| `job-0001` | 10 | 0 | 0 | 0 | 1 |"),
        "the table comes first"
    );
    assert!(
        md.contains("> **Not shown:** the diffs of ")
            && md.contains("GitHub's limit of 65536 characters"),
        "{}",
        &md[md.len() - 600..]
    );
    assert_eq!(
        md,
        render::markdown(&common::plan(&config, &common::fixed_state())),
        "byte-identical"
    );

    // Applied, then one deployment changed: one change, its diff whole, nothing left out.
    let state = common::state_after(&first, common::fixed_state());
    let changed = text.replacen("STEPS: \"10\"", "STEPS: \"20\"", 1);
    let plan = common::plan(&common::parse(&changed), &state);
    let md = render::markdown(&plan);
    assert!(md.len() <= COMMENT_LIMIT);
    assert!(
        md.contains("**Plan: 0 to add, 0 to change, 1 to replace, 0 to destroy.**"),
        "{md}"
    );
    assert!(md.contains("| `job-0001` | 0 | 0 | 1 | 0 | 0 |"), "{md}");
    assert!(
        md.contains("<details><summary><code>deployment.job-0001.container</code>: replace (changed: env, run_spec)</summary>"),
        "{md}"
    );
    assert!(
        md.contains("-  --env 'STEPS=10'") && md.contains("+  --env 'STEPS=20'"),
        "{md}"
    );
    assert!(!md.contains("Not shown"), "{md}");
    assert_eq!(md, render::markdown(&plan));
}

/// What a job printed last, as the refresh reads it from its machine: a window title set,
/// the screen cleared, a line of backticks then a heading, an HTML tag. The plan shows it,
/// on a terminal and in a comment, as text: no escape sequence is sent, the code block it
/// is in ends only after it, the tag is not HTML.
#[test]
fn a_jobs_hostile_last_lines_stay_text_in_every_rendering() {
    let config = common::parse(&common::config_text(1));
    let first = common::plan(&config, &common::fixed_state());
    let mut state = common::state_after(&first, common::fixed_state());
    let hostile = [
        "\u{1b}]0;pwned\u{7}",
        "\u{1b}[2J",
        "```",
        "# injected heading",
        "<img src=x onerror=alert(1)>",
    ];
    state
        .resources
        .get_mut("deployment.job-0001.container")
        .expect("the container was made")
        .attributes
        .insert(
            "job".into(),
            serde_json::json!({"state": "failed", "exit_code": 3,
                "finished_at": "2026-12-04T15:25:10Z", "last_lines": hostile}),
        );
    let plan = common::plan(&config, &state);
    assert_eq!(plan.jobs.len(), 1, "{:?}", plan.jobs);

    // The terminal: styled, the only escape sequences are anycloud's own styles.
    let plain = render::human(&plan);
    assert!(!plain.contains(['\u{1b}', '\u{7}']), "{plain:?}");
    assert!(
        plain.contains("    | \\u{1b}]0;pwned\\u{7}\n    | \\u{1b}[2J\n    | ```\n"),
        "{plain}"
    );
    let styled = render::human_with(&plan, true);
    let mut stripped = Vec::new();
    let mut stream = anstream::StripStream::new(&mut stripped);
    std::io::Write::write_all(&mut stream, styled.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(stripped).unwrap(), plain);

    // The comment: the job's lines are in a block fenced by more backticks than its own
    // line of them, which a CommonMark reader closes only after the last of them.
    let md = render::markdown(&plan);
    assert!(!md.contains(['\u{1b}', '\u{7}']), "{md:?}");
    let lines: Vec<&str> = md.lines().collect();
    let open = lines
        .iter()
        .position(|l| l.starts_with("> ```"))
        .expect("a code block");
    let fence = lines[open].trim_start_matches("> ");
    assert!(fence.chars().all(|c| c == '`'), "{md}");
    assert!(
        fence.len() > 3,
        "the fence outlasts the job's ``` line: {md}"
    );
    let closes = |l: &&str| {
        l.strip_prefix("> ").is_some_and(|q| {
            let n = q.chars().take_while(|&c| c == '`').count();
            n >= fence.len() && q[n..].trim().is_empty()
        })
    };
    let close = open + 1 + lines[open + 1..].iter().position(closes).expect("closed");
    let inside: Vec<&str> = lines[open + 1..close]
        .iter()
        .map(|l| l.strip_prefix("> ").expect("quoted"))
        .collect();
    assert_eq!(
        inside,
        [
            "\\u{1b}]0;pwned\\u{7}",
            "\\u{1b}[2J",
            "```",
            "# injected heading",
            "<img src=x onerror=alert(1)>"
        ],
        "{md}"
    );
    let outside: Vec<&&str> = lines[..open].iter().chain(&lines[close + 1..]).collect();
    assert!(
        !outside
            .iter()
            .any(|l| l.contains("injected") || l.contains("<img")),
        "{md}"
    );
}
