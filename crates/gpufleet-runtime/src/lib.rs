//! Long-running work: the [`Worker`] trait, the [`Supervisor`] that owns workers (named, restarted
//! with backoff, drained on shutdown, observable), and the [`Shutdown`] signal.
//!
//! It knows nothing about telemetry, brokers or HTTP; it must not depend on other gpufleet crates.
//!
//! # Layout
//! - [`shutdown`]: [`Shutdown`], the whole graceful-shutdown protocol (a cancellation token).
//! - [`backoff`]: [`Backoff`], capped exponential backoff with jitter.
//! - [`limits`]: the open-file limit (`raise_nofile`).
//! - [`supervisor`]: [`Worker`], [`WorkerContext`], [`Supervisor`], [`WorkerStatus`].

pub mod backoff;
pub mod coarse;
pub mod limits;
pub mod shutdown;
pub mod supervisor;

pub use backoff::Backoff;
pub use shutdown::Shutdown;
pub use supervisor::{Supervisor, Worker, WorkerContext, WorkerError, WorkerStatus};
