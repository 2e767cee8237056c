//! `aq pack ...`: one module per subcommand.

pub mod export;
pub mod gc;
pub mod import;
pub mod inspect;
pub mod list;
pub mod pull;
pub mod push;
pub mod rm;
pub mod save;
pub mod tag;
pub mod unpack;
pub mod verify;
