//! Helpers for end-to-end tests that run the real `tenantgate` binary: its path, and the test
//! kit's process helpers, which take that path.

#![allow(dead_code, unused_imports)] // not every test binary uses every helper

pub(crate) mod fleet;

pub(crate) use tenantgate_testkit::net::{ok_upstream, RefusedAddr};
pub(crate) use tenantgate_testkit::process::{get_with_host, ComponentProcess, DevProcess};
pub(crate) use tenantgate_testkit::wait_until;

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tenantgate")
}
