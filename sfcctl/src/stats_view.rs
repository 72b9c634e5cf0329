//! How `sfcctl stats` shows counters: a table (outcomes, per hop, per SF, with rates and
//! health) or one JSON document.

use std::{
    collections::BTreeMap,
    fmt::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use sfc_api::{
    counters::TableFills,
    health::{PairHealth, Probed},
    protocol::Response,
};

pub fn json(r: &Response) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "counters": r.counters.iter().cloned().collect::<BTreeMap<_, _>>(),
        "chains": r.chains,
        "hops": r.hops,
        "pairs": r.pairs,
        "generations": r.generations,
        "tables": r.tables,
    });
    // In a cluster: each node's own, beside the sums above.
    if !r.per_node.is_empty() {
        doc["nodes"] = r
            .per_node
            .iter()
            .map(|n| {
                let mut node = json(&n.stats);
                node["node"] = n.node.clone().into();
                node["error"] = n.error.clone().into();
                node
            })
            .collect();
    }
    doc
}

/// One node's rows, or (in a cluster) every node's, each under its name.
fn sources(r: &Response) -> Vec<(Option<&str>, &Response)> {
    if r.per_node.is_empty() {
        vec![(None, r)]
    } else {
        r.per_node
            .iter()
            .map(|n| (Some(n.node.as_str()), &n.stats))
            .collect()
    }
}

pub fn table(r: &Response, with_outcomes: bool) -> String {
    let mut out = String::new();
    let nodes = sources(r);
    let width = nodes
        .iter()
        .filter_map(|(n, _)| n.map(str::len))
        .max()
        .map(|w| w.max(4));
    let node = |n: Option<&str>| node_column(width, n);
    for n in &r.per_node {
        if !n.error.is_empty() {
            let _ = writeln!(out, "{}: {}", n.node, n.error);
        }
    }
    if !r.per_node.is_empty() && r.per_node.iter().any(|n| !n.error.is_empty()) {
        let _ = writeln!(out);
    }
    if with_outcomes {
        out.push_str(&outcomes(r));
        let _ = writeln!(out);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fills: Vec<(Option<&str>, &TableFills)> = nodes
            .iter()
            .filter_map(|(name, stats)| Some((*name, stats.tables.as_ref()?)))
            .collect();
        if !fills.is_empty() {
            out.push_str(&tables(&fills, width, now_ms));
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
        "{}{:<20} {:<8} {:>3} {:>12} {:>12} {:>9} {:>9}  STATE",
        node(None),
        "CHAIN",
        "DIR",
        "HOP",
        "IN",
        "OUT",
        "IN/s",
        "OUT/s"
    );
    // In a cluster, last: each hop on every node's counters together, as judged from them.
    let mut hop_sources = nodes.clone();
    if r.per_node.len() > 1 {
        hop_sources.push((Some("all"), r));
    }
    for (name, stats) in &hop_sources {
        for h in &stats.hops {
            let _ = writeln!(
                out,
                "{}{:<20} {:<8} {:>3} {:>12} {:>12} {:>9.1} {:>9.1}  {}",
                node(*name),
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
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{}{:<20} {:>12} {:>12} {:>9} {:>9}  STATE",
        node(None),
        "PORT PAIR (SF)",
        "IN",
        "OUT",
        "IN/s",
        "OUT/s"
    );
    for (name, stats) in &nodes {
        for p in &stats.pairs {
            let _ = writeln!(
                out,
                "{}{:<20} {:>12} {:>12} {:>9.1} {:>9.1}  {}",
                node(*name),
                p.pair,
                p.into_packets,
                p.from_packets,
                p.into_pps,
                p.from_pps,
                pair_state(p)
            );
        }
    }
    out
}

/// A pair's state from its counters, and when its health check took it out of its group:
/// for how long and why.
fn pair_state(p: &PairHealth) -> String {
    let state = p.state.as_str();
    match p.check.as_ref().filter(|c| c.state == Probed::Down) {
        Some(c) => format!(
            "{state}, DOWN for {} s (out of its group: {})",
            c.since.elapsed().map_or(0, |d| d.as_secs()),
            c.reason
        ),
        None => state.to_string(),
    }
}

/// The datapath outcomes: one column of counts, or in a cluster one per node and their total.
fn outcomes(r: &Response) -> String {
    let mut out = String::new();
    // As wide as the longest outcome name, so that every count lines up.
    let width = r
        .counters
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(20);
    if r.per_node.is_empty() {
        let _ = writeln!(out, "{:<width$} {:>12}", "OUTCOME", "PACKETS");
        for (name, value) in &r.counters {
            let _ = writeln!(out, "{name:<width$} {value:>12}");
        }
        return out;
    }
    let _ = write!(out, "{:<width$}", "OUTCOME");
    for n in &r.per_node {
        let _ = write!(out, " {:>12}", n.node);
    }
    let _ = writeln!(out, " {:>12}", "TOTAL");
    for (name, total) in &r.counters {
        let _ = write!(out, "{name:<width$}");
        for n in &r.per_node {
            match n.stats.counters.iter().find(|(c, _)| c == name) {
                Some((_, value)) => {
                    let _ = write!(out, " {value:>12}");
                }
                None => {
                    let _ = write!(out, " {:>12}", "-");
                }
            }
        }
        let _ = writeln!(out, " {total:>12}");
    }
    out
}

/// The NODE column of a row (its title for `None`), in a cluster (`width` of the longest node
/// name); nothing on a single node.
fn node_column(width: Option<usize>, node: Option<&str>) -> String {
    match width {
        Some(w) => format!("{:<w$} ", node.unwrap_or("NODE")),
        None => String::new(),
    }
}

/// The fill level of each table (of each node, in a cluster), a plain warning on those that
/// are full, and when they were counted.
fn tables(fills: &[(Option<&str>, &TableFills)], width: Option<usize>, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}{:<20} {:>12} {:>12} {:>5}",
        node_column(width, None),
        "TABLE",
        "ENTRIES",
        "CAPACITY",
        "FILL"
    );
    let mut counted = Vec::new();
    for (node, fills) in fills {
        write_fills(&mut out, &node_column(width, *node), fills);
        let ago = now_ms.saturating_sub(fills.counted_at_ms) / 1000;
        let took = fills.took_us as f64 / 1e3;
        let whose = node.map(|n| format!("{n}: ")).unwrap_or_default();
        counted.push(format!("{whose}counted {ago} s ago, in {took:.1} ms"));
    }
    let _ = writeln!(out, "({})", counted.join("; "));
    out
}

fn write_fills(out: &mut String, node: &str, fills: &TableFills) {
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
            "{node}{:<20} {entries:>12} {:>12} {:>4}%",
            t.table, t.capacity, percent
        );
        if t.full {
            let _ = write!(out, "  full: {}, raise {}", t.when_full, t.flag);
        }
        let _ = writeln!(out);
    }
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
        let text = tables(&[(None, &fills)], None, 13_400);
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
    fn in_a_cluster_outcomes_have_a_column_per_node_and_a_total() {
        use sfc_api::protocol::NodeStats;
        let node = |name: &str, steered: u64| NodeStats {
            node: name.into(),
            error: String::new(),
            stats: Response {
                ok: true,
                counters: vec![("steered".into(), steered)],
                ..Default::default()
            },
        };
        let r = Response {
            ok: true,
            counters: vec![("steered".into(), 12)],
            per_node: vec![
                node("n1", 5),
                node("n2", 7),
                NodeStats {
                    node: "n3".into(),
                    error: "no answer within 3 s".into(),
                    stats: Response::default(),
                },
            ],
            ..Default::default()
        };
        let text = table(&r, true);
        println!("{text}");
        let words = |prefix: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(words("OUTCOME"), ["OUTCOME", "n1", "n2", "n3", "TOTAL"]);
        assert_eq!(words("steered"), ["steered", "5", "7", "-", "12"]);
        assert!(text.contains("n3: no answer within 3 s"), "{text}");
        assert!(words("NODE").starts_with(&["NODE".to_string(), "CHAIN".to_string()]));
        let json = json(&r);
        assert_eq!(json["nodes"][1]["counters"]["steered"], 7);
        assert_eq!(json["nodes"][2]["error"], "no answer within 3 s");
    }

    #[test]
    fn in_a_cluster_table_fills_have_a_node_column() {
        use sfc_api::protocol::NodeStats;
        let node = |name: &str, entries: u64, counted_at_ms: u64| NodeStats {
            node: name.into(),
            error: String::new(),
            stats: Response {
                ok: true,
                tables: Some(TableFills {
                    counted_at_ms,
                    took_us: 1_000,
                    tables: vec![fill("flows4", entries, 65_536, false, true)],
                }),
                ..Default::default()
            },
        };
        let r = Response {
            ok: true,
            per_node: vec![node("n1", 12, 9_000), node("n2", 40, 10_000)],
            ..Default::default()
        };
        let text = tables(
            &[
                (Some("n1"), r.per_node[0].stats.tables.as_ref().unwrap()),
                (Some("n2"), r.per_node[1].stats.tables.as_ref().unwrap()),
            ],
            Some(4),
            12_000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NODE TABLE                     ENTRIES     CAPACITY  FILL",
                "n1   flows4                         12        65536    0%",
                "n2   flows4                         40        65536    0%",
                "(n1: counted 3 s ago, in 1.0 ms; n2: counted 2 s ago, in 1.0 ms)",
            ]
        );
        // And so in the whole table, once.
        assert_eq!(table(&r, true).matches("TABLE").count(), 1);
    }

    #[test]
    fn stats_from_a_daemon_that_sends_no_tables_still_show() {
        let text = table(&Response::default(), true);
        assert!(!text.contains("TABLE"), "{text}");
        assert!(text.contains("OUTCOME"), "{text}");
    }
}
