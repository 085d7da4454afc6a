//! The broker conformance suite run against the Redis backend on the shared test server
//! (`GPUFLEET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), one key prefix per case, deleted
//! afterwards.

mod common;

gpufleet_broker::broker_test_suite!(common::redis_support::suite_broker);
