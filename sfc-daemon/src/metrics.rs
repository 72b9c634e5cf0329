//! A small HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//! It reads the pinned per-CPU counters itself, so it never waits for the agent's thread.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sfc_common::stat;
use tracing::warn;

use crate::dataplane::{open_stats, read_stats};

pub fn spawn(addr: SocketAddr, bpffs: PathBuf, ready: Arc<AtomicBool>) -> std::io::Result<()> {
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
                    "/metrics" => match render(&bpffs) {
                        Ok(text) => ("200 OK", text),
                        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                    },
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

fn render(bpffs: &std::path::Path) -> Result<String, crate::dataplane::DataplaneError> {
    let values = read_stats(&open_stats(bpffs)?)?;
    let mut out = String::from(
        "# HELP sfc_datapath_packets_total Packets seen by the steering program, by outcome.\n# TYPE sfc_datapath_packets_total counter\n",
    );
    for (name, value) in stat::NAMES.iter().zip(values) {
        out.push_str(&format!(
            "sfc_datapath_packets_total{{outcome=\"{name}\"}} {value}\n"
        ));
    }
    Ok(out)
}
