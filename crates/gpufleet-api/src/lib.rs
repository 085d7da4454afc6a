//! API (placeholder).
