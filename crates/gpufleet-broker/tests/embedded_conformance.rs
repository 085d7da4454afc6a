//! The broker conformance suite run against the embedded backend.

mod common;

gpufleet_broker::broker_test_suite!(common::temp_broker);
