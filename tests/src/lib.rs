//! Prism's acceptance suite: one module of cases per interface, run against any plugin
//! library that declares the interface — ours in `cargo test`, anyone's with the
//! `prism-acceptance PATH` binary. Also the helpers the end-to-end tests share.

#![forbid(unsafe_code)]

pub mod harness;
pub mod suites;

pub use suites::{run_suite, suite_for, Case, Keys, SuiteReport, Target};
