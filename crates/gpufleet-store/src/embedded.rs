//! Placeholder, replaced by the backend implementation.
