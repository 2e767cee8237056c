//! aq-runtime integration tests: real fixture models through the tract engine.

mod engines;
