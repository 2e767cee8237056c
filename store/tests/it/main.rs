//! Integration tests of the local registry (one test binary for the crate).

mod crash;
mod model;
mod registry;
mod support;
