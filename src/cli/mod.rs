//! The command line (DESIGN §2): Terraform's conventions, so muscle memory works. The
//! arguments live here; each command in a module of its own.

mod apply;
mod bucket;
mod filter;
mod logs;
mod plan;
mod recover;
mod run;
mod show;
mod state_path;
mod status;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anycloud_state::{LocalStore, StateStore};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{self, UserError};
use crate::plan::{Plan, PLAN_FORMAT_VERSION};
use crate::registry::Providers;
use crate::shell::Shell;

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
    /// The state file, when the config has no `state:` (default: .anycloud/state.json beside
    /// the config; a path given here is relative to the working directory).
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// Where the deployments' SSH keys are kept (default: .anycloud/keys beside the config,
    /// as the state is; never beside a remote state).
    #[arg(long, global = true, env = "ANYCLOUD_KEYS_DIR", hide_env_values = true)]
    pub keys_dir: Option<PathBuf>,
    /// How long to wait for another anycloud holding the state lock (e.g. 30s, 5m).
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// One JSON object per line on stdout for every event of plan, apply and destroy
    /// (schema: `anycloud schema json-stream`); people's text goes to stderr.
    #[arg(long, global = true)]
    pub json_stream: bool,
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

/// The global flags each command has no use for. They stay accepted there (every spelling
/// that worked still does, `anycloud --lock-timeout 5m validate` too) but are hidden from its
/// help and completions, so `validate --help` lists only what validate reads.
const UNUSED_GLOBALS: &[(&str, &[&str])] = &[
    ("validate", &["state", "keys_dir", "lock_timeout"]),
    ("show", &["keys_dir", "lock_timeout", "json_stream"]),
    ("state", &["keys_dir", "json_stream"]),
    ("force-unlock", &["keys_dir", "lock_timeout", "json_stream"]),
    (
        "graph",
        &["state", "keys_dir", "lock_timeout", "json_stream"],
    ),
    (
        "schema",
        &["config", "state", "keys_dir", "lock_timeout", "json_stream"],
    ),
    ("status", &["lock_timeout", "json_stream"]),
    ("logs", &["lock_timeout", "json_stream"]),
    ("bucket", &["keys_dir", "lock_timeout", "json_stream"]),
    (
        "completions",
        &["config", "state", "keys_dir", "lock_timeout", "json_stream"],
    ),
];

/// The command line as parsed and as its help and completions show it: the derived command
/// with each subcommand's unused global flags hidden ([`UNUSED_GLOBALS`]). clap does not
/// copy a global flag into a subcommand that has one of the same id, so a hidden copy put
/// there first stays (and reaches that subcommand's own subcommands in turn).
pub fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    // In place, not with `mut_subcommand`, which moves the subcommand to the end of the list.
    for sc in cmd.get_subcommands_mut() {
        let Some((_, unused)) = UNUSED_GLOBALS.iter().find(|(n, _)| *n == sc.get_name()) else {
            continue;
        };
        for id in *unused {
            let arg = globals
                .iter()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no global flag {id}"));
            *sc = std::mem::take(sc).arg(arg.clone().hide(true));
        }
    }
    cmd
}

/// Parses the arguments (Terraform's single-dash spellings first made clap's): clap's
/// own message and exit on an error, or on `--help` and `--version`.
pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches_from(normalise_args(args));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    anycloud_provider::duration::parse(s)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check the config; no cloud calls.
    Validate,
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the infrastructure match the config (or a saved plan).
    Apply(ApplyArgs),
    /// Tear everything down in reverse order (buckets are kept, except a cloud's checkpoint
    /// bucket this state made).
    Destroy(DestroyArgs),
    /// Render the state, or a saved plan.
    Show(ShowArgs),
    /// Inspect and repair the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Remove the state lock of a run that is gone (its id is in the lock message).
    ForceUnlock {
        /// The lock's id.
        id: String,
    },
    /// Print the resource graph.
    Graph(GraphArgs),
    /// Print a schema of anycloud's machine-readable output (`json-stream`).
    Schema {
        /// Which output: `json-stream` (the lines of `--json-stream`).
        #[arg(value_parser = ["json-stream"])]
        name: String,
    },
    /// Per deployment: what exists and runs now.
    Status(StatusArgs),
    /// Show a job's output, read from its machine.
    Logs(LogsArgs),
    /// Apply one deployment, follow its job's output until it exits, then destroy what that
    /// apply made unless --keep (what existed before is left); exits with the job's exit
    /// code.
    Run(RunArgs),
    /// List, fill and fetch buckets.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Print a shell's completion script: `anycloud completions bash > /etc/bash_completion.d/anycloud`
    /// (zsh: a file `_anycloud` on $fpath; fish: ~/.config/fish/completions/anycloud.fish).
    Completions {
        /// The shell.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Write the plan to FILE for `anycloud apply FILE`.
    #[arg(long = "out", short = 'o', alias = "o")]
    pub out: Option<PathBuf>,
    /// Read what exists before planning (the default, `true`); `--refresh=false` trusts what
    /// the state records and asks no cloud.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    /// Limit the plan to these addresses (or address prefixes) and what they need.
    #[arg(long)]
    pub target: Vec<String>,
    /// Replace this resource (or every one under this address prefix) although nothing of it
    /// changed: `-replace deployment.NAME.container` runs a job again. Repeatable.
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Take the state's lock while planning (the default, `true`). `--lock=false` (Terraform's
    /// `-lock=false`) only reads the state and writes nothing, so a read-only role can plan;
    /// while a run's journal is in the state it waits (up to --lock-timeout) until that is
    /// folded in. A plan saved from it is refused by `apply` as stale once the state moved on.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub lock: bool,
    /// Plan the destroy of everything (or of `--target`): review it, save it with `-out`,
    /// and apply exactly it (`-destroy` is Terraform's spelling).
    #[arg(long)]
    pub destroy: bool,
    /// `human` for people, `json` for programs, `markdown` for a pull-request comment.
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
    /// Apply without asking (needed where there is no terminal to ask on).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// Read what exists before planning (the default, `true`); `--refresh=false` trusts what
    /// the state records and asks no cloud.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    /// Limit the apply to these addresses (or address prefixes) and what they need.
    #[arg(long)]
    pub target: Vec<String>,
    /// Replace this resource (or every one under this address prefix) although nothing of it
    /// changed: `-replace deployment.NAME.container` runs a job again. Repeatable.
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Start this deployment's job again from scratch: its checkpoint is deleted, on its
    /// machine and in its bucket, and its container replaced (asked to confirm). Repeatable.
    #[arg(long, value_name = "DEPLOYMENT")]
    pub from_scratch: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    /// Destroy only these addresses (or address prefixes) and what depends on them.
    #[arg(long)]
    pub target: Vec<String>,
    /// Destroy without asking (needed where there is no terminal to ask on).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A plan saved by `plan -out`; without it, the state.
    pub plan_file: Option<PathBuf>,
    /// Print JSON (the plan document, or the state file's contents): `--format json`.
    #[arg(long)]
    pub json: bool,
    /// `human` for people, `json` for programs (the plan document, or the state file's
    /// contents), as `plan`, `status` and `state list` take it.
    #[arg(long, value_enum)]
    pub format: Option<ShowFormat>,
}

impl ShowArgs {
    pub fn json(&self) -> bool {
        self.json || self.format == Some(ShowFormat::Json)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ShowFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// The addresses in the state (all, or those of the deployments and prefixes given).
    List(ListArgs),
    /// One resource's recorded attributes.
    Show {
        /// The resource's address (`anycloud state list` prints them).
        address: String,
    },
    /// Forget a resource (it is not destroyed).
    Rm {
        /// The addresses to forget.
        address: Vec<String>,
    },
    /// Make this empty state the successor of a lost one: it takes the lost state's lineage,
    /// and with it the objects that state made (the error refusing them names the lineage).
    Adopt {
        /// The lost state's lineage.
        lineage: String,
    },
    /// Print the state as stored (an unfinished run's journal replayed), wherever it lives.
    Pull,
    /// Copy the state file FROM into the config's state store (`state:` in anycloud.yaml):
    /// refused over a state of another lineage, or a newer one of the same.
    Migrate {
        /// The state file to copy (e.g. .anycloud/state.json).
        #[arg(long)]
        from: PathBuf,
    },
}

/// What to show of a large state: deployment names (`run-0042`, `'run-00*'`) or address
/// prefixes (`deployment.run-0042.vm`); none means everything.
#[derive(Args, Debug, Default)]
pub struct Only {
    /// Deployment names (`*` matches any characters) or address prefixes; none means all.
    #[arg(value_name = "DEPLOYMENT|ADDRESS")]
    pub only: Vec<String>,
}

/// Text for people, JSON for programs.
#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum ListFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub only: Only,
    /// `text`: one address per line; `json`: an array of {address, kind, provider}.
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    pub format: ListFormat,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub only: Only,
    /// `text` for people, `json`: every deployment with its resources and live facts.
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    pub format: ListFormat,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The deployment whose job to show.
    pub deployment: String,
    /// Keep showing what the job writes until it exits (Ctrl-C stops following, not the job).
    /// No `-f`: that is `--config`.
    #[arg(long)]
    pub follow: bool,
    /// Only the last N lines (then what follows, with --follow).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only what it wrote within this long ago (`10m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// The upload programs' logs (rclone's, on the machine) instead of the job's output:
    /// the last 50 lines of each, or --tail N.
    #[arg(long, conflicts_with_all = ["follow", "since"])]
    pub sync: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The deployment to run.
    pub deployment: String,
    /// Leave the machine and upload programs running after the job exits.
    #[arg(long)]
    pub keep: bool,
    /// Leave them running only when the job failed (exited non-zero), for a look at what
    /// it left; a job that succeeded is taken down as usual.
    #[arg(long)]
    pub keep_failed: bool,
    /// Apply without asking (needed where there is no terminal to ask on).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// Watch the job through preemptions until it ends: when its machine is lost (or its
    /// job killed from outside), apply this deployment again (a new machine, the checkpoint
    /// restored), without asking. Two watchers of one state never both act: the state lock
    /// decides.
    #[arg(long)]
    pub recover: bool,
    /// How many times --recover may bring the job back; once more is an error (exit 1)
    /// naming the limit, with everything left as it stands.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "recover")]
    pub max_recoveries: u32,
    /// The wait before the first recovery; each next one waits twice as long (jittered),
    /// up to 10m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, requires = "recover")]
    pub recover_wait: Duration,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub only: Only,
    /// `dot` (Graphviz), `mermaid` (renders in GitHub markdown) or `json` (nodes with their
    /// dependencies). With deployments given, their nodes and what those need.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum BucketCommand {
    /// List a bucket's files.
    Ls {
        /// The bucket's name, as the config names it.
        name: String,
    },
    /// Copy a file or directory into a bucket.
    Upload {
        /// The bucket's name, as the config names it.
        name: String,
        /// The file or directory to copy.
        source: PathBuf,
    },
    /// Copy a bucket's files into a directory.
    Download {
        /// The bucket's name, as the config names it.
        name: String,
        /// The directory to copy into (made if missing).
        dest: PathBuf,
    },
}

/// What every command gets: the arguments, the output, the providers and the state store.
pub struct Context<'a> {
    pub cli: &'a Cli,
    pub shell: Shell,
    pub providers: Providers,
    pub store: Box<dyn StateStore>,
}

impl Context<'_> {
    async fn session(&self, operation: &str) -> Result<engine::Session<'_>, UserError> {
        engine::Session::open(self.store.as_ref(), operation, self.cli.lock_timeout).await
    }
}

pub use state_path::{default_state, DEFAULT_STATE};

/// The state store: the config's `state:` (a cloud's object store, reached with that
/// provider's settings from the same config), else the local file. Opening does no I/O.
async fn open_store(cli: &Cli, providers: &Providers) -> Result<Box<dyn StateStore>, UserError> {
    let local = || -> Box<dyn StateStore> {
        Box::new(LocalStore::new(
            cli.state
                .clone()
                .unwrap_or_else(|| default_state(&cli.config)),
        ))
    };
    if !cli.config.exists() {
        return Ok(local());
    }
    let head = crate::config::load_head(&cli.config, providers).map_err(UserError)?;
    let Some((backend, settings)) = head else {
        if cli.state.is_none() && uses_state(&cli.command) {
            state_path::refuse_a_state_left_behind(&cli.config, providers)?;
        }
        return Ok(local());
    };
    if let Some(path) = &cli.state {
        return Err(UserError::msg(format!(
            "{} keeps the state in `state: {{ {}: … }}`, and --state names the local file {}: use one. (To move a local state there: `anycloud state migrate --from {}`.)",
            cli.config.display(),
            backend.backend,
            path.display(),
            path.display()
        )));
    }
    providers.configure(&settings).map_err(UserError::msg)?;
    let provider = providers.get(backend.provider).map_err(UserError::msg)?;
    let (objects, key) = provider
        .state_objects(&backend.settings)
        .await
        .map_err(|e| UserError::msg(format!("cannot open the state store: {e}")))?;
    Ok(Box::new(anycloud_state::RemoteStore::new(objects, key)))
}

/// Whether a command reads or writes the state (so must find the right one).
fn uses_state(command: &Command) -> bool {
    !matches!(
        command,
        Command::Validate
            | Command::Graph(_)
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::State(StateCommand::Migrate { .. })
    )
}

/// Exit codes: 0 success, 1 error, 2 changes present (with --detailed-exitcode), 130 interrupted.
pub async fn run(cli: &Cli, shell: Shell) -> Result<i32, UserError> {
    if let Command::Completions { shell: name } = &cli.command {
        let which = match name.as_str() {
            "zsh" => clap_complete::Shell::Zsh,
            "fish" => clap_complete::Shell::Fish,
            _ => clap_complete::Shell::Bash,
        };
        let mut script = Vec::new();
        clap_complete::generate(which, &mut command(), "anycloud", &mut script);
        shell.out(&String::from_utf8_lossy(&script));
        return Ok(0);
    }
    let keys_dir = cli
        .keys_dir
        .clone()
        .unwrap_or_else(|| state_path::default_keys(&cli.config));
    let providers = Providers::builtin(&keys_dir);
    let store = open_store(cli, &providers).await?;
    let cx = Context {
        cli,
        shell,
        providers,
        store,
    };
    match &cli.command {
        Command::Validate => {
            let config = engine::load_config(&cli.config, &cx.providers)?;
            cx.shell.out(&format!(
                "The configuration is valid: {} deployment(s).\n",
                config.deployments.len()
            ));
            Ok(0)
        }
        Command::Plan(args) => plan::plan(&cx, args).await,
        Command::Apply(args) => apply::apply(&cx, args).await,
        Command::Destroy(args) => apply::destroy(&cx, args).await,
        Command::Show(args) => show::show(&cx, args).await,
        Command::State(cmd) => show::state(&cx, cmd).await,
        Command::ForceUnlock { id } => {
            let holder = cx.store.force_unlock(id).await?;
            cx.shell.out(&format!(
                "Removed the lock {id} on {} (held by {}, pid {} on {}, running '{}'). If that run still lives, it writes and starts nothing more; what it recorded before is in the state, and the next command picks it up.\n",
                cx.store.describe(),
                holder.holder,
                holder.pid,
                holder.host,
                holder.operation
            ));
            Ok(0)
        }
        Command::Schema { .. } => {
            cx.shell.out(crate::stream::SCHEMA);
            Ok(0)
        }
        Command::Graph(args) => {
            let config = engine::load_config(&cli.config, &cx.providers)?;
            let mut g = crate::graph::compile(&config, &cx.providers);
            let only = filter::Filter::new(&filter::with_sweeps(&args.only.only, &config.sweeps));
            if !only.is_all() {
                g = g.restricted_to(|a| only.address(a));
                if g.nodes.is_empty() {
                    return Err(UserError::msg(format!(
                        "no node of the graph matches {}",
                        args.only.only.join(", ")
                    )));
                }
            }
            cx.shell.out(&match args.format {
                GraphFormat::Dot => g.to_dot(),
                GraphFormat::Mermaid => g.to_mermaid(),
                GraphFormat::Json => g.to_json(),
            });
            Ok(0)
        }
        Command::Status(args) => status::status(&cx, args).await,
        Command::Logs(args) => logs::logs(&cx, args).await,
        Command::Run(args) => run::run(&cx, args).await,
        Command::Bucket(cmd) => bucket::bucket(&cx, cmd).await,
        Command::Completions { .. } => unreachable!("answered before the state is opened"),
    }
}

/// Says which deployments a plan left out because they could not be read; true if any.
/// The rest of the plan stands (and is applied): one unreachable machine stops only its own
/// deployment.
fn report_unread(shell: &Shell, plan: &Plan) -> bool {
    if plan.unread.is_empty() {
        return false;
    }
    let mut msg = String::new();
    for u in &plan.unread {
        msg.push_str(&format!(
            "error: deployment {} was left out: {} could not be read: {}\n",
            u.deployment, u.address, u.error
        ));
    }
    msg.push_str(&format!(
        "{} deployment(s) left out; the others are planned as usual. Run again once they answer.\n",
        plan.unread.len()
    ));
    shell.err(&msg);
    true
}

fn write_plan_file(path: &Path, plan: &Plan) -> Result<(), UserError> {
    // Plans hold the container's environment and run spec: readable by their owner only.
    anycloud_provider::files::write_atomically(path, crate::render::json(plan).as_bytes(), 0o600)
        .map_err(|e| UserError::msg(format!("cannot write the plan to {}: {e}", path.display())))
}

fn read_plan_file(path: &Path) -> Result<Plan, UserError> {
    let bytes = std::fs::read(path)
        .map_err(|e| UserError::msg(format!("cannot read the plan {}: {e}", path.display())))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        UserError::msg(format!(
            "{} is not a saved anycloud plan: {e}",
            path.display()
        ))
    })?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version != PLAN_FORMAT_VERSION as u64 {
        return Err(UserError::msg(format!(
            "{} has plan format version {version}; this anycloud reads version {PLAN_FORMAT_VERSION}. Make the plan again with this anycloud",
            path.display()
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        UserError::msg(format!(
            "{} is not a saved anycloud plan: {e}",
            path.display()
        ))
    })
}

fn confirm(shell: &Shell, auto_approve: bool, what: &str) -> Result<bool, UserError> {
    if auto_approve {
        return Ok(true);
    }
    if shell.stream().is_some() {
        return Err(UserError::msg(format!(
            "refusing to {what} without confirmation: with --json-stream nothing can answer the question. Pass --auto-approve, or apply a saved plan file"
        )));
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError::msg(format!(
            "refusing to {what} without confirmation: stdin is not a terminal. Pass --auto-approve, or apply a saved plan file"
        )));
    }
    shell.out(&format!(
        "\nDo you want to {what}? Only 'yes' will be accepted.\n  Enter a value: "
    ));
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| UserError::msg(format!("reading the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}

/// Terraform's flags that anycloud has too, which Terraform spells with one dash (`-out`,
/// `-target=ADDR`, `-refresh=false`, `-auto-approve`, ...). clap reads one dash as short
/// flags (`-target` as `-t -a -r ...`), so these are rewritten to two before parsing.
const SINGLE_DASH: &[&str] = &[
    "auto-approve",
    "destroy",
    "detailed-exitcode",
    "lock",
    "lock-timeout",
    "no-color",
    "out",
    "parallelism",
    "refresh",
    "replace",
    "state",
    "target",
];

/// Terraform's single-dash spellings made clap's ([`SINGLE_DASH`]; `-json` is the stream, or
/// `--json` for `show`). Nothing after `--` is touched: that is a value, not a flag.
pub fn normalise_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let json = if args.iter().any(|a| a == "show") {
        "--json"
    } else {
        "--json-stream"
    };
    let mut after_separator = false;
    args.into_iter()
        .map(|a| {
            if after_separator {
                return a;
            }
            let Some(s) = a.to_str() else { return a };
            if s == "--" {
                after_separator = true;
                return a;
            }
            if s == "-json" {
                return json.into();
            }
            let Some(flag) = s.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
                return a;
            };
            let name = flag.split_once('=').map_or(flag, |(n, _)| n);
            if SINGLE_DASH.contains(&name) {
                format!("-{s}").into()
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod spelling_tests {
    use super::normalise_args;

    fn normalised(args: &[&str]) -> Vec<String> {
        normalise_args(args.iter().map(std::ffi::OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn terraforms_json_spelling_means_the_stream_except_for_show() {
        assert_eq!(
            normalised(&["anycloud", "apply", "-json", "--auto-approve"]),
            ["anycloud", "apply", "--json-stream", "--auto-approve"]
        );
        assert_eq!(
            normalised(&["anycloud", "show", "-json"]),
            ["anycloud", "show", "--json"]
        );
        assert_eq!(
            normalised(&["anycloud", "plan", "-out", "p", "-destroy"]),
            ["anycloud", "plan", "--out", "p", "--destroy"]
        );
        assert_eq!(
            normalised(&["anycloud", "plan", "-lock=false"]),
            ["anycloud", "plan", "--lock=false"]
        );
    }
}
