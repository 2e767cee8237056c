//! End-to-end tests of the `aq` binary: real processes, real redb files, real model files.

mod bad_input;
mod export;
mod flow;
mod kill;
mod serving;
mod support;
