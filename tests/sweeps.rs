//! Sweeps (`matrix:`): members are ordinary deployments with stable ids, and the plan
//! groups them.

mod common;

use anycloud::render;

const SWEEP: &str = r#"
project: snap
defaults: { provider: local }
providers:
  local: { root: /srv/anycloud-snap }
deployments:
  train:
    matrix: { lr: [0.1, 0.01], seed: [1, 2] }
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "${{ matrix.lr }}", --seed, "${{matrix.seed}}"]
      env: { SEED: "${{ matrix.seed }}", HOME_STAYS: "$HOME" }
"#;

/// The sweep above written out by hand.
const BY_HAND: &str = r#"
project: snap
defaults: { provider: local }
providers:
  local: { root: /srv/anycloud-snap }
deployments:
  train-lr-0-1-seed-1:
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "0.1", --seed, "1"]
      env: { SEED: "1", HOME_STAYS: "$HOME" }
  train-lr-0-1-seed-2:
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "0.1", --seed, "2"]
      env: { SEED: "2", HOME_STAYS: "$HOME" }
  train-lr-0-01-seed-1:
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "0.01", --seed, "1"]
      env: { SEED: "1", HOME_STAYS: "$HOME" }
  train-lr-0-01-seed-2:
    container:
      image: registry.local/train:v1
      command: [python, train.py, --lr, "0.01", --seed, "2"]
      env: { SEED: "2", HOME_STAYS: "$HOME" }
"#;

fn ids(config: &anycloud::config::Config) -> Vec<String> {
    config.deployments.iter().map(|d| d.id.clone()).collect()
}

#[test]
fn members_are_the_deployments_written_by_hand() {
    let sweep = common::parse(SWEEP);
    let by_hand = common::parse(BY_HAND);
    assert_eq!(sweep.deployments, by_hand.deployments);
    let state = common::fixed_state();
    let (a, b) = (common::plan(&sweep, &state), common::plan(&by_hand, &state));
    assert_eq!(
        a.changes, b.changes,
        "the same graph, addresses and attributes"
    );
}

#[test]
fn a_value_added_to_an_axis_renames_no_member_and_changes_nothing_of_theirs() {
    let before = common::parse(SWEEP);
    let after = common::parse(&SWEEP.replace("seed: [1, 2]", "seed: [1, 2, 3]"));
    let (old, new) = (ids(&before), ids(&after));
    assert_eq!(new.len(), 6);
    for id in &old {
        assert!(new.contains(id), "{id} was renamed: {new:?}");
    }
    // The same config gives the same ids.
    assert_eq!(ids(&common::parse(SWEEP)), old);
    // Applied, then planned with the new value: only the new members' resources appear.
    let first = common::plan(&before, &common::fixed_state());
    let state = common::state_after(&first, common::fixed_state());
    let plan = common::plan(&after, &state);
    for c in plan.active() {
        assert!(
            c.address.contains("-seed-3."),
            "{} is {:?} though its member did not change",
            c.address,
            c.action
        );
    }
    assert!(plan.summary.add > 0);
}

#[test]
fn plan_of_a_sweep_human() {
    // Two members keep the snapshot short; the summary's line is the sweep's.
    let two = SWEEP.replace("seed: [1, 2]", "seed: [7]");
    let plan = common::plan(&common::parse(&two), &common::fixed_state());
    let human = render::human(&plan);
    assert!(
        human.contains("sweep train: 2 deployments (lr × seed)\n"),
        "{human}"
    );
    // The members that do the same are one line at the top, not one each.
    assert!(
        human.starts_with(
            "sweep train, 2 of 2 deployments (train-lr-0-01-seed-7, train-lr-0-1-seed-7): new; its job will start\n"
        ),
        "{human}"
    );
    insta::assert_snapshot!("plan_sweep_human", human);
}

#[test]
fn a_markdown_plan_of_a_sweep_names_it_under_the_summary() {
    let plan = common::plan(&common::parse(SWEEP), &common::fixed_state());
    let markdown = render::markdown(&plan);
    assert!(
        markdown.contains("**\n\n`sweep train: 4 deployments (lr × seed)`  \n"),
        "{markdown}"
    );
    assert!(
        markdown.contains("- sweep train, 4 of 4 deployments ("),
        "{markdown}"
    );
}

#[test]
fn plan_of_a_sweep_json_names_each_members_values() {
    let plan = common::plan(&common::parse(SWEEP), &common::fixed_state());
    let json: serde_json::Value = serde_json::from_str(&render::json(&plan)).unwrap();
    insta::assert_snapshot!(
        "plan_sweep_json_sweeps",
        serde_json::to_string_pretty(&json["sweeps"]).unwrap()
    );
}

/// `--target NAME` of a sweep, and `status NAME`, are its members.
#[test]
fn a_sweeps_name_targets_its_members() {
    common::build_image("anycloud-e2e:v1");
    let p = common::Project::new(
        r#"
project: sweep-target
deployments:
  sweep-tgt:
    matrix: { seed: [1, 2] }
    container: { image: "anycloud-e2e:v1", command: [/bin/sh, /job.sh] }
  sweep-other:
    container: { image: "anycloud-e2e:v1", command: [/bin/sh, /job.sh] }
"#,
    );
    let plan = p.ok(&["plan", "--target", "sweep-tgt", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let deployments: std::collections::BTreeSet<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str()?.strip_prefix("deployment."))
        .map(|rest| rest.split('.').next().unwrap())
        .collect();
    assert_eq!(
        deployments,
        ["sweep-tgt-seed-1", "sweep-tgt-seed-2"].into(),
        "{plan:#}"
    );
    let status = p.ok(&["status", "sweep-tgt"]);
    assert!(
        status.stdout.contains("sweep-tgt-seed-1") && !status.stdout.contains("sweep-other"),
        "{status:?}"
    );
}
