//! The code path of `benches/plan_1000.rs` on 50 deployments, so CI runs it: a state made
//! from the first plan (as if apply had run it) must make the second plan "No changes".
//! The generator is the bench's own (`benches/fixture`).

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use anycloud::engine::{self, make_plan};
use anycloud::plan::Action;
use anycloud::registry::Providers;
use anycloud::render;
use anycloud_state::State;
use fixture::{config_text, no_refresh, state_after};

const DEPLOYMENTS: usize = 50;

#[test]
fn plan_against_a_state_holding_everything_has_no_changes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let providers = Providers::builtin(std::path::Path::new("/nonexistent/keys"));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("anycloud.yaml");
    let state_path = dir.path().join(".anycloud/state.json");
    std::fs::write(&config_path, config_text(DEPLOYMENTS)).unwrap();
    let config = engine::load_config_for(&config_path, &providers).unwrap();
    assert_eq!(config.deployments.len(), DEPLOYMENTS);

    let (graph, first) = rt
        .block_on(make_plan(&config, &State::new(), &providers, &no_refresh()))
        .unwrap();
    assert!(first.has_changes());
    assert_eq!(first.changes.len(), graph.nodes.len());
    let state = state_after(&first, State::new());
    assert_eq!(state.resources.len(), graph.nodes.len());
    anycloud_state::LocalStore::save_unchecked(&state_path, &state).unwrap();

    let loaded = anycloud_state::LocalStore::load(&state_path).unwrap();
    assert_eq!(loaded, state);
    let (_, second) = rt
        .block_on(make_plan(&config, &loaded, &providers, &no_refresh()))
        .unwrap();
    let active: Vec<&str> = second
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| c.address.as_str())
        .collect();
    assert!(active.is_empty(), "expected no changes, got: {active:?}");
    assert_eq!(second.changes.len(), graph.nodes.len());
    assert!(render::human(&second).contains("No changes."));
}
