//! Results: rounds' samples reduced to median/min/max, written as JSON, a Markdown table and a
//! packet-rate plot (matplotlib, Debian's python3-matplotlib, installed by `cargo xtask setup`).

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{across, classifier};

/// A table's metrics, in column order: (key, column title, scale from the sample's unit to the
/// shown one).
type Metrics = [(&'static str, &'static str, f64)];

/// Packet rates: 64-byte UDP from sockets, from a packet socket in each flow mix, as XDP frames.
const RATES: &Metrics = &[
    ("udp64_pps", "UDP sockets, 1 flow/sender", 1e-6),
    ("flows_one_pps", "1 flow/sender", 1e-6),
    ("flows_10k_pps", "10 000 flows", 1e-6),
    ("flows_new_pps", "a new flow every packet", 1e-6),
    ("udp64_xdp_pps", "XDP frames, 1 flow", 1e-6),
];

/// Everything else.
const OTHERS: &Metrics = &[
    ("tcp_gbps", "TCP (Gbit/s)", 1.0),
    ("tcp_conn_per_s", "TCP connections/s", 1.0),
    ("rtt_p50_us", "RTT p50 (µs)", 1.0),
    ("rtt_p99_us", "RTT p99 (µs)", 1.0),
    ("apply_ms", "apply (ms)", 1.0),
    ("first_packet_ms", "first packet (ms)", 1.0),
    ("update_ms", "update (ms)", 1.0),
    ("update_first_packet_ms", "update, first packet (ms)", 1.0),
];

/// Chains across two nodes, beside the same chain on one node.
const ACROSS: &Metrics = &[
    ("udp64_pps", "64-byte UDP, 1 flow/sender (Mpps)", 1e-6),
    (
        "flows_new_pps",
        "64-byte, a new flow every packet (Mpps)",
        1e-6,
    ),
    ("tcp_gbps", "TCP (Gbit/s)", 1.0),
    ("rtt_p50_us", "RTT p50 (µs)", 1.0),
    ("rtt_p99_us", "RTT p99 (µs)", 1.0),
    ("apply_ms", "apply (ms)", 1.0),
    ("first_packet_ms", "first packet (ms)", 1.0),
];

fn on_two_nodes(system: &str) -> bool {
    across::System::from_name(system).is_some()
}

#[derive(Default)]
pub struct Report {
    /// (system order, system, hops, metric) -> one value per round.
    samples: BTreeMap<(usize, &'static str, usize, &'static str), Vec<f64>>,
    pub classifier: Vec<classifier::Row>,
    pub skipped: Vec<(String, String)>,
    pub errors: Vec<String>,
}

pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

fn stat(values: &[f64]) -> Stat {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v[0],
        max: v[n - 1],
        rounds: n,
    }
}

impl Report {
    pub fn add(
        &mut self,
        order: usize,
        system: &'static str,
        hops: usize,
        metric: &'static str,
        value: f64,
    ) {
        self.samples
            .entry((order, system, hops, metric))
            .or_default()
            .push(value);
    }

    fn rows(&self) -> Vec<(&'static str, usize, &'static str, Stat)> {
        self.samples
            .iter()
            .map(|((_, system, hops, metric), v)| (*system, *hops, *metric, stat(v)))
            .collect()
    }

    pub fn json(&self, config: Value) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(system, hops, metric, s)| {
                json!({"system": system, "hops": hops, "metric": metric,
                       "median": s.median, "min": s.min, "max": s.max, "rounds": s.rounds})
            })
            .collect();
        let classifier: Vec<Value> = self
            .classifier
            .iter()
            .map(|r| {
                json!({"mix": r.mix, "rules": r.rules, "case": r.case, "ns": r.ns,
                            "baseline_ns": r.baseline_ns, "apply_ms": r.apply_ms})
            })
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|(s, why)| json!({"system": s, "reason": why}))
            .collect();
        json!({"machine": machine(), "config": config, "rows": rows,
               "classifier": classifier, "skipped": skipped, "errors": self.errors})
    }

    pub fn markdown(&self, json: &Value) -> String {
        let m = &json["machine"];
        let mut md = format!(
            "Machine: {}, {} cores, kernel {}, {} (load average {} at the end). Median (min–max) \
             of {} interleaved rounds; plain = no chain (hops 0).\n\n",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["kernel"].as_str().unwrap_or("?"),
            m["date"].as_str().unwrap_or("?"),
            m["loadavg"].as_str().unwrap_or("?"),
            json["config"]["rounds"]
        );
        md += "64-byte UDP packets received per second at the destination (Mpps). The flow mixes are \
               frames from a packet socket per sender, whose UDP ports say the flow:\n\n";
        let one_node = |system: &str, _: usize| !on_two_nodes(system);
        md += &self.table(RATES, one_node);
        md += "\nTCP, latency and the time a chain takes to apply:\n\n";
        md += &self.table(OTHERS, one_node);
        if self
            .samples
            .keys()
            .any(|(_, system, _, _)| on_two_nodes(system))
        {
            md += &self.across(json);
        }
        if !self.classifier.is_empty() {
            md += "\nClassifier cost per packet (BPF_PROG_TEST_RUN, median of 3 runs; a new flow: the mean over 2000 flows never seen), beside one hash lookup measured the same way:\n\n";
            md += "| classifiers | mix | case | sfc-tc (ns) | one hash lookup (ns) | apply (ms) |\n|---:|---|---|---:|---:|---:|\n";
            for r in &self.classifier {
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.rules,
                    r.mix,
                    r.case,
                    fmt(r.ns),
                    fmt(r.baseline_ns),
                    fmt(r.apply_ms)
                );
            }
        }
        if !self.skipped.is_empty() {
            md += "\nSkipped:\n\n";
            for (system, why) in &self.skipped {
                md += &format!("- {system}: {why}\n");
            }
        }
        if !self.errors.is_empty() {
            md += "\nErrors:\n\n";
            for e in &self.errors {
                md += &format!("- {}\n", e.replace('\n', " "));
            }
        }
        md
    }

    /// The section on chains across two nodes: their figures beside the one-node chain's, and
    /// this project's against the best of the peers at each chain length.
    fn across(&self, json: &Value) -> String {
        let hops: Vec<usize> = json["config"]["across_hops"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_u64())
                    .map(|h| h as usize)
                    .collect()
            })
            .unwrap_or_default();
        let mut md =
            "\nChains across two nodes: the SFs alternate between n1 and n2 (the source is on \
                      n1, the destination on n2), beside the same chain on one node (sfc-tc):\n\n"
                .to_string();
        md += &self.table(ACROSS, |system, h| {
            on_two_nodes(system) || (system == "sfc-tc" && hops.contains(&h))
        });
        let peers: Vec<&str> = across::PEERS.iter().map(|s| s.name()).collect();
        for ours in [across::System::Sfc, across::System::SfcXdp].map(|s| s.name()) {
            if hops
                .iter()
                .all(|&h| self.median(ours, h, ACROSS[0].0).is_none())
            {
                continue;
            }
            md += &self.against_peers(ours, &peers, &hops);
        }
        md
    }

    /// `ours` against the best of `peers` at each chain length in `hops`.
    fn against_peers(&self, ours: &str, peers: &[&str], hops: &[usize]) -> String {
        let mut md = format!(
            "\n{ours} against the best peer ({}) at each chain length (medians; for RTT the \
             peer's over ours, so above 1 is faster too):\n\n| hops |",
            peers.join(", ")
        );
        let compared = [ACROSS[0], ACROSS[1], ACROSS[2], ACROSS[3]];
        for (_, title, _) in &compared {
            md += &format!(" {title} |");
        }
        md += "\n|---:|";
        md += &"---|".repeat(compared.len());
        md += "\n";
        for &h in hops {
            md += &format!("| {h} |");
            for (metric, _, _) in &compared {
                let lower_is_better = metric.starts_with("rtt");
                let best = peers
                    .iter()
                    .filter_map(|p| Some((*p, self.median(p, h, metric)?)))
                    .reduce(|a, b| if (b.1 < a.1) == lower_is_better { b } else { a });
                match (self.median(ours, h, metric), best) {
                    (Some(o), Some((peer, p))) if o > 0.0 && p > 0.0 => {
                        let ratio = if lower_is_better { p / o } else { o / p };
                        md += &format!(" ×{} ({peer}) |", fmt(ratio));
                    }
                    _ => md += " – |",
                }
            }
            md += "\n";
        }
        md
    }

    /// The median of one system's metric at one chain length, if it was measured.
    fn median(&self, system: &str, hops: usize, metric: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|((_, s, h, m), _)| *s == system && *h == hops && *m == metric)
            .map(|(_, v)| stat(v).median)
    }

    /// One row per system and chain length that `keep`s, one column per metric: median
    /// (min–max).
    fn table(&self, metrics: &Metrics, keep: impl Fn(&str, usize) -> bool) -> String {
        let mut md = "| system | hops |".to_string();
        for (_, title, _) in metrics {
            md += &format!(" {title} |");
        }
        md += "\n|---|---:|";
        md += &"---:|".repeat(metrics.len());
        md += "\n";
        let mut cells: BTreeMap<(usize, &str, usize), BTreeMap<&str, Stat>> = BTreeMap::new();
        for ((order, system, hops, metric), v) in &self.samples {
            if !keep(system, *hops) {
                continue;
            }
            cells
                .entry((*order, system, *hops))
                .or_default()
                .insert(metric, stat(v));
        }
        for ((_, system, hops), stats) in &cells {
            md += &format!("| {system} | {hops} |");
            for (key, _, scale) in metrics {
                match stats.get(key) {
                    Some(s) => {
                        md += &format!(
                            " {} ({}–{}) |",
                            fmt(s.median * scale),
                            fmt(s.min * scale),
                            fmt(s.max * scale)
                        )
                    }
                    None => md += " – |",
                }
            }
            md += "\n";
        }
        md
    }

    /// Writes latest.json, latest.md and packet-rate.png into `dir`.
    pub fn write(&self, dir: &Path, config: Value) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = self.json(config);
        let json_path = dir.join("latest.json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
        std::fs::write(dir.join("latest.md"), self.markdown(&json))?;
        plot(&json_path, &dir.join("packet-rate.png"))
    }
}

/// Three significant digits, without scientific notation.
fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn machine() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // The machine may be shared: the load when the results were written says how quiet it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({"kernel": kernel.trim(), "cpu": cpu, "cores": cores, "date": date,
           "loadavg": load.join(" ")})
}

/// Debian's interpreter on purpose: python3-matplotlib is installed for it, whatever else is
/// first on PATH.
const PYTHON: &str = "/usr/bin/python3";

const PLOT: &str = r#"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = json.load(open(sys.argv[1]))
m = data["machine"]
# Chains across two nodes have their own table.
data["rows"] = [r for r in data["rows"] if r["system"] not in data["config"].get("across_systems", [])]
panels = [("flows_one_pps", "one flow per sender"), ("flows_10k_pps", "10 000 recurring flows"),
          ("flows_new_pps", "a new flow on every packet"), ("udp64_xdp_pps", "as XDP frames, one flow")]
fig, axes = plt.subplots(2, 2, figsize=(13, 10), dpi=100)
for ax, (metric, source) in zip(axes.flat, panels):
    rows = [r for r in data["rows"] if r["metric"] == metric]
    systems = []
    for r in rows:
        if r["system"] not in systems:
            systems.append(r["system"])
    for s in systems:
        pts = sorted((r["hops"], r["median"] / 1e6, r["min"] / 1e6, r["max"] / 1e6) for r in rows if r["system"] == s)
        if all(h == 0 for h, *_ in pts):
            ax.axhline(pts[0][1], linestyle="--", color="grey", label=f"{s} (no chain)")
            continue
        hops = [p[0] for p in pts]
        med = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(hops, med, yerr=err, marker="o", capsize=3, label=s)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("chain length (hops)")
    ax.set_ylabel("received 64-byte UDP packets (Mpps)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"64-byte packets {source}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"Packet rate through the chain ({m['cores']} cores, kernel {m['kernel']})", fontsize=11)
fig.tight_layout()
fig.savefig(sys.argv[2])
"#;

fn plot(json: &Path, png: &Path) -> Result<()> {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(PLOT)
        .arg(json)
        .arg(png)
        .output()
        .with_context(|| {
            format!("running {PYTHON} (python3-matplotlib; `cargo xtask setup` installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "plotting {} failed: {}",
            png.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
