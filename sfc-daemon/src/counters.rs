//! Per-chain counters over time. The datapath counts per generation; when a generation is
//! reused, its counts move here, so totals survive any number of updates and the last few
//! generations can still be inspected one by one (each packet is counted in exactly one).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sfc_common::Counter;

use crate::compile::CounterLabel;

/// Retired generations kept for inspection.
const HISTORY: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct ChainCounters {
    totals: BTreeMap<CounterLabel, Counter>,
    history: VecDeque<Generation>,
}

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

impl ChainCounters {
    pub fn retire(&mut self, generation: Generation) {
        for row in &generation.rows {
            add(&mut self.totals, row);
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(generation);
    }

    /// Totals: the retired generations plus `live` ones.
    pub fn totals(&self, live: &[Generation]) -> Vec<Row> {
        let mut totals = self.totals.clone();
        for row in live.iter().flat_map(|g| &g.rows) {
            add(&mut totals, row);
        }
        totals
            .into_iter()
            .map(|(label, c)| Row::new(label, c))
            .collect()
    }

    /// Retired generations, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Generation> {
        self.history.iter()
    }
}

fn add(totals: &mut BTreeMap<CounterLabel, Counter>, row: &Row) {
    let total = totals.entry(row.label.clone()).or_default();
    total.packets += row.packets;
    total.bytes += row.bytes;
}
