//! Per-chain counters over time. The datapath counts per generation; when a generation is
//! reused, its counts move here, so totals survive any number of updates and the last few
//! generations can still be inspected one by one (each packet is counted in exactly one).

use std::collections::{BTreeMap, VecDeque};

use sfc_api::counters::{Generation, Row};
use sfc_common::Counter;
use sfc_config::compile::CounterLabel;

/// Retired generations kept for inspection, and the rows they may hold in all: whatever the
/// history, the memory they take and a `stats` answer stay bounded.
const HISTORY: usize = 64;
const HISTORY_ROWS: usize = 65_536;

#[derive(Clone, Debug, Default)]
pub struct ChainCounters {
    totals: BTreeMap<CounterLabel, Counter>,
    history: VecDeque<Generation>,
}

impl ChainCounters {
    pub fn retire(&mut self, generation: Generation) {
        for row in &generation.rows {
            add(&mut self.totals, row);
        }
        self.history.push_back(generation);
        let mut rows: usize = self.history.iter().map(|g| g.rows.len()).sum();
        while self.history.len() > HISTORY || (rows > HISTORY_ROWS && self.history.len() > 1) {
            rows -= self.history.pop_front().map_or(0, |g| g.rows.len());
        }
    }

    /// Forgets the totals of what no generation counts any more (deleted chains, classifiers
    /// and hops), so that they do not pile up over the daemon's life.
    pub fn keep_only(&mut self, live: impl Fn(&CounterLabel) -> bool) {
        self.totals.retain(|label, _| live(label));
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

#[cfg(test)]
mod tests {
    use sfc_config::compile::Direction;

    use super::*;

    fn generation(epoch: u64, chains: &[&str], rows_each: usize) -> Generation {
        let rows = chains
            .iter()
            .flat_map(|chain| {
                (0..rows_each).map(move |position| Row {
                    label: CounterLabel {
                        chain: chain.to_string(),
                        direction: Direction::Forward,
                        position: position as u8,
                        hops: rows_each as u8,
                        classifier: None,
                    },
                    packets: 1,
                    bytes: 100,
                })
            })
            .collect();
        Generation { epoch, rows }
    }

    #[test]
    fn history_is_bounded_in_generations_and_rows() {
        let mut counters = ChainCounters::default();
        for epoch in 0..200 {
            counters.retire(generation(epoch, &["a"], 2));
        }
        assert_eq!(counters.history().count(), HISTORY);
        assert_eq!(
            counters.history().next().unwrap().epoch,
            200 - HISTORY as u64
        );
        // Big generations: as many as fit in the row budget, and always the newest one.
        for epoch in 200..210 {
            counters.retire(generation(epoch, &["b"; 100], 200));
        }
        let rows: usize = counters.history().map(|g| g.rows.len()).sum();
        assert!(rows <= HISTORY_ROWS, "{rows}");
        assert_eq!(counters.history().last().unwrap().epoch, 209);
    }

    #[test]
    fn totals_of_deleted_chains_are_dropped() {
        let mut counters = ChainCounters::default();
        counters.retire(generation(1, &["kept", "deleted"], 2));
        counters.keep_only(|label| label.chain == "kept");
        let totals = counters.totals(&[]);
        assert_eq!(totals.len(), 2);
        assert!(totals
            .iter()
            .all(|r| r.label.chain == "kept" && r.packets == 1));
    }
}
