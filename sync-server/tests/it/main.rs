//! End-to-end tests of `aq-sync` with the real `aq`: real processes, HTTPS over loopback, real
//! redb files and real model files.
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod fleet;
mod kill_loop;
mod network;
mod openapi;
mod registry;
mod support;
