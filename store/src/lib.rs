//! Local registry.
