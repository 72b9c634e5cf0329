mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{get, parse_openmetrics, request};
use sfc_api::{
    counters::{Row, TableFill, TableFills},
    health::{HopHealth, PairHealth, State},
};
use sfc_config::compile::{CounterLabel, Direction};
use sfc_daemon::observe::{
    metrics::{serve, serve_with, Limits, Metrics, Status, OPENMETRICS},
    snapshot::{ProbedMember, Snapshot},
};
use tokio::{net::TcpListener, time::sleep};

const SEC: Duration = Duration::from_secs(1);

fn row(chain: &str, direction: Direction, position: u8, hops: u8, packets: u64) -> Row {
    let label = CounterLabel {
        chain: chain.into(),
        direction,
        position,
        hops,
        classifier: (position == 0).then(|| format!("c{packets}")),
    };
    Row {
        label,
        packets,
        bytes: packets * 100,
    }
}

fn hop(chain: &str, hop: u8, into_packets: u64, from_packets: u64, state: State) -> HopHealth {
    HopHealth {
        chain: chain.into(),
        direction: Direction::Forward,
        hop,
        into_packets,
        from_packets,
        into_pps: 0.0,
        from_pps: 0.0,
        state,
    }
}

fn pair(name: &str, into_packets: u64, from_packets: u64, state: State) -> PairHealth {
    PairHealth {
        pair: name.into(),
        interfaces: vec![format!("{name}-in"), format!("{name}-out")],
        into_packets,
        into_bytes: into_packets * 100,
        from_packets,
        from_bytes: from_packets * 100,
        into_pps: 0.0,
        from_pps: 0.0,
        state,
        check: None,
    }
}

const ODD: &str = r#"a"b\c"#;

fn sample() -> Snapshot {
    use Direction::*;
    Snapshot {
        outcomes: vec![
            ("steered".into(), 100),
            ("no_member".into(), 2),
            ("no_match".into(), 5),
            ("not_ip".into(), 1),
            // 4 unparsable packets, 1 of them passed by `unparsable: pass`.
            ("malformed".into(), 3),
            ("fragment_unknown".into(), 1),
            ("unparsable_passed".into(), 1),
            ("target_down".into(), 6),
            ("path_unknown".into(), 4),
        ],
        chains: vec![
            // Two classifiers enter the chain; 8 of 15 packets make it through both hops.
            row(ODD, Forward, 0, 2, 10),
            row(ODD, Forward, 0, 2, 5),
            row(ODD, Forward, 1, 2, 15),
            row(ODD, Forward, 2, 2, 8),
            row("PC1", Reverse, 0, 1, 3),
            row("PC1", Reverse, 1, 1, 3),
        ],
        pairs: vec![
            pair("PP1", 15, 15, State::Ok),
            pair("PP2", 15, 8, State::BlackHole),
        ],
        hops: vec![
            hop(ODD, 1, 15, 15, State::Ok),
            hop(ODD, 2, 15, 8, State::BlackHole),
        ],
        epoch: 7,
        tables: Some(TableFills {
            counted_at_ms: 1_700_000_000_250,
            took_us: 41_500,
            tables: vec![
                fill("pins", 131_000, 131_072, true),
                fill("flows4", 12, 65_536, false),
            ],
        }),
        probed: vec![
            ProbedMember {
                pair: "PP1".into(),
                up: true,
                transitions: 0,
            },
            ProbedMember {
                pair: "PP2".into(),
                up: false,
                transitions: 3,
            },
        ],
    }
}

fn fill(table: &str, entries: u64, capacity: u64, full: bool) -> TableFill {
    TableFill {
        table: table.into(),
        entries,
        capacity,
        full,
        when_full: "flows are being evicted".into(),
        flag: format!("--{table}-table-size"),
        complete: true,
    }
}

async fn start(metrics: Arc<Metrics>, limits: Option<Limits>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match limits {
        None => tokio::spawn(serve(listener, metrics)),
        Some(limits) => tokio::spawn(serve_with(listener, metrics, limits)),
    };
    addr
}

#[test]
fn render_has_every_metric_with_todays_names_and_labels() {
    let metrics = Metrics::new(
        Arc::new(Mutex::new(sample())),
        Arc::new(Status::new()),
        None,
    );
    metrics.observe_apply(0.2);
    metrics.observe_apply(3.0);
    let text = metrics.render();
    println!("{text}");

    let c = r#"chain="a\"b\\c",direction="forward""#;
    for line in [
        r#"sfc_datapath_packets_total{outcome="steered"} 100"#.to_string(),
        r#"sfc_dropped_packets_total{reason="no_member"} 2"#.into(),
        r#"sfc_dropped_packets_total{reason="target_down"} 6"#.into(),
        r#"sfc_dropped_packets_total{reason="redirect_failed"} 0"#.into(),
        r#"sfc_dropped_packets_total{reason="tap_failed"} 0"#.into(),
        r#"sfc_dropped_packets_total{reason="path_unknown"} 4"#.into(),
        r#"sfc_dropped_packets_total{reason="unparsable"} 3"#.into(),
        r#"sfc_passed_packets_total{reason="no_match"} 5"#.into(),
        r#"sfc_passed_packets_total{reason="not_ip"} 1"#.into(),
        r#"sfc_passed_packets_total{reason="unparsable"} 1"#.into(),
        format!("sfc_chain_entered_packets_total{{{c}}} 15"),
        format!("sfc_chain_entered_bytes_total{{{c}}} 1500"),
        format!("sfc_chain_left_packets_total{{{c}}} 8"),
        format!("sfc_chain_left_bytes_total{{{c}}} 800"),
        r#"sfc_chain_entered_packets_total{chain="PC1",direction="reverse"} 3"#.into(),
        format!("sfc_hop_into_packets_total{{{c},hop=\"2\"}} 15"),
        format!("sfc_hop_out_packets_total{{{c},hop=\"2\"}} 8"),
        format!("sfc_hop_black_hole{{{c},hop=\"1\"}} 0"),
        format!("sfc_hop_black_hole{{{c},hop=\"2\"}} 1"),
        r#"sfc_sf_into_packets_total{port_pair="PP2"} 15"#.into(),
        r#"sfc_sf_into_bytes_total{port_pair="PP2"} 1500"#.into(),
        r#"sfc_sf_out_packets_total{port_pair="PP2"} 8"#.into(),
        r#"sfc_sf_out_bytes_total{port_pair="PP2"} 800"#.into(),
        r#"sfc_sf_black_hole{port_pair="PP1"} 0"#.into(),
        r#"sfc_sf_black_hole{port_pair="PP2"} 1"#.into(),
        r#"sfc_member_up{port_pair="PP1"} 1"#.into(),
        r#"sfc_member_up{port_pair="PP2"} 0"#.into(),
        r#"sfc_member_transitions_total{port_pair="PP2"} 3"#.into(),
        r#"sfc_table_entries{table="pins"} 131000"#.into(),
        r#"sfc_table_capacity{table="pins"} 131072"#.into(),
        r#"sfc_table_full{table="pins"} 1"#.into(),
        r#"sfc_table_entries{table="flows4"} 12"#.into(),
        r#"sfc_table_capacity{table="flows4"} 65536"#.into(),
        r#"sfc_table_full{table="flows4"} 0"#.into(),
        "sfc_table_counted_timestamp_seconds 1700000000.25".into(),
        "sfc_table_count_duration_seconds 0.0415".into(),
        "sfc_dataplane_epoch 7".into(),
        "sfc_ready 0".into(),
        "sfc_apply_last_duration_seconds 3.0".into(),
        "sfc_apply_duration_seconds_sum 3.2".into(),
        "sfc_apply_duration_seconds_count 2".into(),
        r#"sfc_apply_duration_seconds_bucket{le="0.001"} 0"#.into(),
        r#"sfc_apply_duration_seconds_bucket{le="0.25"} 1"#.into(),
        r#"sfc_apply_duration_seconds_bucket{le="5.0"} 2"#.into(),
        r#"sfc_apply_duration_seconds_bucket{le="30.0"} 2"#.into(),
        r#"sfc_apply_duration_seconds_bucket{le="+Inf"} 2"#.into(),
        // OpenMetrics: a counter family is named without `_total`.
        "# TYPE sfc_datapath_packets counter".into(),
        "# TYPE sfc_apply_duration_seconds histogram".into(),
        "# TYPE sfc_sf_black_hole gauge".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line}");
    }

    let samples = parse_openmetrics(&text);
    let odd = samples
        .iter()
        .find(|s| s.name == "sfc_chain_left_packets_total" && s.labels[0].1 == ODD)
        .expect("the chain's label value round-trips");
    assert_eq!(odd.value, 8.0);
    let age = samples
        .iter()
        .find(|s| s.name == "sfc_agent_heartbeat_age_seconds")
        .expect("heartbeat age");
    assert!((0.0..5.0).contains(&age.value), "{age:?}");
}

#[test]
fn in_a_cluster_every_sample_carries_its_node() {
    let metrics = Metrics::new(
        Arc::new(Mutex::new(sample())),
        Arc::new(Status::new()),
        Some("n7"),
    );
    metrics.observe_apply(0.2);
    let text = metrics.render();
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.len() > 20, "{text}");
    for line in samples {
        assert!(line.contains(r#"node="n7""#), "no node label: {line}");
    }
    for line in [
        r#"sfc_datapath_packets_total{node="n7",outcome="steered"} 100"#,
        r#"sfc_tunnel_packets_total{node="n7",direction="sent"} 0"#,
        r#"sfc_tunnel_rejected_packets_total{node="n7",reason="source"} 0"#,
        r#"sfc_tunnel_fragmented_packets_total{node="n7"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
    }
}

#[test]
fn an_empty_snapshot_still_declares_every_family() {
    let metrics = Metrics::new(Default::default(), Arc::new(Status::new()), None);
    let text = metrics.render();
    parse_openmetrics(&text);
    for family in [
        "sfc_datapath_packets",
        "sfc_dropped_packets",
        "sfc_passed_packets",
        "sfc_chain_entered_packets",
        "sfc_chain_entered_bytes",
        "sfc_chain_left_packets",
        "sfc_chain_left_bytes",
        "sfc_hop_into_packets",
        "sfc_hop_out_packets",
        "sfc_hop_black_hole",
        "sfc_sf_into_packets",
        "sfc_sf_into_bytes",
        "sfc_sf_out_packets",
        "sfc_sf_out_bytes",
        "sfc_sf_black_hole",
        "sfc_table_entries",
        "sfc_table_capacity",
        "sfc_table_full",
        "sfc_table_counted_timestamp_seconds",
        "sfc_table_count_duration_seconds",
        "sfc_dataplane_epoch",
        "sfc_apply_duration_seconds",
        "sfc_apply_last_duration_seconds",
        "sfc_ready",
        "sfc_agent_heartbeat_age_seconds",
    ] {
        let typed = format!("# TYPE {family} ");
        assert!(text.lines().any(|l| l.starts_with(&typed)), "{family}");
    }
}

#[tokio::test]
async fn routes_answer_and_unknown_paths_get_a_hint() {
    let status = Arc::new(Status::new());
    let addr = start(
        Arc::new(Metrics::new(Default::default(), status, None)),
        None,
    )
    .await;

    let m = get(addr, "/metrics", SEC).await;
    assert_eq!(m.status, 200);
    let content_type = format!("content-type: {OPENMETRICS}");
    assert!(m.head.to_lowercase().contains(&content_type), "{}", m.head);
    assert!(m.body.ends_with("# EOF\n"));
    parse_openmetrics(&m.body);

    let nope = get(addr, "/nope", SEC).await;
    assert_eq!(nope.status, 404);
    assert_eq!(nope.body, "try /metrics, /healthz or /readyz\n");
    assert_eq!(request(addr, "POST", "/metrics", SEC).await.status, 405);
}

#[tokio::test]
async fn healthz_follows_the_agent_heartbeat_and_readyz_says_why() {
    let status = Arc::new(Status::with_liveness_limit(Duration::from_millis(300)));
    let metrics = Arc::new(Metrics::new(Default::default(), status.clone(), None));
    let addr = start(metrics.clone(), None).await;

    let ok = get(addr, "/healthz", SEC).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    sleep(Duration::from_millis(500)).await;
    let stale = get(addr, "/healthz", SEC).await;
    println!("stale: {} {:?}", stale.status, stale.body);
    assert_eq!(stale.status, 503);
    assert!(stale.body.starts_with("agent loop has not run for 0."));
    assert!(stale.body.ends_with(" s\n"));
    status.beat();
    assert_eq!(get(addr, "/healthz", SEC).await.status, 200);

    let starting = get(addr, "/readyz", SEC).await;
    assert_eq!(
        (starting.status, starting.body.as_str()),
        (503, "starting\n")
    );
    status.set_ready(Some("interface eth7 is missing".into()));
    let missing = get(addr, "/readyz", SEC).await;
    assert_eq!(missing.status, 503);
    assert_eq!(missing.body, "interface eth7 is missing\n");
    assert!(metrics.render().lines().any(|l| l == "sfc_ready 0"));
    status.set_ready(None);
    let ready = get(addr, "/readyz", SEC).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert!(metrics.render().lines().any(|l| l == "sfc_ready 1"));
}

#[tokio::test]
async fn at_the_connection_cap_a_scrape_waits_for_an_idle_one_to_time_out() {
    let limits = Limits {
        max_connections: 4,
        header_read_timeout: SEC,
        ..Limits::default()
    };
    let status = Arc::new(Status::new());
    let addr = start(
        Arc::new(Metrics::new(Default::default(), status, None)),
        Some(limits),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    sleep(Duration::from_millis(100)).await;
    let r = get(addr, "/healthz", 5 * SEC).await;
    println!("scrape at the cap answered in {:?}", r.took);
    assert_eq!(r.status, 200);
    // Queued, not refused: answered once the first idle connection timed out.
    assert!(r.took > Duration::from_millis(500), "{:?}", r.took);
    assert!(r.took < 3 * SEC, "{:?}", r.took);
}
