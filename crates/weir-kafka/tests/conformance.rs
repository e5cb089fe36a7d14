//! weir-testkit's conformance suite against weir-kafka on a tansu broker: the same
//! scenario bodies the embedded log passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

weir_testkit::conformance_suite!(common::KafkaBackend::new());
