//! What the agent knows about traffic and shows: per-chain counters over generations, SF and
//! hop health, `describe`, live traces, and the Prometheus endpoint.

pub mod counters;
pub mod describe;
pub mod fill;
pub mod health;
pub mod metrics;
pub mod snapshot;
pub mod trace;
