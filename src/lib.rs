//! anycloud: `anycloud.yaml` → resource graph → plan → apply, with a state file.
//!
//! The engine knows no cloud: it compiles the config into a [`graph::Graph`], asks each
//! node's provider (through [`anycloud_provider::Provider`]) for its desired attributes and
//! its current ones, diffs them into a [`plan::Plan`], and [`apply`] executes the plan.

pub mod apply;
pub mod bucket;
pub mod cli;
pub mod config;
pub mod engine;
pub mod graph;
pub mod plan;
pub mod progress;
pub mod providers;
pub mod render;
pub mod retry;
