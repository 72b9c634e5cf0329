//! The agent's HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the agent loop is
//! still running) and `/readyz` (the dataplane is applied).
//!
//! `/metrics` encodes the snapshot the agent publishes every second, so a scrape never waits
//! for the agent and never touches the kernel. Labels are of low cardinality only (chain,
//! direction, hop, port_pair, reason): never per flow.
//!
//! Any local user can connect, so every connection is bounded in memory (`max_buf_size`), in
//! time (`header_read_timeout`, `connection_lifetime`) and in number (`max_connections`).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    convert::Infallible,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
        MetricType,
    },
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore, time::timeout};
use tracing::warn;

use sfc_api::health::{HopHealth, PairHealth, State};
use sfc_config::compile::Direction;

use crate::observe::snapshot::{ProbedMember, Shared};

/// `/healthz` fails when the agent loop has not beaten for longer than this. Generous: one
/// apply of 100 000 classifiers can legitimately take a few seconds.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(30);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Apply durations from 1 ms to 30 s.
const APPLY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Drop and pass-through reasons among the datapath outcomes.
const DROPS: [&str; 6] = [
    "no_member",
    "target_down",
    "redirect_failed",
    "tap_failed",
    "path_unknown",
    "tunnel_too_big",
];
const PASSES: [&str; 2] = ["no_match", "not_ip"];
/// Why a tunnel packet from another node was not taken (`tunnel_rejected_*`).
const TUNNEL_REJECTED: [&str; 5] = ["source", "malformed", "index", "revision", "target"];
/// Why a packet could not be parsed: dropped, or passed where the classifiers ask for it
/// (`unparsable_passed`); both sums appear under reason "unparsable".
const UNPARSABLE: [&str; 4] = [
    "malformed",
    "unparsable_vlan",
    "unparsable_ipv6_ext",
    "fragment_unknown",
];

/// What a client can make the endpoint hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once. At the cap the accept loop waits: new connections queue
    /// in the kernel's listen backlog (their handshake completes, their request waits in the
    /// socket) and are taken in order as slots free up, which `header_read_timeout`
    /// guarantees within seconds for idle or garbage connections. So a scrape is delayed,
    /// never refused; refusing at the cap would fail it at once instead. The cap protects the
    /// daemon's file descriptors (soft limit often 1024, also needed for BPF maps and
    /// netlink) and memory (a connection's read buffer stops at `max_buf_size`; an idle or
    /// garbage connection measured ~12 KiB in all).
    pub max_connections: usize,
    /// From accept to the end of the request head. A deadline, not a per-read timeout, so a
    /// client trickling one byte a second is cut too.
    pub header_read_timeout: Duration,
    /// Whole connection, response included: bounds a client that never reads its answer.
    pub connection_lifetime: Duration,
    /// A request head that does not fit is answered 431 and the connection closed.
    pub max_buf_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(15),
            max_buf_size: 16 * 1024,
        }
    }
}

/// What `/healthz` and `/readyz` report.
#[derive(Debug)]
pub struct Status {
    start: Instant,
    /// Milliseconds from `start` (monotonic) to the agent loop's last beat.
    heartbeat_ms: AtomicU64,
    not_ready: Mutex<Option<String>>,
    liveness_limit: Duration,
}

impl Default for Status {
    fn default() -> Self {
        Self::new()
    }
}

impl Status {
    /// Alive (as if it had just beaten), not ready: "starting".
    pub fn new() -> Self {
        Self::with_liveness_limit(LIVENESS_LIMIT)
    }

    pub fn with_liveness_limit(liveness_limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            not_ready: Mutex::new(Some("starting".into())),
            liveness_limit,
        }
    }

    /// The agent loop calls this on every iteration.
    pub fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// `None`: ready; `Some(reason)`: not ready, and why (shown by `/readyz`).
    pub fn set_ready(&self, not_ready: Option<String>) {
        *self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = not_ready;
    }

    pub fn heartbeat_age(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// `Err`: why the agent is not alive.
    pub fn alive(&self) -> Result<(), String> {
        let age = self.heartbeat_age();
        if age <= self.liveness_limit {
            Ok(())
        } else {
            Err(format!(
                "agent loop has not run for {:.1} s",
                age.as_secs_f64()
            ))
        }
    }

    /// `Err`: why the agent is not ready.
    pub fn ready(&self) -> Result<(), String> {
        match &*self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    apply_duration: Histogram,
    apply_last: Gauge<f64, AtomicU64>,
    apply_refused: Family<[(&'static str, &'static str); 1], Counter>,
    status: Arc<Status>,
}

impl Metrics {
    /// In a cluster, every metric is labelled with this node's name (`node`).
    pub fn new(observed: Shared, status: Arc<Status>, node: Option<&str>) -> Self {
        let apply_duration = Histogram::new(APPLY_BUCKETS);
        let apply_last = Gauge::<f64, AtomicU64>::default();
        let labels = node.map(|n| (Cow::Borrowed("node"), Cow::Owned(n.to_string())));
        let mut registry = Registry::with_labels(labels.into_iter());
        // The registry appends a full stop to these help texts.
        registry.register(
            "sfc_apply_duration_seconds",
            "Time from an apply request to the dataplane flip, in the agent",
            apply_duration.clone(),
        );
        registry.register(
            "sfc_apply_last_duration_seconds",
            "Duration of the last apply",
            apply_last.clone(),
        );
        let apply_refused = Family::default();
        // Both series from the start, at 0: a rate over them is 0, not missing.
        for reason in ["invalid", "failed"] {
            let _ = apply_refused.get_or_create(&[("reason", reason)]);
        }
        registry.register(
            "sfc_apply_refused",
            "Applies and deletes that changed nothing, by reason: invalid (the errors name file, object and field) or failed (the store or the kernel refused)",
            apply_refused.clone(),
        );
        registry.register_collector(Box::new(Observed {
            observed,
            status: status.clone(),
        }));
        Self {
            registry,
            apply_duration,
            apply_last,
            apply_refused,
            status,
        }
    }

    /// The agent calls this after every apply that reached the dataplane.
    pub fn observe_apply(&self, seconds: f64) {
        self.apply_duration.observe(seconds);
        self.apply_last.set(seconds);
    }

    /// The agent calls this for every apply or delete that changed nothing (`reason`: invalid
    /// or failed).
    pub fn count_refused(&self, reason: &'static str) {
        self.apply_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// The OpenMetrics text, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::new();
        text::encode(&mut out, &self.registry).expect("encoding into a String does not fail");
        out
    }
}

/// Encodes the agent's latest snapshot on each scrape: its values are absolute counts read
/// from the kernel, not events to count here.
#[derive(Debug)]
struct Observed {
    observed: Shared,
    status: Arc<Status>,
}

impl Collector for Observed {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        // Hold the lock for the copy only: the agent publishes into it every second.
        let s = self
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let enc = &mut enc;
        let outcome = |n: &str| {
            s.outcomes
                .iter()
                .find(|(k, _)| k == n)
                .map_or(0, |(_, v)| *v)
        };
        let unparsable: u64 = UNPARSABLE.iter().map(|r| outcome(r)).sum();
        let unparsable_passed = outcome("unparsable_passed");
        family(
            enc,
            "sfc_datapath_packets_total",
            "Packets seen by the steering program, by outcome.",
            Counter,
            s.outcomes
                .iter()
                .map(|(k, v)| ([("outcome", k.as_str())], ConstCounter::new(*v))),
        )?;
        family(
            enc,
            "sfc_dropped_packets_total",
            "Packets the datapath dropped (or failed to copy), by reason.",
            Counter,
            DROPS
                .map(|r| ([("reason", r)], ConstCounter::new(outcome(r))))
                .into_iter()
                .chain([(
                    [("reason", "unparsable")],
                    ConstCounter::new(unparsable.saturating_sub(unparsable_passed)),
                )]),
        )?;
        family(
            enc,
            "sfc_passed_packets_total",
            "Packets passed on untouched without steering, by reason.",
            Counter,
            PASSES
                .map(|r| ([("reason", r)], ConstCounter::new(outcome(r))))
                .into_iter()
                .chain([(
                    [("reason", "unparsable")],
                    ConstCounter::new(unparsable_passed),
                )]),
        )?;

        family(
            enc,
            "sfc_tunnel_packets_total",
            "Packets sent to other nodes in the tunnel, and taken from them.",
            Counter,
            [("sent", "tunnel_sent"), ("received", "tunnel_received")]
                .map(|(d, n)| ([("direction", d)], ConstCounter::new(outcome(n)))),
        )?;
        counter(
            enc,
            "sfc_too_big_answered_packets_total",
            "Packets too big for the underlay once encapsulated, answered with ICMP fragmentation needed or ICMPv6 packet too big (all are also in sfc_dropped_packets_total{reason=\"tunnel_too_big\"}).",
            outcome("too_big_answered"),
        )?;
        counter(
            enc,
            "sfc_tunnel_fragmented_packets_total",
            "IPv4 packets without DF too big for the underlay once encapsulated, cut into fragments that fit (which are counted as packets from then on).",
            outcome("tunnel_fragmented"),
        )?;
        family(
            enc,
            "sfc_tunnel_rejected_packets_total",
            "Tunnel packets dropped on arrival, by reason.",
            Counter,
            TUNNEL_REJECTED.map(|r| {
                let n = format!("tunnel_rejected_{r}");
                ([("reason", r)], ConstCounter::new(outcome(&n)))
            }),
        )?;

        // Per chain: entering and leaving, summed over classifiers and generations.
        let mut ends: BTreeMap<(&str, &str), [u64; 4]> = BTreeMap::new();
        for row in &s.chains {
            let l = &row.label;
            let e = ends
                .entry((l.chain.as_str(), direction(l.direction)))
                .or_default();
            if l.position == 0 {
                e[0] += row.packets;
                e[1] += row.bytes;
            }
            if l.position == l.hops {
                e[2] += row.packets;
                e[3] += row.bytes;
            }
        }
        for (i, name, help) in [
            (
                0,
                "sfc_chain_entered_packets_total",
                "Packets that entered a chain.",
            ),
            (
                1,
                "sfc_chain_entered_bytes_total",
                "Bytes that entered a chain.",
            ),
            (
                2,
                "sfc_chain_left_packets_total",
                "Packets that left a chain after its last hop.",
            ),
            (
                3,
                "sfc_chain_left_bytes_total",
                "Bytes that left a chain after its last hop.",
            ),
        ] {
            let samples = ends.iter().map(|(&(chain, dir), v)| {
                let labels = [("chain", chain), ("direction", dir)];
                (labels, ConstCounter::new(v[i]))
            });
            family(enc, name, help, Counter, samples)?;
        }

        // Per hop of a chain: sent into it, came back out of it, black hole or not.
        family(
            enc,
            "sfc_hop_into_packets_total",
            "Packets a chain sent into a hop.",
            Counter,
            s.hops
                .iter()
                .map(|h| (hop(h), ConstCounter::new(h.into_packets))),
        )?;
        family(
            enc,
            "sfc_hop_out_packets_total",
            "Packets that came back out of a hop, on their chain.",
            Counter,
            s.hops
                .iter()
                .map(|h| (hop(h), ConstCounter::new(h.from_packets))),
        )?;
        family(
            enc,
            "sfc_hop_black_hole",
            "1 when a hop takes packets in and lets (almost) none out.",
            Gauge,
            s.hops.iter().map(|h| (hop(h), black_hole(h.state))),
        )?;

        // Per SF (port pair): into and out of it, black hole or not.
        let sf: [(&str, &str, PairValue); 4] = [
            (
                "sfc_sf_into_packets_total",
                "Packets sent into an SF (copies for a tap).",
                |p| p.into_packets,
            ),
            ("sfc_sf_into_bytes_total", "Bytes sent into an SF.", |p| {
                p.into_bytes
            }),
            (
                "sfc_sf_out_packets_total",
                "Packets that came back out of an SF.",
                |p| p.from_packets,
            ),
            (
                "sfc_sf_out_bytes_total",
                "Bytes that came back out of an SF.",
                |p| p.from_bytes,
            ),
        ];
        for (name, help, value) in sf {
            let samples = s
                .pairs
                .iter()
                .map(|p| (pair(p), ConstCounter::new(value(p))));
            family(enc, name, help, Counter, samples)?;
        }
        family(
            enc,
            "sfc_sf_black_hole",
            "1 when an SF takes packets in and lets (almost) none out.",
            Gauge,
            s.pairs.iter().map(|p| (pair(p), black_hole(p.state))),
        )?;

        // Members of groups with a health check, probed on this node.
        let member = |m: &ProbedMember| [("port_pair", m.pair.clone())];
        family(
            enc,
            "sfc_member_up",
            "1 while a member's health-check probes come back (it is in its group), 0 while it is out.",
            Gauge,
            s.probed.iter().map(|m| (member(m), ConstGauge::new(m.up as i64))),
        )?;
        family(
            enc,
            "sfc_member_transitions_total",
            "Times a member went out of its group (probes failing) or came back.",
            Counter,
            s.probed
                .iter()
                .map(|m| (member(m), ConstCounter::new(m.transitions))),
        )?;

        // Fill levels of the tables sized by flags, as last counted (none before the first).
        let fills = s.tables.as_ref();
        let tables = || fills.into_iter().flat_map(|f| &f.tables);
        let table = |t: &sfc_api::counters::TableFill| [("table", t.table.clone())];
        family(
            enc,
            "sfc_table_entries",
            "Entries in a table (pins, flows, decisions, fragments), as last counted.",
            Gauge,
            tables().map(|t| (table(t), ConstGauge::new(t.entries as i64))),
        )?;
        family(
            enc,
            "sfc_table_capacity",
            "Entries a table holds (its --*-table-size flag).",
            Gauge,
            tables().map(|t| (table(t), ConstGauge::new(t.capacity as i64))),
        )?;
        family(
            enc,
            "sfc_table_full",
            "1 when a table is full: the kernel evicts entries (LRU) or refuses new ones.",
            Gauge,
            tables().map(|t| (table(t), ConstGauge::new(t.full as i64))),
        )?;
        family(
            enc,
            "sfc_table_counted_timestamp_seconds",
            "When the tables were last counted (Unix time).",
            Gauge,
            fills.map(|f| (NO_LABELS, ConstGauge::new(f.counted_at_ms as f64 / 1e3))),
        )?;
        family(
            enc,
            "sfc_table_count_duration_seconds",
            "How long the last count of every table's entries took.",
            Gauge,
            fills.map(|f| (NO_LABELS, ConstGauge::new(f.took_us as f64 / 1e6))),
        )?;

        family(
            enc,
            "sfc_dataplane_epoch",
            "Updates made to the dataplane (each one flips the generation).",
            Gauge,
            [(NO_LABELS, ConstGauge::new(s.epoch))],
        )?;
        family(
            enc,
            "sfc_ready",
            "1 when the agent is ready (its dataplane is applied), as /readyz says.",
            Gauge,
            [(
                NO_LABELS,
                ConstGauge::new(self.status.ready().is_ok() as i64),
            )],
        )?;
        family(
            enc,
            "sfc_agent_heartbeat_age_seconds",
            "Seconds since the agent loop last ran; /healthz fails past its limit.",
            Gauge,
            [(
                NO_LABELS,
                ConstGauge::new(self.status.heartbeat_age().as_secs_f64()),
            )],
        )
    }
}

const NO_LABELS: [(&str, &str); 0] = [];

/// One family: its descriptor, then a sample per label set. `name` is the sample name as
/// exported; OpenMetrics names a counter family without its `_total`.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let name = match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one counter without labels.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let no_labels: [(&str, &str); 0] = [];
    family(
        enc,
        name,
        help,
        MetricType::Counter,
        [(no_labels, ConstCounter::new(value))],
    )
}

pub(crate) fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

type HopLabels<'a> = ([(&'static str, &'a str); 2], [(&'static str, u8); 1]);

fn hop(h: &HopHealth) -> HopLabels<'_> {
    (
        [("chain", &h.chain), ("direction", direction(h.direction))],
        [("hop", h.hop)],
    )
}

type PairValue = fn(&PairHealth) -> u64;

fn pair(p: &PairHealth) -> [(&'static str, &str); 1] {
    [("port_pair", &p.pair)]
}

fn black_hole(state: State) -> ConstGauge {
    ConstGauge::new((state == State::BlackHole) as i64)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    serve_with(listener, metrics, Limits::default()).await
}

pub async fn serve_with(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size)
        // One request per connection: nobody can pipeline scrapes to keep us rendering, and
        // no idle keep-alive connection holds a slot. Prometheus and kubelet reconnect.
        .keep_alive(false);
    loop {
        // At the cap, wait here rather than accept and refuse (see `Limits::max_connections`).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: do not spin.
                warn!(error = %e, "metrics endpoint: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let service =
            service_fn(move |req| std::future::ready(Ok::<_, Infallible>(respond(&metrics, &req))));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            // Errors are the client's (malformed, too large, too slow, gone): not worth a log
            // line each, which any local user could make us write in a loop.
            let _ = timeout(limits.connection_lifetime, conn).await;
            drop(slot);
        });
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n".into());
    }
    let verdict = match req.uri().path() {
        "/metrics" => return reply(StatusCode::OK, OPENMETRICS, metrics.render()),
        "/healthz" => metrics.status.alive().map(|()| "ok"),
        "/readyz" => metrics.status.ready().map(|()| "ready"),
        _ => {
            let hint = "try /metrics, /healthz or /readyz\n";
            return reply(StatusCode::NOT_FOUND, TEXT, hint.into());
        }
    };
    match verdict {
        Ok(body) => reply(StatusCode::OK, TEXT, format!("{body}\n")),
        Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
