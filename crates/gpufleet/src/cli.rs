//! Command-line surface (clap). Every client command takes `--json`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// gpufleet: run a fleet of GPU machines as one system.
#[derive(Parser, Debug)]
#[command(name = "gpufleet", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: gpufleet.toml in the current directory, if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: human or json (overrides log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or gpufleet=debug (overrides log.level).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Server address and credentials for client commands.
#[derive(Args, Debug, Clone)]
pub struct ServerArg {
    /// URL of a running gpufleet server.
    #[arg(long, env = "GPUFLEET_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key (sent as `Authorization: Bearer`).
    #[arg(long, env = "GPUFLEET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. a self-signed server certificate.
    #[arg(long, env = "GPUFLEET_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// Listener and data directory flags shared by `up` and `demo`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (overrides server.tls_cert).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (overrides server.tls_key).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (a proxy terminates TLS).
    #[arg(long)]
    pub insecure_http: bool,
    /// Message broker: `embedded` or `redis://…` / `rediss://…` (overrides broker.backend).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Database: `embedded` or `postgres://…` (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process on embedded storage.
    Up(ServeArgs),
    /// Run some roles of a distributed deployment (`--roles api,collector,gateway`), sharing
    /// Redis and PostgreSQL with other processes (`--broker redis://… --database postgres://…`).
    Server {
        #[command(flatten)]
        serve: ServeArgs,
        /// Comma-separated roles: api (HTTP API), collector (broker → store), gateway (inference
        /// routes on the api listener and the async-job workers), fleet (host registry, health and
        /// metrics workers, alerts, watchdog). Default: all.
        #[arg(long, value_name = "ROLES", default_value = "api,collector,gateway,fleet")]
        roles: String,
    },
    /// `up` on a fresh data directory plus a replay of a bundled DCGM capture; prints where to look.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Stop after the replay is stored instead of serving until Ctrl-C.
        #[arg(long)]
        exit_after_replay: bool,
    },
    /// The per-host agent: /health, host metrics from /proc, GPUs (NVML), containers, model
    /// servers; pushes GPU samples to the server.
    Agent(crate::agent_cmd::AgentArgs),
    /// Simulations for tests, benchmarks and demos.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// A llama.cpp-compatible model server simulator (slots, latency, tokens/s, failure injection).
    MockBackend(crate::mock::MockArgs),
    /// Replay DCGM / wide / nvidia-smi CSV files (plain or gzip) into a server.
    Stream(StreamArgs),
    /// List GPUs with latest values.
    Gpus {
        #[command(flatten)]
        server: ServerArg,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List hosts.
    Hosts {
        #[command(subcommand)]
        command: Option<crate::hosts_cmd::HostsCommand>,
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Time series of one GPU.
    Telemetry(TelemetryArgs),
    /// Broker topics and consumer groups.
    Topics {
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Server counters.
    Stats {
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a time range as CSV or Parquet.
    Export(ExportArgs),
    /// API keys: create, list, revoke, rotate.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit log: list records, verify the hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// TLS certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Benchmarks that print figures (and peer ratios).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// `config …`
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; it is printed once.
    Create {
        #[command(flatten)]
        server: ServerArg,
        /// Who the key belongs to.
        #[arg(long)]
        owner: String,
        /// admin, operator, user or viewer.
        #[arg(long)]
        role: String,
        /// Expires after this long, e.g. 30d.
        #[arg(long)]
        expires_in: Option<String>,
        /// Models it may use through the gateway (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Free text shown in listings.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the secrets).
    List {
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by prefix; it stops working at once.
    Revoke {
        /// Key prefix (from `keys list`).
        prefix: String,
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a key: a new one with the same owner and role; the old one is revoked.
    Rotate {
        /// Key prefix.
        prefix: String,
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Audit records, newest first.
    List {
        #[command(flatten)]
        server: ServerArg,
        /// Since: RFC 3339 or relative like -1d.
        #[arg(long)]
        since: Option<String>,
        /// Key prefix or owner.
        #[arg(long)]
        actor: Option<String>,
        /// Action, e.g. request, auth.failed, key.created.
        #[arg(long)]
        action: Option<String>,
        /// Most records.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the tamper-evidence chain; exits 1 and names the first broken record if edited.
    Verify {
        #[command(flatten)]
        server: ServerArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `certs …`
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a self-signed certificate and key (cert.pem, key.pem) for localhost and --host names.
    Generate {
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Extra host names or IPs the certificate is valid for.
        #[arg(long)]
        host: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `bench …`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Telemetry ingest: parse, broker, end-to-end durable ingest, latency, disk, queries, RSS.
    Ingest(crate::bench::IngestBenchArgs),
    /// Fleet health: one full health cycle over N simulated hosts, beside a tuned asyncio checker.
    Fleet(crate::bench::FleetBenchArgs),
    /// What authentication, permission check, rate limit and audit add per request (auth on vs off).
    Auth(crate::bench::AuthBenchArgs),
    /// LLM gateway overhead: direct mock vs nginx least_conn proxy vs gpufleet (auth on and off), with wrk.
    Gateway(crate::bench::GatewayBenchArgs),
}

/// `stream` flags.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// CSV files (DCGM long, wide, nvidia-smi; plain or gzip).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
    /// Rows per second to offer (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Replay again and again, each pass shifted forward by the span of the data.
    #[arg(long = "loop")]
    pub loop_forever: bool,
    /// Rows per request.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Host name for wide CSV rows without a host column.
    #[arg(long)]
    pub host: Option<String>,
    /// Publish straight into this broker (`redis://…`) instead of posting to `--server`: the
    /// streamer parses the rows itself and each chunk is done when Redis holds it.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Redis key prefix (with `--broker`).
    #[arg(long, default_value = "gpufleet")]
    pub key_prefix: String,
    /// Topic to publish to (with `--broker`).
    #[arg(long, default_value = "telemetry")]
    pub topic: String,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `telemetry` flags.
#[derive(Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// GPU UUID.
    pub uuid: String,
    #[command(flatten)]
    pub server: ServerArg,
    /// Metric(s), e.g. DCGM_FI_DEV_GPU_UTIL (repeat or comma-separate; default all).
    #[arg(long)]
    pub metric: Vec<String>,
    /// Start: RFC 3339, epoch, now, or relative like -1h.
    #[arg(long)]
    pub start: Option<String>,
    /// End.
    #[arg(long)]
    pub end: Option<String>,
    /// Bucket width, e.g. 1m.
    #[arg(long)]
    pub step: Option<String>,
    /// avg|min|max|last|sum|count (with --step).
    #[arg(long)]
    pub agg: Option<String>,
    /// Most points.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// `export` flags.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// csv or parquet.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Start (default: everything).
    #[arg(long)]
    pub start: Option<String>,
    /// End.
    #[arg(long)]
    pub end: Option<String>,
    /// Only this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only this GPU UUID.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Only this metric.
    #[arg(long)]
    pub metric: Option<String>,
    /// Output file.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// `gpufleet sim …`.
#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Many simulated agents on loopback ports with scripted failures.
    Fleet(crate::agent_cmd::SimFleetArgs),
}
