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
