//! The command line: `agent`, `local up|add|lose`, `status`, `plan`, `backup`, `restore`,
//! `config show`, `aws template`, `systemd-unit`.
//!
//! Parses flags, sets up tracing and the runtime, and maps failures to exit codes:
//! 0 ok, 64 invalid configuration or flags (EX_USAGE), 1 runtime failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, KEYS, Sources};
use crate::{backup, cluster_status, local, output};

const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "etcd-pilot",
    version,
    about = "Runs beside etcd on every node: bootstraps, joins, supervises and heals the cluster"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "ETCD_PILOT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the pilot daemon beside this node's etcd.
    Agent {
        /// The TOML config file (see docs/config.md).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Work with a local development cluster on loopback.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Show the cluster's members: role, health, raft index, revision, size, version.
    Status(ClusterArgs),
    /// What the coordinator will do next and why, or what blocks it.
    Plan(ClusterArgs),
    /// The cluster's current client URLs, from its member list (healthy voters first): for
    /// clients and scripts, which stay pointed at the cluster after every member is replaced.
    Endpoints(EndpointsArgs),
    /// Take, list, verify and delete backups in the configured store.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore a backup into this node's data dir as a one-member cluster (its pilot stopped);
    /// then start the pilots: the other nodes join it.
    Restore {
        /// A backup id, or `latest` (the newest verified backup of this cluster).
        #[arg(long, required_unless_present = "release_claim")]
        from: Option<String>,
        /// Restore even a backup of another cluster, or one that failed verification.
        #[arg(long)]
        force: bool,
        /// Restore nothing: end the restore claim a pilot holds after total loss, once that
        /// pilot does not answer (its replacement has another name, or it is gone for good).
        #[arg(long, conflicts_with_all = ["from", "force"])]
        release_claim: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// After quorum loss: reseed the cluster from the survivor NAME (its data, kept, becomes
    /// the cluster; the other survivors join it). Shows the survivors and what would be lost,
    /// and asks first.
    Reseed {
        /// The survivor to reseed from: by default only the one with the highest raft index.
        #[arg(long)]
        from: String,
        /// Reseed from a survivor that is not the best (losing what the best has more), or
        /// while addresses answer that the survivors do not list; takes over the store's
        /// reseed claim of another node.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Rolling upgrade of etcd to a release, one member at a time (the leader last), or
    /// `upgrade check` first. With --dir, every `local up` member's etcd.bin is pointed at the
    /// target; otherwise change etcd.bin on each node and this follows the upgrade.
    #[command(args_conflicts_with_subcommands = true)]
    Upgrade {
        #[command(subcommand)]
        command: Option<UpgradeCommand>,
        /// The target: a release (3.5.16) some node's etcd.versions lists, or an etcd binary.
        #[arg(long)]
        to: Option<String>,
        /// Stop following after this long (the pilots go on).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Compact etcd's history or defragment members now, by hand: the coordinator does it
    /// through the lock upgrades use (one member at a time, the leader last); this waits for
    /// its answer.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run on AWS.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
    /// Print the systemd unit that runs the pilot (install as /etc/systemd/system/etcd-pilot.service).
    SystemdUnit,
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Compact the history now, keeping maintenance.keep_revisions or keep_for, whichever
    /// keeps more.
    Compact {
        /// Stop waiting after this long (the coordinator goes on).
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Defragment members one at a time (followers first, the leader last after leadership
    /// moved away), whatever maintenance.defrag_threshold and defrag_window say.
    Defrag {
        /// Only this member (repeat for several); default: every member.
        #[arg(long)]
        member: Vec<String>,
        /// Stop waiting after this long (the coordinator goes on).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UpgradeCommand {
    /// Whether moving the cluster to a release is allowed (etcd's upgrade rules, checked against
    /// every member's release and the cluster version), whether every node has that release,
    /// and in which order the members would move. Exits 1 unless all of it holds.
    Check {
        /// The target: a release (3.5.16), or an etcd binary whose release it is.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AwsCommand {
    /// Print a CloudFormation template of a production cluster: autoscaling group in 3 zones,
    /// least-privilege role, lifecycle hook and queue, backup bucket, security group, alarms.
    Template,
}

/// Which cluster a read-only command asks, and how it prints.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Client URLs of any members, comma-separated (default http://127.0.0.1:2379).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["dir", "config"])]
    endpoints: Vec<String>,
    /// The directory of a `local up` cluster.
    #[arg(long, conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// A node's pilot config: its etcd and the peers its discovery lists.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

impl ClusterArgs {
    /// The endpoints to ask: `--dir`'s peers, `--config`'s node and its discovery's peers,
    /// `--endpoints`, or the default local client URL.
    async fn endpoints(self) -> anyhow::Result<(Vec<String>, bool)> {
        let endpoints = match (self.dir, self.config) {
            (Some(dir), _) => local::client_urls(&dir)?,
            (None, Some(path)) => config_endpoints(&path).await?,
            (None, None) if self.endpoints.is_empty() => {
                vec!["http://127.0.0.1:2379".to_owned()]
            }
            (None, None) => self.endpoints,
        };
        Ok((endpoints, self.json))
    }
}

/// The client URLs a node's config leads to: its own etcd's, then those of the peers its
/// discovery lists (when discovery answers; a warning otherwise).
async fn config_endpoints(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let config = async {
        let mut sources = Sources::load(Some(path), std::env::vars(), BTreeMap::new())?;
        crate::aws::find_identity(&mut sources).await?;
        Config::load(&sources)
    }
    .await
    .map_err(|err| anyhow::anyhow!("--config {}: {err}", path.display()))?;
    let mut endpoints = vec![crate::config::url_string(&config.etcd.client_url)];
    let (status, _) = tokio::sync::watch::channel(crate::state::PilotStatus::new(
        config.name.as_str(),
        etcd_pilot_core::start::PilotReport::Unknown,
    ));
    let discovery = crate::discovery::Provider::from_config(&config, status);
    match crate::discovery::Discovery::peers(&discovery).await {
        Ok(peers) => {
            for peer in peers {
                if !endpoints.contains(&peer.client_url) {
                    endpoints.push(peer.client_url);
                }
            }
        }
        Err(err) => output::error(&format!(
            "warning: discovery did not answer ({}); asking {} only",
            crate::error::error_chain(&err),
            endpoints[0]
        )),
    }
    Ok(endpoints)
}

/// `endpoints`: which cluster, and the format.
#[derive(Debug, Args)]
struct EndpointsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// `etcdctl` (a comma-separated list for --endpoints), `patroni` (an `etcd3:` section) or
    /// `json`.
    #[arg(long, default_value = "etcdctl", value_parser = ["etcdctl", "patroni", "json"])]
    format: String,
}

/// Which node's configuration a backup command uses.
#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's pilot config file (see docs/config.md).
    #[arg(long, short, conflicts_with = "dir")]
    config: Option<PathBuf>,
    /// The directory of a `local up` cluster (uses the config of its first member still listed).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

impl NodeArgs {
    /// The node's validated configuration, or the message that says what is wrong.
    fn load(&self, runtime: &tokio::runtime::Runtime) -> Result<Config, String> {
        let path = match &self.dir {
            Some(dir) => Some(local::member_config(dir).map_err(|err| format!("{err:#}"))?),
            None => self.config.clone(),
        };
        load_config(runtime, &path, &self.overrides).map_err(|err| err.to_string())
    }
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Stream a snapshot into the store now.
    Now {
        /// Client URL of the member to snapshot (default: this node's etcd.client_url).
        #[arg(long)]
        endpoint: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List the backups, oldest first.
    List {
        /// Print the manifests as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Restore a backup in a throwaway etcd and compare it with its manifest.
    Verify {
        /// The backup (default: the newest).
        id: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Delete a backup.
    Delete {
        id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Start a local cluster (N pilots, each with its etcd) and run it until Ctrl-C.
    Up(local::UpArgs),
    /// Add a node to a running local cluster: a new peer in its peers file, and its pilot.
    Add(local::AddArgs),
    /// Lose a node with its disk: kill its pilot and etcd, delete its data, drop it from the peers.
    Lose(local::LoseArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted, with where each value came from.
    Show {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// One flag per configuration key (`--etcd-bin` for `etcd.bin`), generated from [`KEYS`].
#[derive(Clone, Debug, Default)]
struct Overrides(BTreeMap<String, String>);

impl FromArgMatches for Overrides {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = BTreeMap::new();
        for key in KEYS {
            if let Some(value) = matches.get_one::<String>(key.name) {
                values.insert(key.name.to_owned(), value.clone());
            }
        }
        Ok(Self(values))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for Overrides {
    fn augment_args(command: clap::Command) -> clap::Command {
        KEYS.iter().fold(command, |command, key| {
            command.arg(
                Arg::new(key.name)
                    .long(config::flag(key.name))
                    .value_name("VALUE")
                    .help(match key.default {
                        Some(default) => format!(
                            "{} [default: {default}] [env: {}]",
                            key.help,
                            config::env_var(key.name)
                        ),
                        None => format!("{} [env: {}]", key.help, config::env_var(key.name)),
                    })
                    .help_heading("Configuration (overrides the file and the environment)"),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// The daemon, as the wiring root runs it.
pub(crate) type Agent =
    fn(
        Config,
        CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// Why a command failed, which decides its exit code.
enum Failure {
    /// Bad configuration or arguments (exit 64): the message names the key and the fix.
    Usage(String),
    /// Anything else (exit 1).
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Runtime(err)
    }
}

impl From<config::Error> for Failure {
    fn from(err: config::Error) -> Self {
        Failure::Usage(err.to_string())
    }
}

/// Parses the command line and runs it; `agent` runs the daemon.
pub(crate) fn main(agent: Agent) -> ExitCode {
    // Failpoints named in FAILPOINTS (crash tests only; compiled in with `--features failpoints`).
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EX_USAGE } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    // Commands that print an answer log only warnings; the daemons log their work.
    let quiet = !matches!(cli.command, Commands::Agent { .. } | Commands::Local { .. });
    init_tracing(
        cli.log_format,
        if quiet {
            "warn"
        } else {
            "info,etcd_output=warn"
        },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::error(&format!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match run(cli.command, &runtime, agent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            output::error(&message);
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Runtime(err)) => {
            output::error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command to its end.
fn run(command: Commands, runtime: &Runtime, agent: Agent) -> Result<(), Failure> {
    match command {
        Commands::Agent { config, overrides } => {
            let config = load_config(runtime, &config, &overrides)?;
            until_signalled(runtime, |cancel| agent(config, cancel))
        }
        Commands::Config {
            command: ConfigCommand::Show { config, overrides },
        } => {
            output::print(&load_config(runtime, &config, &overrides)?.show());
            Ok(())
        }
        Commands::Local {
            command: LocalCommand::Up(args),
        } => {
            let etcd_bin = runtime
                .block_on(args.validate())
                .map_err(|err| Failure::Usage(format!("{err:#}")))?;
            until_signalled(runtime, |cancel| local::up(args, etcd_bin, cancel))
        }
        Commands::Local {
            command: LocalCommand::Add(args),
        } => Ok(runtime.block_on(local::add(args))?),
        Commands::Local {
            command: LocalCommand::Lose(args),
        } => Ok(runtime.block_on(local::lose(args))?),
        Commands::Backup { command } => backup_command(runtime, &command),
        Commands::Restore {
            from,
            force,
            release_claim,
            node,
        } => {
            let config = node.load(runtime).map_err(Failure::Usage)?;
            let text = runtime.block_on(async {
                match from {
                    Some(from) if !release_claim => {
                        backup::commands::restore(&config, &from, force).await
                    }
                    _ => backup::commands::release_claim(&config).await,
                }
            })?;
            output::print(&text);
            Ok(())
        }
        Commands::Reseed {
            from,
            force,
            yes,
            cluster,
        } => Ok(runtime.block_on(async {
            let (endpoints, json) = cluster.endpoints().await?;
            let request = crate::manual_reseed::Request {
                from,
                force,
                yes,
                json,
            };
            let text = crate::manual_reseed::run(&endpoints, &request).await?;
            output::print(&text);
            anyhow::Ok(())
        })?),
        Commands::Upgrade {
            command: None,
            to,
            timeout,
            cluster,
        } => {
            let Some(to) = to else {
                return Err(Failure::Usage(
                    "upgrade needs --to RELEASE|PATH (or `upgrade check --to ...`)".to_owned(),
                ));
            };
            let dir = cluster.dir.clone();
            Ok(runtime.block_on(async {
                let (endpoints, json) = cluster.endpoints().await?;
                let outcome =
                    crate::upgrade::start(&endpoints, &to, dir.as_deref(), timeout).await?;
                output::print(&if json {
                    serde_json::to_string_pretty(&outcome)?
                } else {
                    crate::upgrade::outcome_text(&outcome)
                });
                anyhow::Ok(())
            })?)
        }
        Commands::Upgrade {
            command: Some(UpgradeCommand::Check { to, cluster }),
            ..
        } => runtime.block_on(async {
            let target = crate::upgrade::target(&to).await?;
            let (endpoints, json) = cluster.endpoints().await?;
            let check = crate::upgrade::check(&endpoints, target).await?;
            output::print(&if json {
                serde_json::to_string_pretty(&check).map_err(anyhow::Error::from)?
            } else {
                crate::upgrade::text(&check)
            });
            if crate::upgrade::ready(&check) {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow::anyhow!(
                    "the upgrade to etcd {target} is not ready: {}",
                    if check.allowed {
                        "some nodes lack the release (etcd.versions)".to_owned()
                    } else {
                        check.path.clone()
                    }
                )))
            }
        }),
        Commands::Aws {
            command: AwsCommand::Template,
        } => {
            output::print(crate::deploy::CLOUDFORMATION);
            Ok(())
        }
        Commands::SystemdUnit => {
            output::print(crate::deploy::SYSTEMD_UNIT);
            Ok(())
        }
        Commands::Maintenance { command } => Ok(runtime.block_on(async {
            let (kind, members, timeout, cluster) = match command {
                MaintenanceCommand::Compact { timeout, cluster } => {
                    ("compact", Vec::new(), timeout, cluster)
                }
                MaintenanceCommand::Defrag {
                    member,
                    timeout,
                    cluster,
                } => ("defrag", member, timeout, cluster),
            };
            let (endpoints, json) = cluster.endpoints().await?;
            let answer =
                crate::maintenance_request::ask(&endpoints, kind, &members, timeout).await?;
            output::print(&if json {
                serde_json::to_string_pretty(&answer)?
            } else {
                crate::maintenance_request::text(&answer)
            });
            anyhow::Ok(())
        })?),
        Commands::Plan(args) => Ok(runtime.block_on(async {
            let (endpoints, json) = args.endpoints().await?;
            let view = cluster_status::plan(&endpoints).await?;
            output::print(&if json {
                serde_json::to_string_pretty(&view)?
            } else {
                cluster_status::plan_text(&view)
            });
            anyhow::Ok(())
        })?),
        Commands::Endpoints(args) => Ok(runtime.block_on(async {
            let format = if args.cluster.json {
                "json".to_owned()
            } else {
                args.format.clone()
            };
            let (endpoints, _) = args.cluster.endpoints().await?;
            let rows = cluster_status::collect(&endpoints).await?;
            output::print(&cluster_status::endpoints_text(&rows, &format)?);
            anyhow::Ok(())
        })?),
        Commands::Status(args) => Ok(runtime.block_on(async {
            let (endpoints, json) = args.endpoints().await?;
            let view = cluster_status::status(&endpoints).await?;
            output::print(&if json {
                serde_json::to_string_pretty(&view)?
            } else {
                cluster_status::status_text(&view)
            });
            anyhow::Ok(())
        })?),
    }
}

/// Runs `task` until it ends; SIGINT and SIGTERM cancel it (it then shuts down in order).
fn until_signalled<F>(
    runtime: &Runtime,
    task: impl FnOnce(CancellationToken) -> F,
) -> Result<(), Failure>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    Ok(runtime.block_on(async {
        let cancel = CancellationToken::new();
        crate::signals::cancel_on_signals(cancel.clone())?;
        task(cancel).await
    })?)
}

/// `backup now|list|verify|delete`.
fn backup_command(runtime: &Runtime, command: &BackupCommand) -> Result<(), Failure> {
    let node = match command {
        BackupCommand::Now { node, .. }
        | BackupCommand::List { node, .. }
        | BackupCommand::Verify { node, .. }
        | BackupCommand::Delete { node, .. } => node,
    };
    let config = node.load(runtime).map_err(Failure::Usage)?;
    let text = runtime.block_on(async {
        match command {
            BackupCommand::Now { endpoint, .. } => {
                backup::commands::now(&config, endpoint.clone()).await
            }
            BackupCommand::List { json, .. } => backup::commands::list(&config, *json).await,
            BackupCommand::Verify { id, .. } => {
                backup::commands::verify(&config, id.as_deref()).await
            }
            BackupCommand::Delete { id, .. } => backup::commands::delete(&config, id).await,
        }
    })?;
    output::print(&text);
    Ok(())
}

/// Reads the sources, fills in what this machine says about itself (an AWS instance's
/// identity from its metadata, when the `aws` provider leaves it unset), and validates.
fn load_config(
    runtime: &Runtime,
    path: &Option<PathBuf>,
    overrides: &Overrides,
) -> Result<Config, config::Error> {
    let mut sources = Sources::load(path.as_deref(), std::env::vars(), overrides.0.clone())?;
    runtime.block_on(crate::aws::find_identity(&mut sources))?;
    let mut config = Config::load(&sources)?;
    config.reload = Some(config::Reload::new(sources));
    Ok(config)
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("ETCD_PILOT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // A closed stderr (`... 2>&1 | head`) drops log lines; reporting that would panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
