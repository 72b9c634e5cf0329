//! The tables whose size is a daemon flag: the LRU caches (flows, pins, decisions) and the
//! fragment table. Their defaults are the constants of `sfc-common`; the agent sets the real
//! size when it loads the programs.
//!
//! These maps are pinned, and aya reuses a pinned map whatever its definition: a daemon asked
//! for another size would silently keep running with the old one. So a pinned table of another
//! size is unpinned before the load, and the loader creates an empty one of the asked size
//! beside the old one (which lives on, unchanged, under the programs of the previous daemon
//! until their links are moved onto the new programs). What is lost is what a cache loses on
//! eviction, said per table in [`Table::lost`].

use std::{fs, io, path::Path};

use sfc_common::{
    DECISIONS_CAPACITY, FLOWS_CAPACITY, FRAGMENTS_CAPACITY, MAP_DECISIONS, MAP_DECISIONS4,
    MAP_FLOWS, MAP_FLOWS4, MAP_FRAGMENTS, MAP_NEW_PINS, MAP_PINS, PINS_CAPACITY,
};
use thiserror::Error;
use tracing::warn;

use crate::dataplane::DataplaneError;

/// The smallest table size accepted. Below a few hundred entries per CPU the kernel's LRU
/// (which keeps up to 128 free entries per CPU) evicts long before the table is full.
pub const MIN_ENTRIES: u32 = 1024;
/// The largest table size accepted. These maps are allocated whole when they are created, at 80
/// (pins) to 240 (IPv6 flows) bytes of kernel memory per entry, as the kernel accounts them
/// (`memlock`): an IPv6 flow table this size takes 3.8 GiB, and some seconds to create.
pub const MAX_ENTRIES: u32 = 1 << 24;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TableSizeError {
    #[error("{0:?} is not a number of entries")]
    NotANumber(String),
    #[error(
        "{size} entries is out of bounds: a table holds {MIN_ENTRIES} to {MAX_ENTRIES} entries"
    )]
    OutOfBounds { size: String },
}

/// A table size as given on the command line.
pub fn parse_size(text: &str) -> Result<u32, TableSizeError> {
    let digits = text.trim().replace('_', "");
    let out_of_bounds = || TableSizeError::OutOfBounds {
        size: digits.clone(),
    };
    let size: u64 = digits
        .parse()
        .map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => out_of_bounds(),
            _ => TableSizeError::NotANumber(text.to_string()),
        })?;
    if !(MIN_ENTRIES as u64..=MAX_ENTRIES as u64).contains(&size) {
        return Err(out_of_bounds());
    }
    Ok(size as u32)
}

/// The sizes of the tables, in entries (see the daemon's `--*-table-size` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tables {
    /// `sfc_*_flows` and `sfc_*_flows4`, each.
    pub flows: u32,
    pub pins: u32,
    /// `sfc_*_decisions` and `sfc_*_decisions4`, each.
    pub decisions: u32,
    pub fragments: u32,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            flows: FLOWS_CAPACITY,
            pins: PINS_CAPACITY,
            decisions: DECISIONS_CAPACITY,
            fragments: FRAGMENTS_CAPACITY,
        }
    }
}

/// One table sized by a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its short name in `stats` and `/metrics`.
    pub label: &'static str,
    pub map: &'static str,
    pub flag: &'static str,
    pub size: u32,
    /// Whether the kernel makes room by evicting the least recently used entry (rather than
    /// refusing new ones).
    pub lru: bool,
    /// What happens to traffic while it is full.
    pub when_full: &'static str,
    /// What is lost when a pinned one of another size is replaced by an empty one.
    pub lost: &'static str,
}

const FLOWS_LOST: &str = "flows in a chain restart on the active generation, as after an \
    eviction (packets inside an SF at that moment come back to a flow that no longer knows \
    its original destination MAC)";
const DECISIONS_LOST: &str = "cached decisions: the next packet of each flow is classified \
    again";

impl Tables {
    /// Every table, in the order `stats` shows them.
    pub fn list(&self) -> [Table; 7] {
        let flows = |label, map| Table {
            label,
            map,
            flag: "--flows-table-size",
            size: self.flows,
            lru: true,
            when_full: "flows are being evicted",
            lost: FLOWS_LOST,
        };
        let decisions = |label, map| Table {
            label,
            map,
            flag: "--decisions-table-size",
            size: self.decisions,
            lru: true,
            when_full: "decisions are being evicted, flows are classified again",
            lost: DECISIONS_LOST,
        };
        [
            Table {
                label: "pins",
                map: MAP_PINS,
                flag: "--pins-table-size",
                size: self.pins,
                lru: true,
                when_full: "established flows are being evicted",
                lost: "flow pins: each flow's member is chosen again from its group's table \
                    (the same member unless the group changed since the flow started)",
            },
            Table {
                label: "new_pins",
                map: MAP_NEW_PINS,
                flag: "--pins-table-size",
                size: self.pins,
                lru: true,
                when_full: "flows seen once are being evicted (established ones keep theirs)",
                lost: "pins of flows seen once: their member is chosen again from its group's \
                    table",
            },
            flows("flows", MAP_FLOWS),
            flows("flows4", MAP_FLOWS4),
            decisions("decisions", MAP_DECISIONS),
            decisions("decisions4", MAP_DECISIONS4),
            Table {
                label: "fragments",
                map: MAP_FRAGMENTS,
                flag: "--fragments-table-size",
                size: self.fragments,
                lru: false,
                when_full: "new datagrams are not tracked (fragment_table_full), their later \
                    fragments are unparsable where ports matter",
                lost: "datagrams whose first fragment was seen: their later fragments are \
                    handled as fragments of an unknown datagram (dropped where a classifier \
                    needs ports)",
            },
        ]
    }
}

/// Unpins every table pinned in `maps_dir` with another size than asked, so that the loader
/// creates it afresh; says so, and what was lost, in the log.
pub fn replace_resized(maps_dir: &Path, tables: &Tables) -> Result<(), DataplaneError> {
    for table in tables.list() {
        let path = maps_dir.join(table.map);
        // Not pinned yet (a first start): the loader creates it.
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        if info.max_entries() == table.size {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(DataplaneError::Bpffs { path, source }),
        }
        warn!(
            table = table.label,
            pinned = info.max_entries(),
            asked = table.size,
            lost = table.lost,
            "the pinned {} table has another size than {} asks: replaced by an empty one",
            table.label,
            table.flag,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_against_their_bounds() {
        assert_eq!(parse_size("131072"), Ok(131072));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert_eq!(parse_size("1024"), Ok(MIN_ENTRIES));
        assert_eq!(parse_size("16777216"), Ok(MAX_ENTRIES));
        assert_eq!(
            parse_size("0"),
            Err(TableSizeError::OutOfBounds { size: "0".into() })
        );
        assert_eq!(
            parse_size("16777217").unwrap_err().to_string(),
            "16777217 entries is out of bounds: a table holds 1024 to 16777216 entries"
        );
        assert_eq!(
            parse_size("99999999999999999999").unwrap_err().to_string(),
            "99999999999999999999 entries is out of bounds: a table holds 1024 to 16777216 entries"
        );
        assert_eq!(
            parse_size("64k").unwrap_err().to_string(),
            "\"64k\" is not a number of entries"
        );
        assert!(matches!(
            parse_size("-1"),
            Err(TableSizeError::NotANumber(_))
        ));
    }

    #[test]
    fn every_table_has_its_flag_and_the_defaults_are_the_abi_constants() {
        let list = Tables::default().list();
        let flags: Vec<_> = list.iter().map(|t| (t.label, t.flag, t.size)).collect();
        assert_eq!(
            flags,
            [
                ("pins", "--pins-table-size", PINS_CAPACITY),
                ("new_pins", "--pins-table-size", PINS_CAPACITY),
                ("flows", "--flows-table-size", FLOWS_CAPACITY),
                ("flows4", "--flows-table-size", FLOWS_CAPACITY),
                ("decisions", "--decisions-table-size", DECISIONS_CAPACITY),
                ("decisions4", "--decisions-table-size", DECISIONS_CAPACITY),
                ("fragments", "--fragments-table-size", FRAGMENTS_CAPACITY),
            ]
        );
    }
}
