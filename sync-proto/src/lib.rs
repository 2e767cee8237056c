//! Wire contracts between the agent (`aq`) and the sync-server (`aq-sync`): the JSON bodies of
//! the registry REST API, the binary chunk batch frame, token roles, and the reconnect policy.
//!
//! Like `aq-pack`, this crate does no I/O: it turns bytes into typed values and back, so both
//! programs (and the fuzz targets) share one definition of every message.

pub mod api;
pub mod backoff;
pub mod fleet;
pub mod frame;
pub mod role;
#[cfg(feature = "schema")]
pub mod schema;

pub use frame::{ChunkEntry, FrameError};
pub use role::Role;
