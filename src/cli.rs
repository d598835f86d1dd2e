//! The command line (DESIGN §2): Terraform's conventions, so muscle memory works.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anycloud_state::{State, StateLock};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{self, UserError};
use crate::plan::{Plan, PlanOptions, PLAN_FORMAT_VERSION};
use crate::progress::Progress;
use crate::providers::Providers;
use crate::{apply, bucket, render};

#[derive(Parser, Debug)]
#[command(
    name = "anycloud",
    version,
    about = "Plan and apply containerised jobs on cloud VMs, with their data synced to buckets"
)]
pub struct Cli {
    /// The config file.
    #[arg(
        short = 'f',
        long = "config",
        global = true,
        default_value = "anycloud.yaml"
    )]
    pub config: PathBuf,
    /// The state file.
    #[arg(long, global = true, default_value = ".anycloud/state.json")]
    pub state: PathBuf,
    /// How long to wait for another anycloud holding the state lock (e.g. 30s, 5m).
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// No colours (also NO_COLOR).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Only errors and results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30s or 5m"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("'{s}': use s, m or h")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too long"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check the config; no cloud calls.
    Validate,
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the infrastructure match the config (or a saved plan).
    Apply(ApplyArgs),
    /// Tear everything down in reverse order (buckets are kept).
    Destroy(DestroyArgs),
    /// Render the state, or a saved plan.
    Show(ShowArgs),
    /// Inspect and repair the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Print the resource graph.
    Graph(GraphArgs),
    /// Per deployment: what exists and runs now.
    Status,
    /// List, fill and fetch buckets.
    #[command(subcommand)]
    Bucket(BucketCommand),
}

#[derive(Args, Debug, Default)]
pub struct PlanArgs {
    /// Write the plan to FILE for `anycloud apply FILE`.
    #[arg(long = "out", short = 'o', alias = "o")]
    pub out: Option<PathBuf>,
    /// Trust the state without asking the clouds.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    /// Limit the plan to these addresses (or address prefixes) and what they need.
    #[arg(long)]
    pub target: Vec<String>,
    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Human,
    Json,
    Markdown,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A plan saved by `plan -out`: apply exactly it.
    pub plan_file: Option<PathBuf>,
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    #[arg(long)]
    pub target: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[arg(long)]
    pub target: Vec<String>,
    #[arg(long)]
    pub auto_approve: bool,
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub plan_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Every address in the state.
    List,
    /// One resource's recorded attributes.
    Show { address: String },
    /// Forget a resource (it is not destroyed).
    Rm { address: Vec<String> },
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Subcommand, Debug)]
pub enum BucketCommand {
    /// List a bucket's files.
    Ls { name: String },
    /// Copy a file or directory into a bucket.
    Upload { name: String, source: PathBuf },
    /// Copy a bucket's files into a directory.
    Download { name: String, dest: PathBuf },
}

/// Exit codes: 0 success, 1 error, 2 changes present (with --detailed-exitcode), 130 interrupted.
pub async fn run(cli: Cli) -> Result<i32, UserError> {
    let providers = Providers::builtin(&keys_dir(&cli.state));
    match &cli.command {
        Command::Validate => {
            let config = engine::load_config(&cli.config)?;
            out(&format!(
                "The configuration is valid: {} deployment(s).\n",
                config.deployments.len()
            ));
            Ok(0)
        }
        Command::Plan(args) => plan_cmd(&cli, args, &providers).await,
        Command::Apply(args) => apply_cmd(&cli, args, &providers).await,
        Command::Destroy(args) => destroy_cmd(&cli, args, &providers).await,
        Command::Show(args) => show_cmd(&cli, args),
        Command::State(cmd) => state_cmd(&cli, cmd),
        Command::Graph(args) => {
            let config = engine::load_config(&cli.config)?;
            let g = crate::graph::compile(&config);
            out(&match args.format {
                GraphFormat::Dot => g.to_dot(),
                GraphFormat::Mermaid => g.to_mermaid(),
            });
            Ok(0)
        }
        Command::Status => status_cmd(&cli, &providers).await,
        Command::Bucket(cmd) => bucket_cmd(&cli, cmd),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn lock(cli: &Cli, operation: &str) -> Result<StateLock, UserError> {
    StateLock::acquire(&cli.state, operation, cli.lock_timeout)
        .map_err(|e| UserError(format!("error: {e}")))
}

fn render_plan(plan: &Plan, format: Format) -> String {
    match format {
        Format::Human => render::human(plan),
        Format::Json => render::json(plan),
        Format::Markdown => render::markdown(plan),
    }
}

async fn plan_cmd(cli: &Cli, args: &PlanArgs, providers: &Providers) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cli.config, providers)?;
    let _lock = lock(cli, "plan")?;
    let state = engine::load_state(&cli.state)?;
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: &args.target,
        destroy: false,
    };
    let (graph, plan) = plan_verbosely(cli, &config, &state, providers, &opts).await?;
    out(&render_plan(&plan, args.format));
    if let Some(path) = &args.out {
        write_plan_file(path, &plan)?;
        if args.format != Format::Json {
            out(&format!(
                "\nSaved the plan to {}. Apply exactly it with: anycloud apply {}\n",
                path.display(),
                path.display()
            ));
        }
    }
    let code = if args.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    };
    // The process exits next: freeing tens of thousands of attribute maps would only delay
    // that (a third of a 1,000-deployment plan's time; see BENCHMARKS.md).
    std::mem::forget((config, state, graph, plan));
    Ok(code)
}

fn write_plan_file(path: &Path, plan: &Plan) -> Result<(), UserError> {
    write_private(path, render::json(plan).as_bytes()).map_err(|e| {
        UserError(format!(
            "error: cannot write the plan to {}: {e}",
            path.display()
        ))
    })
}

fn read_plan_file(path: &Path) -> Result<Plan, UserError> {
    let bytes = std::fs::read(path).map_err(|e| {
        UserError(format!(
            "error: cannot read the plan {}: {e}",
            path.display()
        ))
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        UserError(format!(
            "error: {} is not a saved anycloud plan: {e}",
            path.display()
        ))
    })?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version != PLAN_FORMAT_VERSION as u64 {
        return Err(UserError(format!(
            "error: {} has plan format version {version}; this anycloud reads version {PLAN_FORMAT_VERSION}",
            path.display()
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        UserError(format!(
            "error: {} is not a saved anycloud plan: {e}",
            path.display()
        ))
    })
}

fn confirm(auto_approve: bool, what: &str) -> Result<bool, UserError> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError(format!(
            "error: refusing to {what} without confirmation: stdin is not a terminal. Pass --auto-approve, or apply a saved plan file"
        )));
    }
    out(&format!(
        "\nDo you want to {what}? Only 'yes' will be accepted.\n  Enter a value: "
    ));
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| UserError(format!("error: reading the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}

async fn execute(
    cli: &Cli,
    plan: &Plan,
    state: State,
    providers: &Providers,
    parallelism: usize,
) -> Result<i32, UserError> {
    let progress = Progress::new(cli.quiet);
    let interrupt = Arc::new(AtomicBool::new(false));
    apply::watch_interrupt(interrupt.clone(), progress.clone());
    let (outcome, _) = apply::apply(
        plan,
        state,
        &cli.state,
        providers,
        parallelism,
        &progress,
        interrupt,
    )
    .await
    .map_err(|e| UserError(format!("error: {e:#}")))?;
    if outcome.interrupted {
        out(&format!(
            "\nInterrupted: {} operation(s) finished, the rest were not started. The state is saved; run apply again to continue.\n",
            outcome.done.len()
        ));
        return Ok(130);
    }
    if !outcome.failed.is_empty() || !outcome.skipped.is_empty() {
        let mut msg = format!(
            "\nApply failed: {} finished, {} failed, {} skipped.\n",
            outcome.done.len(),
            outcome.failed.len(),
            outcome.skipped.len()
        );
        for (addr, why) in &outcome.failed {
            msg.push_str(&format!("error: {addr}: {why}\n"));
        }
        let _ = std::io::stderr().write_all(msg.as_bytes());
        return Ok(1);
    }
    let s = &plan.summary;
    let only_deletes = s.add + s.change + s.replace == 0 && s.destroy > 0;
    out(&if only_deletes {
        format!("\nDestroy complete! Resources: {} destroyed.\n", s.destroy)
    } else {
        format!(
            "\nApply complete! Resources: {} added, {} changed, {} replaced, {} destroyed.\n",
            s.add, s.change, s.replace, s.destroy
        )
    });
    Ok(0)
}

async fn apply_cmd(cli: &Cli, args: &ApplyArgs, providers: &Providers) -> Result<i32, UserError> {
    if let Some(path) = &args.plan_file {
        let plan = read_plan_file(path)?;
        let _lock = lock(cli, "apply")?;
        let state = engine::load_state(&cli.state)?;
        if plan.lineage != state.lineage || plan.serial != state.serial {
            return Err(UserError(format!(
                "error: the saved plan {} is stale: it was made against state serial {} (lineage {}), and the state is now at serial {} (lineage {}). Run `anycloud plan --out {}` again",
                path.display(), plan.serial, plan.lineage, state.serial, state.lineage, path.display()
            )));
        }
        let config_bytes = std::fs::read(&cli.config)
            .map_err(|e| UserError(format!("error: cannot read {}: {e}", cli.config.display())))?;
        if crate::config::digest(&config_bytes) != plan.config_digest {
            return Err(UserError(format!(
                "error: the saved plan {} is stale: {} changed since it was made. Run `anycloud plan --out {}` again",
                path.display(), cli.config.display(), path.display()
            )));
        }
        if !plan.has_changes() {
            out("No changes. The infrastructure matches the configuration.\n");
            return Ok(0);
        }
        engine::load_config_for(&cli.config, providers)?;
        return execute(cli, &plan, state, providers, args.parallelism).await;
    }
    let config = engine::load_config_for(&cli.config, providers)?;
    let _lock = lock(cli, "apply")?;
    let state = engine::load_state(&cli.state)?;
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: &args.target,
        destroy: false,
    };
    let (_, plan) = plan_verbosely(cli, &config, &state, providers, &opts).await?;
    if !cli.quiet || !plan.has_changes() {
        out(&render::human(&plan));
    }
    if !plan.has_changes() {
        return Ok(0);
    }
    if !confirm(args.auto_approve, "perform these actions")? {
        out("Apply cancelled.\n");
        return Ok(1);
    }
    out("\n");
    execute(cli, &plan, state, providers, args.parallelism).await
}

async fn destroy_cmd(
    cli: &Cli,
    args: &DestroyArgs,
    providers: &Providers,
) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cli.config, providers)?;
    let _lock = lock(cli, "destroy")?;
    let state = engine::load_state(&cli.state)?;
    let opts = PlanOptions {
        refresh: false,
        targets: &args.target,
        destroy: true,
    };
    let (_, plan) = plan_verbosely(cli, &config, &state, providers, &opts).await?;
    out(&render::human(&plan));
    if !plan.has_changes() {
        return Ok(0);
    }
    if !confirm(
        args.auto_approve,
        "destroy all these resources (buckets and their data are kept)",
    )? {
        out("Destroy cancelled.\n");
        return Ok(1);
    }
    out("\n");
    execute(cli, &plan, state, providers, args.parallelism).await
}

fn show_cmd(cli: &Cli, args: &ShowArgs) -> Result<i32, UserError> {
    if let Some(path) = &args.plan_file {
        let plan = read_plan_file(path)?;
        out(&if args.json {
            render::json(&plan)
        } else {
            render::human(&plan)
        });
        return Ok(0);
    }
    let state = engine::load_state(&cli.state)?;
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&state).expect("state serialises")
        ));
        return Ok(0);
    }
    if state.resources.is_empty() {
        out("The state is empty.\n");
        return Ok(0);
    }
    let mut text = String::new();
    for (addr, r) in &state.resources {
        text.push_str(&show_resource(addr, r));
        text.push('\n');
    }
    out(&text);
    Ok(0)
}

fn show_resource(addr: &str, r: &anycloud_state::Resource) -> String {
    let mut text = format!("# {addr}:\n{} \"{addr}\" {{\n", r.kind);
    if let Some(p) = r.pending {
        text.push_str(&format!("    # an operation was interrupted here: {p:?}\n"));
    }
    let width = r.attributes.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in &r.attributes {
        match v.as_str() {
            Some(s) if s.contains('\n') => {
                text.push_str(&format!("    {k:<width$} = <<-EOT\n"));
                for line in s.lines() {
                    text.push_str(&format!("        {line}\n"));
                }
                text.push_str("    EOT\n");
            }
            _ => text.push_str(&format!(
                "    {k:<width$} = {}\n",
                serde_json::to_string(v).expect("json")
            )),
        }
    }
    text.push_str("}\n");
    text
}

fn state_cmd(cli: &Cli, cmd: &StateCommand) -> Result<i32, UserError> {
    match cmd {
        StateCommand::List => {
            let state = engine::load_state(&cli.state)?;
            out(&state
                .resources
                .keys()
                .map(|k| format!("{k}\n"))
                .collect::<String>());
            Ok(0)
        }
        StateCommand::Show { address } => {
            let state = engine::load_state(&cli.state)?;
            match state.resources.get(address) {
                Some(r) => {
                    out(&show_resource(address, r));
                    Ok(0)
                }
                None => Err(UserError(format!(
                    "error: no resource '{address}' in {}",
                    cli.state.display()
                ))),
            }
        }
        StateCommand::Rm { address } => {
            let _lock = lock(cli, "state rm")?;
            let mut state = engine::load_state(&cli.state)?;
            for a in address {
                if state.resources.remove(a).is_none() {
                    return Err(UserError(format!(
                        "error: no resource '{a}' in {}; nothing was removed",
                        cli.state.display()
                    )));
                }
            }
            state.ensure_lineage();
            state.serial += 1;
            anycloud_state::save(&cli.state, &state)
                .map_err(|e| UserError(format!("error: {e}")))?;
            out(&format!(
                "Removed {} resource(s) from the state; they were not destroyed.\n",
                address.len()
            ));
            Ok(0)
        }
    }
}

async fn status_cmd(cli: &Cli, providers: &Providers) -> Result<i32, UserError> {
    let config = engine::load_config_for(&cli.config, providers)?;
    let state = engine::load_state(&cli.state)?;
    let graph = crate::graph::compile(&config);
    let desired = crate::plan::desired(&graph, providers)
        .map_err(|e| UserError(format!("error: {}", e[0])))?;
    let current = crate::plan::refresh(&graph, &desired, &state, providers)
        .await
        .map_err(|e| UserError(format!("error: {}", e[0])))?;
    let facts = crate::plan::observe(&state, providers).await;
    let mut text = String::new();
    for d in &config.deployments {
        text.push_str(&format!(
            "deployment {} ({} {}):\n",
            d.id, d.provider, d.region
        ));
        let prefix = format!("deployment.{}.", d.id);
        for addr in graph.order().iter().filter(|a| a.starts_with(&prefix)) {
            let shown = match (state.resources.get(addr), current.get(addr)) {
                (None, _) => "not created".to_owned(),
                (Some(_), Some(Some(a))) => match a.get("status").and_then(|s| s.as_str()) {
                    Some(s) if s != "RUNNING" => format!("present, {s}"),
                    _ => "present".to_owned(),
                },
                (Some(_), _) => "MISSING".to_owned(),
            };
            let live: Vec<String> = facts
                .get(addr.as_str())
                .map(|f| f.iter().map(|(k, v)| format!("{k}: {v}")).collect())
                .unwrap_or_default();
            let shown = if live.is_empty() {
                shown
            } else {
                format!("{shown}; {}", live.join(", "))
            };
            text.push_str(&format!("  {:<26} {shown}\n", &addr[prefix.len()..]));
        }
    }
    out(&text);
    Ok(0)
}

fn bucket_cmd(cli: &Cli, cmd: &BucketCommand) -> Result<i32, UserError> {
    let config = engine::load_config(&cli.config)?;
    let io = |e: std::io::Error, what: &str| UserError(format!("error: {what}: {e}"));
    match cmd {
        BucketCommand::Ls { name } => {
            let dir = bucket::local_bucket_dir(&config, name)?;
            let files = bucket::list(&dir)
                .map_err(|e| io(e, &format!("listing bucket '{name}' ({})", dir.display())))?;
            out(&files
                .iter()
                .map(|(f, n)| format!("{n:>12}  {f}\n"))
                .collect::<String>());
            Ok(0)
        }
        BucketCommand::Upload { name, source } => {
            let dir = bucket::local_bucket_dir(&config, name)?;
            let n = bucket::copy_tree(source, &dir)
                .map_err(|e| io(e, &format!("uploading {}", source.display())))?;
            out(&format!("Uploaded {n} file(s) to bucket '{name}'.\n"));
            Ok(0)
        }
        BucketCommand::Download { name, dest } => {
            let dir = bucket::local_bucket_dir(&config, name)?;
            let n = bucket::copy_tree(&dir, dest)
                .map_err(|e| io(e, &format!("downloading bucket '{name}'")))?;
            out(&format!(
                "Downloaded {n} file(s) from bucket '{name}' to {}.\n",
                dest.display()
            ));
            Ok(0)
        }
    }
}

/// Plans hold the container's environment and run spec: readable by their owner only, like
/// the state.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Terraform spells it `-out`; clap reads a single dash as short flags, so accept that
/// spelling by rewriting it before parsing.
pub fn normalise_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-out") => "--out".into(),
            Some(s) if s.starts_with("-out=") => format!("-{s}").into(),
            _ => a,
        })
        .collect()
}

async fn plan_verbosely(
    cli: &Cli,
    config: &crate::config::Config,
    state: &State,
    providers: &Providers,
    opts: &PlanOptions<'_>,
) -> Result<(crate::graph::Graph, Plan), UserError> {
    let (graph, plan, timings) = engine::make_plan_timed(config, state, providers, opts).await?;
    if cli.verbose {
        let _ = writeln!(std::io::stderr(), "{timings}");
    }
    Ok((graph, plan))
}

/// The deployments' SSH keys live beside the state they belong to: `.anycloud/keys/`
/// next to `.anycloud/state.json`.
pub fn keys_dir(state: &std::path::Path) -> PathBuf {
    state
        .parent()
        .map(|p| p.join("keys"))
        .unwrap_or_else(|| PathBuf::from("keys"))
}
