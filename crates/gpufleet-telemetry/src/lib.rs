//! Telemetry sources and collectors (placeholder).
