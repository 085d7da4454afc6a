//! `gpufleet bench …`: benchmarks that print figures and, with a peer, the peer's figure from the
//! same run as a ratio. Timing belongs here, never in tests.

mod ingest;

pub use ingest::{ingest, IngestBenchArgs};
