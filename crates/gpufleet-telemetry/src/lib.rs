//! Telemetry in motion: sources that turn files and request bodies into [`SampleBatch`]es, the
//! ingest service that publishes them to the broker, and the collectors that move them from the
//! broker into the store. Data flows one way: source → broker → collector → store.
//!
//! Depends on the `Broker` and `MetricStore` traits, never on a concrete backend.
//!
//! # Layout
//! - [`source`]: DCGM long CSV and wide/nvidia-smi CSV decoders, the chunked file reader.
//! - [`synth`]: the seeded synthetic DCGM CSV generator used by benchmarks and tests.
//! - [`ingest`]: request body → one durable broker message, with per-row error reports.
//! - [`collector`]: the collector worker (fetch → decode → write → ack).
//! - [`metrics`]: every pipeline metric, declared once.
//!
//! [`SampleBatch`]: gpufleet_core::SampleBatch

pub mod collector;
pub mod ingest;
pub mod metrics;
pub mod source;
pub mod synth;

pub use collector::{Collector, CollectorConfig};
pub use metrics::PipelineMetrics;
