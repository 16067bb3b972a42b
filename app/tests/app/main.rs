//! App tier tests: a real app on 127.0.0.1:0, real catalogs and tenant databases on SQLite and
//! PostgreSQL (each test body runs on both), requests signed exactly like the edge signs them.

mod support;

// The kit's macro, for the modules' `use crate::both_backends`.
use tenantgate_testkit::both_backends;

mod browser;
mod budget;
mod isolation;
mod items;
mod lifecycle;
mod login;
mod pages;
mod replicas;
mod self_service;
mod signature;
mod streaming_replica;
