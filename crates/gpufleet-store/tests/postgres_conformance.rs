//! The conformance suite run against the PostgreSQL store (a real server; each store in a
//! schema of its own, dropped afterwards).

mod postgres_common;

gpufleet_store::store_test_suite!(postgres_common::PgFactory::default());
