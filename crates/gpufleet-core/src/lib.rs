//! The shared vocabulary of gpufleet. It does no I/O and depends on no other gpufleet crate.
//!
//! # Layout
//! - [`ids`]: newtype names for hosts, GPUs, metrics, topics and groups.
//! - [`sample`]: [`GpuDesc`], [`Point`] and the columnar [`SampleBatch`] every pipeline stage passes on.
//! - [`codec`]: the compact binary encoding of a [`SampleBatch`] (the broker message payload).
//! - [`metric_names`]: the one table mapping CSV/nvidia-smi/NVML column names to DCGM metric names.
//! - [`time`]: timestamp parsing (RFC 3339, nvidia-smi, relative forms like `-1h`) and formatting.

pub mod codec;
pub mod ids;
pub mod metric_names;
pub mod sample;
pub mod time;

pub use ids::{ConsumerName, GpuUuid, GroupName, HostName, MetricName, TopicName};
pub use sample::{BatchBuilder, GpuDesc, Point, SampleBatch, SeriesKey};
