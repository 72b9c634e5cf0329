//! Per-chain counter rows, as `stats` reports them.

use serde::{Deserialize, Serialize};
use sfc_common::Counter;
use sfc_config::compile::CounterLabel;

/// The per-chain counts of one generation (one epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub epoch: u64,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    #[serde(flatten)]
    pub label: CounterLabel,
    pub packets: u64,
    pub bytes: u64,
}

impl Row {
    pub fn new(label: CounterLabel, counter: Counter) -> Self {
        Self {
            label,
            packets: counter.packets,
            bytes: counter.bytes,
        }
    }
}
