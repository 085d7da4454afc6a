//! Simulated model servers for tests, benchmarks and `gpufleet demo`.
//!
//! [`MockBackend`] answers like a llama.cpp server (`llama-server`): OpenAI-compatible completions
//! (plain JSON and SSE streams), embeddings, `/v1/models`, `/health` (with the 503 "Loading model"
//! answer), `/slots` and `/metrics` with llama.cpp's metric names. It has a fixed number of slots;
//! a request waits for a free slot like llama.cpp does, or gets a 503 when
//! [`MockConfig::queue_when_full`] is off. Latency, throughput and failures (errors, hangs, slow
//! first byte, model loading, a crash after N requests) are injected from [`MockConfig`] and can be
//! changed at run time through [`MockHandle`].
//!
//! It depends on no other gpufleet crate, reads no environment and never exits the process: a
//! crash is only *requested* ([`MockHandle::crash_requested`]); the binary acts on it.
//!
//! # Layout
//! - [`config`] — [`MockConfig`].
//! - [`state`] — counters, slot accounting and the run-time [`MockHandle`].
//! - `completions`: the generation routes (chat, text, embeddings) and the SSE stream.
//! - `info`: `/health`, `/slots`, `/metrics`, `/v1/models`.
//! - [`server`] — [`MockBackend`] (the router) and [`serve`] / [`MockServer`] (a listener loop that
//!   drops every open connection when stopped, like a killed process).

mod completions;
pub mod config;
mod info;
pub mod server;
pub mod state;

pub use config::MockConfig;
pub use server::{serve, MockBackend, MockServer};
pub use state::{MockHandle, MockStats};

#[cfg(test)]
mod tests;
