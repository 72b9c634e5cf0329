//! How full the flow, pin, decision and fragment tables are. The kernel counts no evictions of
//! an LRU map, and keeps no count of a hash map's entries that user space can read: the only
//! way to know is to walk it. So a thread of its own counts every table every `COUNT_EVERY`, with its own
//! descriptors of the maps (the agent's thread, which writes them, never waits for it), and
//! publishes the result in the snapshot that `stats` and `/metrics` read.
//!
//! The walk reads the table a batch of buckets at a time (`BPF_MAP_LOOKUP_BATCH`) rather than
//! a key at a time (`BPF_MAP_GET_NEXT_KEY`): besides costing one system call per thousands of
//! entries instead of one per entry, it resumes at a bucket, not at a key, so entries evicted
//! meanwhile (a full table evicts all the time) never send it back to the start.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, MapError};
use sfc_api::counters::{TableFill, TableFills};
use thiserror::Error;
use tracing::{info, warn};

use crate::{dataplane::tables::Table, observe::snapshot::Shared};

/// How often the tables are counted.
pub const COUNT_EVERY: Duration = Duration::from_secs(10);
/// The longest one table's count may take; past it, what was counted is reported as a lower
/// bound. A full table of 16M entries (the largest size) takes about a second.
const COUNT_LIMIT: Duration = Duration::from_secs(5);
/// Entries fetched per system call (more when a bucket holds more).
const BATCH: u32 = 4096;
/// Free entries the kernel's LRU keeps on each CPU's own list (`LOCAL_FREE_TARGET` in
/// kernel/bpf/bpf_lru_list.c): it evicts once its shared free list runs short, while up to
/// this many entries per CPU may still be free.
const LRU_LOCAL_FREE: u64 = 128;

#[derive(Debug, Error)]
pub enum FillError {
    #[error("map {table}: {source}")]
    Map {
        table: &'static str,
        source: MapError,
    },
    #[error("counting the entries of map {table}: {source}")]
    Batch {
        table: &'static str,
        source: io::Error,
    },
}

/// Counts `map`'s entries, giving up at `deadline` (then the count is a lower bound: the
/// second value is false).
pub fn count_entries(
    table: &'static str,
    map: &MapData,
    deadline: Instant,
) -> Result<(u64, bool), FillError> {
    let info = map
        .info()
        .map_err(|source| FillError::Map { table, source })?;
    let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
    let mut batch = BATCH;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // The position in the table: a bucket index, for hash maps.
    let (mut from, mut next) = (0u32, 0u32);
    let mut first = true;
    let mut entries = 0u64;
    loop {
        if Instant::now() >= deadline {
            return Ok((entries, false));
        }
        keys.resize(batch as usize * key_size, 0u8);
        values.resize(batch as usize * value_size, 0u8);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &from as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is the kernel's `bpf_attr.batch`; the buffers it points to hold
        // `count` keys and values of the map's sizes, and `from` and `next` outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        match error.as_ref().and_then(io::Error::raw_os_error) {
            None => {}
            // The end of the table: what this last call returned still counts.
            Some(libc::ENOENT) => return Ok((entries + attr.count as u64, true)),
            // One bucket holds more entries than the batch: read it again, with room for it.
            Some(libc::ENOSPC) if attr.count == 0 && batch < u32::MAX / 2 => {
                batch *= 2;
                continue;
            }
            Some(_) => {
                return Err(FillError::Batch {
                    table,
                    source: error.expect("an error"),
                })
            }
        }
        entries += attr.count as u64;
        from = next;
        first = false;
    }
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s member for the `BPF_MAP_*_BATCH` commands (include/uapi/linux/bpf.h).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Whether a table of `capacity` holding `entries` is full: at capacity, or, for an LRU
/// table, with fewer free entries than the kernel may hold back on the CPUs' own free lists,
/// where it already evicts (a quarter of the table at most, so that a small table on many
/// CPUs is not always called full).
pub fn is_full(entries: u64, capacity: u64, cpus: u64, lru: bool) -> bool {
    let slack = if lru {
        (LRU_LOCAL_FREE * (cpus + 1)).min(capacity / 4)
    } else {
        0
    };
    entries + slack >= capacity
}

/// Counts every table once.
pub fn count_all(maps: &[(Table, MapData)], cpus: u64) -> Result<TableFills, FillError> {
    let started = Instant::now();
    let mut tables = Vec::with_capacity(maps.len());
    for (table, map) in maps {
        let (entries, complete) = count_entries(table.map, map, Instant::now() + COUNT_LIMIT)?;
        let capacity = table.size as u64;
        tables.push(TableFill {
            table: table.label.to_string(),
            entries,
            capacity,
            full: is_full(entries, capacity, cpus, table.lru),
            when_full: table.when_full.to_string(),
            flag: table.flag.to_string(),
            complete,
        });
    }
    let counted_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(TableFills {
        counted_at_ms,
        took_us: started.elapsed().as_micros() as u64,
        tables,
    })
}

/// Starts the thread that counts the tables now and every `COUNT_EVERY`, publishing into
/// `observed`.
pub fn spawn(maps: Vec<(Table, MapData)>, observed: Shared) -> io::Result<()> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    thread::Builder::new()
        .name("table-fill".into())
        .spawn(move || {
            let mut full: Vec<String> = Vec::new();
            let mut failing = false;
            loop {
                match count_all(&maps, cpus) {
                    Ok(fills) => {
                        failing = false;
                        log_changes(&mut full, &fills);
                        observed.lock().unwrap_or_else(|e| e.into_inner()).tables = Some(fills);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        warn!(error = %e, "counting the entries of the tables");
                    }
                    Err(_) => {}
                }
                thread::sleep(COUNT_EVERY);
            }
        })?;
    Ok(())
}

/// Says in the log when a table becomes full, and when it no longer is.
fn log_changes(full: &mut Vec<String>, fills: &TableFills) {
    for t in &fills.tables {
        let was = full.contains(&t.table);
        if t.full && !was {
            warn!(
                table = t.table,
                entries = t.entries,
                capacity = t.capacity,
                "the {} table is full: {}; raise {}",
                t.table,
                t.when_full,
                t.flag
            );
            full.push(t.table.clone());
        } else if !t.full && was {
            info!(
                table = t.table,
                entries = t.entries,
                capacity = t.capacity,
                "the {} table is no longer full",
                t.table
            );
            full.retain(|name| name != &t.table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_full_once_the_lru_may_evict() {
        // 2 CPUs: the LRU may hold back 128 free entries on each, and evicts past that.
        assert!(!is_full(0, 131072, 2, true));
        assert!(!is_full(131072 - 385, 131072, 2, true));
        assert!(is_full(131072 - 384, 131072, 2, true));
        assert!(is_full(131072, 131072, 2, true));
        // 64 CPUs and a small table: a quarter of it at most.
        assert!(!is_full(767, 1024, 64, true));
        assert!(is_full(768, 1024, 64, true));
        // A table that refuses new entries rather than evicting is full when it refuses them.
        assert!(!is_full(65535, 65536, 2, false));
        assert!(is_full(65536, 65536, 2, false));
    }
}
