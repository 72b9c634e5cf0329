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

/// How full one of the node's bounded tables is (`pins`, `flows`, `decisions`, ...: the LRU
/// caches, whose evictions the kernel does not count, and `fragments`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFill {
    pub table: String,
    pub entries: u64,
    pub capacity: u64,
    /// At capacity, or so near it that the kernel evicts (it keeps free entries per CPU):
    /// new entries push old ones out (LRU tables) or are refused (`fragments`).
    pub full: bool,
    /// What a full table does to traffic ("flows are being evicted").
    pub when_full: String,
    /// The daemon flag that sizes it (`--pins-table-size`).
    pub flag: String,
    /// False when the count ran out of time: `entries` is then a lower bound.
    pub complete: bool,
}

/// The fill levels of the node's tables, as of one count (counting walks every entry, so the
/// daemon does it every few seconds, off the path of requests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFills {
    /// When the count ended, in milliseconds since the Unix epoch.
    pub counted_at_ms: u64,
    /// How long counting every table took, in microseconds.
    pub took_us: u64,
    pub tables: Vec<TableFill>,
}
