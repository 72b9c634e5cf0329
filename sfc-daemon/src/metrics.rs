//! A small HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//! It renders the snapshot the agent publishes every second, so a scrape never waits for the
//! agent's thread and never touches the kernel. Labels are of low cardinality only (chain,
//! direction, hop, port_pair, reason): never per flow.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::warn;

use crate::{
    health::State,
    observe::{Shared, Snapshot},
};

pub fn spawn(addr: SocketAddr, observed: Shared, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/healthz" => ("200 OK", "ok\n".to_string()),
                    "/readyz" if ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into()),
                    "/readyz" => ("503 Service Unavailable", "starting\n".into()),
                    "/metrics" => (
                        "200 OK",
                        render(&observed.lock().unwrap_or_else(|e| e.into_inner())),
                    ),
                    _ => ("404 Not Found", "try /metrics, /healthz or /readyz\n".into()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = (&stream).write_all(response.as_bytes()) {
                    warn!(error = %e, "metrics response");
                }
            }
        })?;
    Ok(())
}

/// Drop and pass-through reasons among the datapath outcomes.
const DROPS: [&str; 3] = ["no_member", "redirect_failed", "tap_failed"];
const PASSES: [&str; 4] = ["no_match", "not_ip", "malformed", "fragment"];

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.0
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        if labels.is_empty() {
            self.0.push_str(&format!("{name} {value}\n"));
        } else {
            self.0
                .push_str(&format!("{name}{{{}}} {value}\n", labels.join(",")));
        }
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut out = Out(String::new());
    out.family(
        "sfc_datapath_packets_total",
        "counter",
        "Packets seen by the steering program, by outcome.",
    );
    for (name, value) in &s.outcomes {
        out.sample("sfc_datapath_packets_total", &[("outcome", name)], value);
    }
    let outcome = |n: &str| {
        s.outcomes
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    out.family(
        "sfc_dropped_packets_total",
        "counter",
        "Packets the datapath dropped (or failed to copy), by reason.",
    );
    for reason in DROPS {
        out.sample(
            "sfc_dropped_packets_total",
            &[("reason", reason)],
            outcome(reason),
        );
    }
    out.family(
        "sfc_passed_packets_total",
        "counter",
        "Packets passed on untouched without steering, by reason.",
    );
    for reason in PASSES {
        out.sample(
            "sfc_passed_packets_total",
            &[("reason", reason)],
            outcome(reason),
        );
    }

    // Per chain: entering and leaving, summed over classifiers and generations.
    let mut ends: std::collections::BTreeMap<(String, String), [u64; 4]> = Default::default();
    for row in &s.chains {
        let l = &row.label;
        let key = (l.chain.clone(), format!("{:?}", l.direction).to_lowercase());
        let e = ends.entry(key).or_default();
        if l.position == 0 {
            e[0] += row.packets;
            e[1] += row.bytes;
        }
        if l.position == l.hops {
            e[2] += row.packets;
            e[3] += row.bytes;
        }
    }
    for (name, i, help) in [
        (
            "sfc_chain_entered_packets_total",
            0,
            "Packets that entered a chain.",
        ),
        (
            "sfc_chain_entered_bytes_total",
            1,
            "Bytes that entered a chain.",
        ),
        (
            "sfc_chain_left_packets_total",
            2,
            "Packets that left a chain after its last hop.",
        ),
        (
            "sfc_chain_left_bytes_total",
            3,
            "Bytes that left a chain after its last hop.",
        ),
    ] {
        out.family(name, "counter", help);
        for ((chain, direction), v) in &ends {
            out.sample(name, &[("chain", chain), ("direction", direction)], v[i]);
        }
    }

    // Per hop of a chain: sent into it, came back out of it, black hole or not.
    let hop_labels = |h: &crate::health::HopHealth| {
        (
            h.chain.clone(),
            format!("{:?}", h.direction).to_lowercase(),
            h.hop.to_string(),
        )
    };
    for (name, kind, help) in [
        (
            "sfc_hop_into_packets_total",
            "counter",
            "Packets a chain sent into a hop.",
        ),
        (
            "sfc_hop_out_packets_total",
            "counter",
            "Packets that came back out of a hop, on their chain.",
        ),
        (
            "sfc_hop_black_hole",
            "gauge",
            "1 when a hop takes packets in and lets (almost) none out.",
        ),
    ] {
        out.family(name, kind, help);
        for h in &s.hops {
            let (chain, direction, hop) = hop_labels(h);
            let labels = [
                ("chain", chain.as_str()),
                ("direction", &direction),
                ("hop", &hop),
            ];
            match name {
                "sfc_hop_into_packets_total" => out.sample(name, &labels, h.into_packets),
                "sfc_hop_out_packets_total" => out.sample(name, &labels, h.from_packets),
                _ => out.sample(name, &labels, (h.state == State::BlackHole) as u8),
            }
        }
    }

    // Per SF (port pair): into and out of it, black hole or not.
    for (name, kind, help) in [
        (
            "sfc_sf_into_packets_total",
            "counter",
            "Packets sent into an SF (copies for a tap).",
        ),
        (
            "sfc_sf_into_bytes_total",
            "counter",
            "Bytes sent into an SF.",
        ),
        (
            "sfc_sf_out_packets_total",
            "counter",
            "Packets that came back out of an SF.",
        ),
        (
            "sfc_sf_out_bytes_total",
            "counter",
            "Bytes that came back out of an SF.",
        ),
        (
            "sfc_sf_black_hole",
            "gauge",
            "1 when an SF takes packets in and lets (almost) none out.",
        ),
    ] {
        out.family(name, kind, help);
        for p in &s.pairs {
            let labels = [("port_pair", p.pair.as_str())];
            match name {
                "sfc_sf_into_packets_total" => out.sample(name, &labels, p.into_packets),
                "sfc_sf_into_bytes_total" => out.sample(name, &labels, p.into_bytes),
                "sfc_sf_out_packets_total" => out.sample(name, &labels, p.from_packets),
                "sfc_sf_out_bytes_total" => out.sample(name, &labels, p.from_bytes),
                _ => out.sample(name, &labels, (p.state == State::BlackHole) as u8),
            }
        }
    }

    out.family(
        "sfc_apply_duration_seconds",
        "summary",
        "Time from an apply request to the dataplane flip, in the agent.",
    );
    out.sample("sfc_apply_duration_seconds_sum", &[], s.applies.seconds_sum);
    out.sample("sfc_apply_duration_seconds_count", &[], s.applies.count);
    out.family(
        "sfc_apply_last_duration_seconds",
        "gauge",
        "Duration of the last apply.",
    );
    out.sample(
        "sfc_apply_last_duration_seconds",
        &[],
        s.applies.last_seconds,
    );
    out.family(
        "sfc_dataplane_epoch",
        "gauge",
        "Updates made to the dataplane (each one flips the generation).",
    );
    out.sample("sfc_dataplane_epoch", &[], s.epoch);
    out.0
}
