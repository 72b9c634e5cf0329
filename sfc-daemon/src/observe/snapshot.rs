//! What the agent knows about traffic, published once a second for readers on other threads
//! (the metrics endpoint) and for `sfcctl stats` and `describe`.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use sfc_api::{
    counters::{Row, TableFills},
    health::{HopHealth, PairHealth},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Datapath counters by outcome (`stat::NAMES` order).
    pub outcomes: Vec<(String, u64)>,
    /// Per chain, direction and position, summed over generations.
    pub chains: Vec<Row>,
    pub pairs: Vec<PairHealth>,
    pub hops: Vec<HopHealth>,
    pub epoch: u64,
    /// How full the tables are, as last counted (`fill`, on a thread of its own).
    pub tables: Option<TableFills>,
    /// Members of groups with a health check, probed on this node.
    pub probed: Vec<ProbedMember>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbedMember {
    pub pair: String,
    /// In its group: its probes come back (or none was sent yet).
    pub up: bool,
    /// Times it went down or came back up since the daemon started.
    pub transitions: u64,
}

pub type Shared = Arc<Mutex<Snapshot>>;
