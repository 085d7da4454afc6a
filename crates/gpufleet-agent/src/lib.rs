//! The gpufleet host agent (one small process per host) and the simulated fleet of agents.
//!
//! The agent samples its host — `/proc` and `statvfs` (CPU by mode with steal, load, memory,
//! swap and SwapCached, OOM kills, disks, network rates, uptime), GPUs through NVML when a driver
//! is present, containers through the Docker/Podman socket, configured model servers — judges
//! each part with the rules of [`health`], answers the server's pulls (`GET /health`,
//! `GET /metrics/host`, `POST /containers/{id}/restart`) and pushes its GPU samples into the
//! telemetry pipeline. [`sim`] serves thousands of simulated agents with the same routes and
//! scripted failures.
//!
//! It depends only on `gpufleet-core` (time) and `gpufleet-runtime` (workers); it reads no
//! environment variable (the binary fills [`AgentConfig`]).
//!
//! # Layout
//! - [`wire`] — the JSON contract: [`HealthReport`], [`HostMetrics`] and their parts.
//! - [`health`] — the component rules (thresholds) and the report builder.
//! - [`proc`] — `/proc` parsers over `&str`, [`proc::ProcReader`], `statvfs`.
//! - [`sampler`] — one whole sample from every source.
//! - [`nvml`] — GPUs and XID events through NVML; the no-driver path.
//! - [`containers`] — the Docker/Podman Engine API client and "stopped on purpose".
//! - [`models`] — llama.cpp, Ollama and vLLM probes.
//! - [`server`] — the routes ([`server::router`], [`server::router_for`]) and token check.
//! - [`push`] — GPU samples as JSON lines to `POST /api/v1/telemetry`.
//! - [`config`] — [`AgentConfig`] (`[agent]`).
//! - [`agent`] — [`AgentState`], [`run`], [`run_on`].
//! - [`sim`] — [`sim::run_sim_fleet`], [`sim::SimFleetHandle`], [`sim::register_hosts`].

pub mod agent;
pub mod config;
pub mod containers;
pub mod health;
pub mod models;
pub mod nvml;
pub mod proc;
pub mod push;
pub mod sampler;
pub mod server;
pub mod sim;
pub mod wire;

pub use agent::{run, run_on, AgentState, AGENT_VERSION};
pub use config::{AgentConfig, ModelServerConfig};
pub use server::{router, router_for, AgentBackend};
pub use sim::{register_hosts, run_sim_fleet, Scenario, SimFleetConfig, SimFleetHandle, SimHost};
pub use wire::{HealthReport, HostMetrics, Status};
