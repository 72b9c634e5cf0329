//! The Unix socket sfcctl talks to.

pub mod server;
