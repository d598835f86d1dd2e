//! anycloud: `anycloud.yaml` → resource graph → plan → apply, with a state store.
//!
//! The engine knows no cloud: it checks the config and compiles it into a [`graph::Graph`]
//! from the providers' declarations, asks each node's provider (through
//! [`anycloud_provider::Provider`]) for its desired attributes and its current ones, diffs
//! them into a [`plan::Plan`], and [`apply`] executes the plan.

pub mod apply;
pub mod cli;
pub mod config;
pub mod engine;
pub mod escape;
pub mod graph;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod render;
pub mod shell;
pub mod stream;
