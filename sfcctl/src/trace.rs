//! `sfcctl trace`: asks the daemon for a trace and prints its records as they come.

use std::{io::BufRead, path::Path, time::Duration};

use sfc_api::{
    protocol::Request,
    trace::{TraceRecord, TraceSpec},
};

use crate::client;

/// How sfcctl prints a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The client side: asks the daemon at `socket` for a trace and prints records as they come,
/// until `count` records or `duration` (whichever first; neither: until interrupted).
pub fn follow(
    socket: &Path,
    spec: TraceSpec,
    count: Option<u64>,
    duration: Option<Duration>,
    format: Format,
) -> Result<(), String> {
    spec.filter().map_err(|e| e.to_string())?;
    let request = Request::Trace {
        spec,
        lease_seconds: duration.map(|d| d.as_secs().saturating_add(1)),
    };
    let mut reader = client::send(socket, &request)?;
    let hello = client::answer(&mut reader)?;
    if !hello.ok {
        return Err(hello.message);
    }
    // In a cluster: on which nodes it runs (and why not on others); records name their node.
    let cluster = hello.message != "tracing";
    if cluster {
        eprintln!("{}", hello.message);
    }
    let stream = reader.get_ref().try_clone().map_err(|e| e.to_string())?;
    // Records come when packets do: no timeout but the caller's.
    let _ = stream.set_read_timeout(None);
    let deadline = duration.map(|d| std::time::Instant::now() + d);
    let mut line = String::new();
    let node = |name: Option<&str>| {
        if cluster {
            format!("{:<8} ", name.unwrap_or("-"))
        } else {
            String::new()
        }
    };
    if format == Format::Table {
        println!(
            "{}{:<15} {:<10} {:<10} {:<10} {:>3} {:<7} {:<15} {:<16} FLOW",
            if cluster { "NODE     " } else { "" },
            "TIME (UTC)",
            "ID",
            "INTERFACE",
            "CHAIN",
            "HOP",
            "DIR",
            "VERDICT",
            "TARGET"
        );
    }
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = stream.set_read_timeout(Some(left));
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(
                "sfc-daemon ended the trace (stopped with `sfcctl trace --stop`, or its lease ran out)".into(),
            ),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(format!("reading from sfc-daemon: {e}")),
        }
        let r: TraceRecord = serde_json::from_str(&line)
            .map_err(|e| format!("unexpected trace record from sfc-daemon: {e}"))?;
        match format {
            Format::Json => println!("{}", line.trim_end()),
            Format::Table => println!(
                "{}{:<15} {:<10} {:<10} {:<10} {:>3} {:<7} {:<15} {:<16} {}",
                node(r.node.as_deref()),
                clock_text(r.time_ns),
                format!("{:08x}", r.id),
                r.interface,
                r.chain.as_deref().unwrap_or("-"),
                r.hop.map(|h| h.to_string()).unwrap_or("-".into()),
                r.direction.as_deref().unwrap_or("-"),
                verdict_text(&r),
                r.target.as_deref().unwrap_or("-"),
                r.flow
            ),
        }
        printed += 1;
    }
    Ok(())
}

/// The outcome, with `+tap` when a tap SF got a copy and `+skip` when hops failing open were
/// skipped on the way.
fn verdict_text(r: &TraceRecord) -> String {
    let tap = if r.tapped { "+tap" } else { "" };
    let skip = if r.skipped { "+skip" } else { "" };
    format!("{}{tap}{skip}", r.verdict)
}

/// HH:MM:SS.ffffff of a Unix time in nanoseconds (UTC).
fn clock_text(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ns / 1000 % 1_000_000
    )
}
