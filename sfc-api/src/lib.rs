//! The socket protocol between `sfcctl` and `sfc-daemon`: versioned requests and responses,
//! and the views they carry (per-chain counters, SF and hop health, trace records). Builds
//! on stable Rust without the BPF toolchain.

pub mod counters;
pub mod health;
pub mod protocol;
pub mod trace;
