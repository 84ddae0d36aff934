//! The end-to-end and acceptance tests as one test binary (one link instead of thirteen;
//! each file is a module). Tests that need a backend skip with a reason when it is not
//! reachable; `cargo xtask test` starts the backends and makes a missing one fail.

#![forbid(unsafe_code)]

mod abi;
mod abi_compat;
mod acceptance;
mod auth;
mod backend_tls;
mod boundaries;
mod certs;
mod claim_check;
mod cli;
mod compression;
mod console;
mod deploy;
mod dist;
mod e2e;
mod e2e_multicast;
mod e2e_postgres;
mod e2e_pubsub;
mod e2e_sqlite;
mod e2e_stream;
mod gateways;
mod idempotency;
mod isolation;
mod jwks_server;
mod layers;
mod limits;
mod observe;
mod pages;
mod prometheus;
mod redis_faults;
mod reload;
mod sandbox;
mod secrets;
mod sweeper;
mod tls;
mod traces;
mod walkthrough;
