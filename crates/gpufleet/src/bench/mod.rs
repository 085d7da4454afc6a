//! `gpufleet bench …`: benchmarks that print figures and, with a peer, the peer's figure from the
//! same run as a ratio. Timing belongs here, never in tests.

mod auth;
mod broker_redis;
mod distributed;
mod fleet;
mod gateway;
mod ingest;
mod proc;

pub use auth::{run as auth, AuthBenchArgs};
pub use fleet::{run as fleet, FleetBenchArgs};
pub use gateway::{run as gateway, GatewayBenchArgs};
pub use ingest::{ingest, IngestBenchArgs};
