//! The Unix socket sfcctl talks to.

pub mod across;
pub mod server;
