//! How `sfcctl stats` shows counters: a table (outcomes, per hop, per SF, with rates and
//! health) or one JSON document.

use std::{
    collections::BTreeMap,
    fmt::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use sfc_api::{counters::TableFills, protocol::Response};

pub fn json(r: &Response) -> serde_json::Value {
    serde_json::json!({
        "counters": r.counters.iter().cloned().collect::<BTreeMap<_, _>>(),
        "chains": r.chains,
        "hops": r.hops,
        "pairs": r.pairs,
        "generations": r.generations,
        "tables": r.tables,
    })
}

pub fn table(r: &Response, with_outcomes: bool) -> String {
    let mut out = String::new();
    if with_outcomes {
        // As wide as the longest outcome name, so that every count lines up.
        let width = r
            .counters
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0)
            .max(20);
        let _ = writeln!(out, "{:<width$} {:>12}", "OUTCOME", "PACKETS");
        for (name, value) in &r.counters {
            let _ = writeln!(out, "{name:<width$} {value:>12}");
        }
        let _ = writeln!(out);
        if let Some(fills) = &r.tables {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            out.push_str(&tables(fills, now_ms));
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<12} {:>12} {:>14}",
        "CHAIN", "DIR", "CLASSIFIER", "ENTERED", "BYTES"
    );
    for row in r.chains.iter().filter(|r| r.label.position == 0) {
        let l = &row.label;
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<12} {:>12} {:>14}",
            l.chain,
            format!("{:?}", l.direction).to_lowercase(),
            l.classifier.as_deref().unwrap_or("-"),
            row.packets,
            row.bytes
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:>3} {:>12} {:>12} {:>9} {:>9}  STATE",
        "CHAIN", "DIR", "HOP", "IN", "OUT", "IN/s", "OUT/s"
    );
    for h in &r.hops {
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>3} {:>12} {:>12} {:>9.1} {:>9.1}  {}",
            h.chain,
            format!("{:?}", h.direction).to_lowercase(),
            h.hop,
            h.into_packets,
            h.from_packets,
            h.into_pps,
            h.from_pps,
            h.state.as_str()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:>12} {:>12} {:>9} {:>9}  STATE",
        "PORT PAIR (SF)", "IN", "OUT", "IN/s", "OUT/s"
    );
    for p in &r.pairs {
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>9.1} {:>9.1}  {}",
            p.pair,
            p.into_packets,
            p.from_packets,
            p.into_pps,
            p.from_pps,
            p.state.as_str()
        );
    }
    out
}

/// The fill level of each table, a plain warning on those that are full, and when they were
/// counted.
fn tables(fills: &TableFills, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>12} {:>12} {:>5}",
        "TABLE", "ENTRIES", "CAPACITY", "FILL"
    );
    for t in &fills.tables {
        // Counting ran out of time: at least this many.
        let entries = if t.complete {
            t.entries.to_string()
        } else {
            format!(">={}", t.entries)
        };
        let percent = (t.entries * 100).checked_div(t.capacity).unwrap_or(0);
        let _ = write!(
            out,
            "{:<20} {entries:>12} {:>12} {:>4}%",
            t.table, t.capacity, percent
        );
        if t.full {
            let _ = write!(out, "  full: {}, raise {}", t.when_full, t.flag);
        }
        let _ = writeln!(out);
    }
    let ago = now_ms.saturating_sub(fills.counted_at_ms) / 1000;
    let _ = writeln!(
        out,
        "(counted {ago} s ago, in {:.1} ms)",
        fills.took_us as f64 / 1e3
    );
    out
}

#[cfg(test)]
mod tests {
    use sfc_api::counters::TableFill;

    use super::*;

    fn fill(table: &str, entries: u64, capacity: u64, full: bool, complete: bool) -> TableFill {
        TableFill {
            table: table.into(),
            entries,
            capacity,
            full,
            when_full: "flows are being evicted".into(),
            flag: format!("--{table}-table-size"),
            complete,
        }
    }

    #[test]
    fn a_full_table_says_what_it_does_and_which_flag_to_raise() {
        let fills = TableFills {
            counted_at_ms: 10_000,
            took_us: 41_520,
            tables: vec![
                fill("pins", 131_072, 131_072, true, true),
                fill("flows4", 12, 65_536, false, true),
                fill("decisions", 70_000, 131_072, false, false),
            ],
        };
        let text = tables(&fills, 13_400);
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "TABLE                     ENTRIES     CAPACITY  FILL",
                "pins                       131072       131072  100%  full: flows are being evicted, raise --pins-table-size",
                "flows4                         12        65536    0%",
                "decisions                 >=70000       131072   53%",
                "(counted 3 s ago, in 41.5 ms)",
            ]
        );
    }

    #[test]
    fn stats_from_a_daemon_that_sends_no_tables_still_show() {
        let text = table(&Response::default(), true);
        assert!(!text.contains("TABLE"), "{text}");
        assert!(text.contains("OUTCOME"), "{text}");
    }
}
