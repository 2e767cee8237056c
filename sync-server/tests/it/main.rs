//! End-to-end tests of `aq-sync` with the real `aq`: real processes, HTTPS over loopback, real
//! redb files and real model files.

mod fleet;
mod registry;
mod support;
