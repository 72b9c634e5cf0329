//! How `sfcctl stats` shows counters: a table (outcomes, per hop, per SF, with rates and
//! health) or one JSON document.

use std::{collections::BTreeMap, fmt::Write};

use sfc_api::protocol::Response;

pub fn json(r: &Response) -> serde_json::Value {
    serde_json::json!({
        "counters": r.counters.iter().cloned().collect::<BTreeMap<_, _>>(),
        "chains": r.chains,
        "hops": r.hops,
        "pairs": r.pairs,
        "generations": r.generations,
    })
}

pub fn table(r: &Response, with_outcomes: bool) -> String {
    let mut out = String::new();
    if with_outcomes {
        let _ = writeln!(out, "{:<20} {:>12}", "OUTCOME", "PACKETS");
        for (name, value) in &r.counters {
            let _ = writeln!(out, "{name:<20} {value:>12}");
        }
        let _ = writeln!(out);
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
