//! The `gpufleet` binary: parses the command line, loads configuration (flags > env > file >
//! defaults), sets up logging, and dispatches to a role or client command. It is the only place
//! that reads files and the environment and picks concrete backends.

// In a binary crate nothing is reachable from outside; `pub` marks each module's interface to
// its siblings, which is what we want to read.
#![allow(unreachable_pub)]

mod agent_cmd;
mod backends;
mod bench;
mod cli;
mod client;
mod config;
mod demo;
mod redact;
mod fleet_role;
mod hosts_cmd;
mod mock;
mod serve;
mod server;
mod stream;
mod tls;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{SimCommand, AuditCommand, BenchCommand, CertsCommand, Cli, Command, ConfigCommand, KeysCommand, ServeArgs};
use gpufleet_runtime::shutdown::os_signal;
use gpufleet_runtime::Shutdown;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Flag overrides for the config loader.
fn serve_overrides<'a>(cli: &'a Cli, serve: Option<&'a ServeArgs>) -> Vec<(&'static str, toml::Value)> {
    let mut o = Vec::new();
    if let Some(s) = serve {
        if let Some(l) = &s.listen {
            o.push(("server.listen", toml::Value::String(l.clone())));
        }
        if let Some(d) = &s.data_dir {
            o.push(("server.data_dir", toml::Value::String(d.display().to_string())));
        }
        if let (Some(c), Some(k)) = (&s.tls_cert, &s.tls_key) {
            o.push(("server.tls_cert", toml::Value::String(c.display().to_string())));
            o.push(("server.tls_key", toml::Value::String(k.display().to_string())));
        }
        if s.insecure_http {
            o.push(("server.insecure_http", toml::Value::Boolean(true)));
        }
        if let Some(b) = &s.broker {
            o.push(("broker.backend", toml::Value::String(b.clone())));
        }
        if let Some(d) = &s.database {
            o.push(("database.url", toml::Value::String(d.clone())));
        }
    }
    if let Some(f) = &cli.log_format {
        o.push(("log.format", toml::Value::String(f.clone())));
    }
    if let Some(l) = &cli.log_level {
        o.push(("log.level", toml::Value::String(l.clone())));
    }
    o
}

/// `up` and `server`: start, print where it listens (and the bootstrap key once), wait.
async fn run_server(settings: &config::Settings, roles: server::Roles, shutdown: Shutdown) -> Result<()> {
    let server = server::start_roles(settings, roles, shutdown).await?;
    match server.addr {
        Some(addr) => println!("gpufleet listening on {}://{addr} (roles {roles}; data in {})", server.scheme, settings.data_dir.display()),
        None => println!("gpufleet running roles {roles} (no listener)"),
    }
    if let Some(key) = &server.bootstrap_key {
        println!("bootstrap admin key (shown once; store it now, e.g. export GPUFLEET_API_KEY=...): {key}");
    }
    server.wait().await
}

fn init_logging(json: bool, level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).with_context(|| format!("log.level: {level:?} is not a valid filter (e.g. info, gpufleet=debug)"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("GPUFLEET_")).collect()
}

async fn run(cli: Cli) -> Result<()> {
    let serve = match &cli.command {
        Command::Up(s) | Command::Server { serve: s, .. } => Some(s),
        Command::Demo { serve, .. } => Some(serve),
        _ => None,
    };
    let loaded = config::load(cli.config.as_deref(), &env_vars(), &serve_overrides(&cli, serve))?;
    let settings = loaded.config.validate().with_context(|| match &loaded.file {
        Some(f) => format!("invalid configuration (file {})", f.display()),
        None => "invalid configuration".to_owned(),
    })?;
    // Client commands log warnings only, unless a level was set (flag, env or file).
    let is_role = matches!(cli.command, Command::Up(_) | Command::Server { .. } | Command::Agent(_) | Command::Sim { .. } | Command::Demo { .. } | Command::Bench { .. });
    let level_set = settings.log_level != config::LogSection::default().level;
    let level = if is_role || level_set { settings.log_level.clone() } else { "warn".to_owned() };
    init_logging(settings.log_json, &level)?;

    let shutdown = Shutdown::new();
    {
        let s = shutdown.clone();
        tokio::spawn(async move {
            os_signal().await;
            tracing::info!("signal received; shutting down");
            s.trigger();
        });
    }

    match &cli.command {
        Command::Up(_) => run_server(&settings, server::Roles::ALL, shutdown).await,
        Command::Server { roles, .. } => run_server(&settings, server::Roles::parse(roles)?, shutdown).await,
        Command::Demo { exit_after_replay, serve } => demo::run(settings, serve.data_dir.is_some(), *exit_after_replay, shutdown).await,
        Command::MockBackend(args) => mock::run(args, shutdown).await,
        Command::Agent(args) => agent_cmd::agent(loaded.config.agent.clone(), args, shutdown).await,
        Command::Sim { command: SimCommand::Fleet(args) } => agent_cmd::sim_fleet(args, shutdown).await,
        Command::Stream(args) => {
            let summary = stream::run(args, shutdown).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                stream::print_summary(&summary);
            }
            Ok(())
        }
        Command::Gpus { server, host, json } => client::gpus(server, host.clone(), *json).await,
        Command::Hosts { server, command, json } => hosts_cmd::run(server, command.as_ref(), *json).await,
        Command::Telemetry(a) => client::telemetry(a).await,
        Command::Topics { server, json } => client::topics(server, *json).await,
        Command::Stats { server, json } => client::stats(server, *json).await,
        Command::Keys { command } => match command {
            KeysCommand::Create { server, owner, role, expires_in, models, label, json } => {
                client::keys_create(server, owner, role, expires_in.clone(), models, label.clone(), *json).await
            }
            KeysCommand::List { server, json } => client::keys_list(server, *json).await,
            KeysCommand::Revoke { prefix, server, json } => client::keys_change(server, prefix, false, *json).await,
            KeysCommand::Rotate { prefix, server, json } => client::keys_change(server, prefix, true, *json).await,
        },
        Command::Audit { command } => match command {
            AuditCommand::List { server, since, actor, action, limit, json } => {
                client::audit_list(server, since.clone(), actor.clone(), action.clone(), *limit, *json).await
            }
            AuditCommand::Verify { server, json } => client::audit_verify(server, *json).await,
        },
        Command::Certs { command: CertsCommand::Generate { out, host, json } } => {
            let (cert, key) = tls::generate(out, host)?;
            if *json {
                println!("{}", serde_json::json!({ "cert": cert, "key": key }));
            } else {
                println!("wrote {} and {} (key mode 0600)\nserve with: gpufleet up --tls-cert {} --tls-key {}", cert.display(), key.display(), cert.display(), key.display());
            }
            Ok(())
        }
        Command::Export(a) => client::export(a).await,
        Command::Config { command: ConfigCommand::Check { json } } => {
            if *json {
                let v = serde_json::json!({ "file": loaded.file, "env": loaded.env_applied, "config": loaded.config });
                println!("{}", redact::redact(&serde_json::to_string_pretty(&v)?));
            } else {
                println!("# configuration is valid");
                println!("# file: {}", loaded.file.as_ref().map_or("(none; defaults)".to_owned(), |f| f.display().to_string()));
                if !loaded.env_applied.is_empty() {
                    println!("# environment: {}", loaded.env_applied.join(", "));
                }
                print!("{}", redact::redact(&toml::to_string_pretty(&loaded.config)?));
            }
            Ok(())
        }
        Command::Bench { command: BenchCommand::Ingest(args) } => bench::ingest(args, &settings).await,
        Command::Bench { command: BenchCommand::Auth(args) } => bench::auth(args).await,
        Command::Bench { command: BenchCommand::Fleet(args) } => bench::fleet(args).await,
        Command::Bench { command: BenchCommand::Gateway(args) } => bench::gateway(args).await,
    }
}
