//! The model server: what `aq serve`, `aq dev` and (later) `aq agent run` run.
//!
//! Layers, each knowing only the ones below it:
//! - [`codec`]: request and response bodies (v1 JSON, binary tensors, OIP v2), no I/O.
//! - [`batcher`]: a bounded queue per model, a dispatcher that gathers batches, and worker
//!   threads that run the engine.
//! - [`spawner`]: starts worker threads at the server's priority.
//! - [`models`]: the served set, with atomic swap for hot reload.
//! - [`api`]: routing, from an HTTP request to a response, without sockets.
//! - [`server`]: sockets, connections, graceful shutdown.

pub mod api;
pub mod batcher;
pub mod codec;
pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod server;
pub mod spawner;

/// For the binary's HTTP runtime: its threads run below the model workers.
pub use aq_http_server::priority;
pub use config::{ConfigError, ConfigFile, ModelSettings, QueueDelay, ServerSettings};
pub use error::ApiError;
pub use models::{ModelSource, ServeModelError};
pub use server::{Server, ServerError, ServerHandle, ServingHealth, shutdown_signal};
