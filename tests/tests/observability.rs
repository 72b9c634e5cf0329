//! Seeing the chain: live tracing of real requests through the demo topology, stats, metrics
//! and the Grafana dashboard's queries against a real Prometheus.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    thread,
    time::Duration,
};

use serde_json::Value;
use sfc_common::{tracking_id, HashInput, PROTO_TCP};
use sfc_lab::{
    demo::{example_chain, symmetric_chain, Demo, DST_V4, SRC_V4},
    lab::{script, wait_for, Lab},
};

/// Runs `sfcctl trace ARGS -o json` while `requests` runs; returns the records.
fn trace(demo: &Demo, args: &[&str], requests: impl FnOnce()) -> Vec<Value> {
    let out = thread::scope(|s| {
        let tracer = s.spawn(|| {
            let mut all = vec!["trace", "-o", "json", "--duration", "6"];
            all.extend_from_slice(args);
            demo.lab.sfcctl(&all)
        });
        // The trace is installed once the daemon answered; give it a moment.
        thread::sleep(Duration::from_millis(700));
        requests();
        tracer.join().unwrap()
    });
    let out = out.unwrap_or_else(|e| panic!("sfcctl trace failed: {e}"));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn id_of(sport: u16) -> u32 {
    let ip = |s: &str| {
        let a: std::net::Ipv4Addr = s.parse().unwrap();
        [u32::from_ne_bytes(a.octets()), 0, 0, 0]
    };
    tracking_id(&HashInput {
        proto: PROTO_TCP,
        sport,
        dport: 80,
        src: ip(SRC_V4),
        dst: ip(DST_V4),
        ..Default::default()
    })
}

#[test]
fn trace_shows_a_request_crossing_a_pg1_member_then_sf3_in_both_directions() {
    let demo = Demo::build("trace").unwrap();
    demo.apply(&symmetric_chain());
    let (port, other) = (47001, 47002);
    let id = id_of(port);
    // Follow one flow by its tracking id, while another flow runs beside it.
    let records = trace(&demo, &["--id", &format!("{id:08x}")], || {
        assert_eq!(demo.curl_from(DST_V4, Some(port)).unwrap(), 200);
        assert_eq!(demo.curl_from(DST_V4, Some(other)).unwrap(), 200);
    });
    assert!(records.len() >= 10, "too few records: {records:#?}");
    for r in &records {
        assert_eq!(r["id"], id, "a record of another flow: {r}");
        assert_eq!(r["chain"], "PC1", "{r}");
    }
    let steps = |direction: &str| -> Vec<(String, String, String)> {
        let mut seen = Vec::new();
        for r in records.iter().filter(|r| r["direction"] == direction) {
            let step = (
                r["interface"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap_or("-").to_string(),
            );
            if !seen.contains(&step) {
                seen.push(step);
            }
        }
        seen
    };
    // Forward: vm-src -> one PG1 member -> SF3 -> delivered to vm-dst.
    let forward = steps("forward");
    assert_eq!(forward.len(), 3, "{forward:?}");
    let member = &forward[0].2;
    assert!(member == "PP1" || member == "PP2", "{forward:?}");
    let sf = if member == "PP1" { "sf1" } else { "sf2" };
    assert_eq!(
        forward,
        vec![
            ("vm-src".into(), "steered".into(), member.clone()),
            (format!("{sf}-out"), "steered".into(), "PP3".into()),
            ("sf3-out".into(), "delivered".into(), "vm-dst".into()),
        ]
    );
    // Reverse: vm-dst -> SF3 (into its egress) -> the same member -> delivered to vm-src.
    let reverse = steps("reverse");
    assert_eq!(
        reverse,
        vec![
            ("vm-dst".into(), "steered".into(), "PP3 (egress)".into()),
            (
                "sf3-in".into(),
                "steered".into(),
                format!("{member} (egress)")
            ),
            (format!("{sf}-in"), "delivered".into(), "vm-src".into()),
        ]
    );
    let hops: BTreeSet<u64> = records.iter().map(|r| r["hop"].as_u64().unwrap()).collect();
    assert_eq!(hops, [0, 1, 2].into());
}

/// The example chain, for UDP to port 9000.
fn udp_chain() -> String {
    fs::read_to_string(example_chain())
        .unwrap()
        .replace("  protocol: tcp\n", "  protocol: udp\n")
        .replace(
            "  destinationPortRange: \"80\"",
            "  destinationPortRange: \"9000\"",
        )
}

/// [`udp_chain`] with a health check on PG1 (so that member liveness is exported).
fn udp_chain_with_health_check() -> String {
    udp_chain().replace(
        "  portPairs: [PP1, PP2]\n",
        "  portPairs: [PP1, PP2]\n  healthCheck: {intervalMs: 200, timeoutMs: 100}\n",
    )
}

/// Sends `count` UDP datagrams at `rate`/s from the source to the destination port 9000.
fn send_udp(demo: &Demo, count: u32, rate: u32) {
    demo.lab
        .sh(
            "src",
            &format!(
                "python3 {} send {DST_V4} 9000 {count} {rate} 40998",
                script("udp_stream.py")
            ),
        )
        .unwrap();
}

fn stats(demo: &Demo) -> Value {
    serde_json::from_str(&demo.lab.sfcctl(&["stats", "-o", "json"]).unwrap()).unwrap()
}

/// The daemon's /metrics as (name{labels} -> value), and the families it declares.
fn scrape(demo: &Demo) -> (BTreeMap<String, f64>, BTreeSet<String>) {
    let text = demo
        .lab
        .sh("node", "curl -sf http://127.0.0.1:9464/metrics")
        .unwrap();
    let mut samples = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split_whitespace().next().unwrap().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, value) = line.rsplit_once(' ').unwrap();
            samples.insert(name.to_string(), value.parse().unwrap());
        }
    }
    (samples, families)
}

#[test]
fn a_udp_burst_of_n_packets_shows_exactly_n_in_stats_and_metrics() {
    let demo = Demo::build("count").unwrap();
    demo.apply(&udp_chain());
    const N: u64 = 500;
    send_udp(&demo, N as u32, 1000);
    // Only for the last datagrams to arrive: `stats` reads the counters afresh (the agent
    // itself samples them once a second), and /metrics then shows that sample.
    thread::sleep(Duration::from_millis(200));
    let s = stats(&demo);
    let rows = s["chains"].as_array().unwrap();
    let at = |position: u64| -> u64 {
        rows.iter()
            .filter(|r| r["chain"] == "PC1" && r["position"] == position)
            .map(|r| r["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (at(0), at(1), at(2)),
        (N, N, N),
        "entered, past hop 1, left: {s:#}"
    );
    let pair = |name: &str| -> (u64, u64) {
        let p = s["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pair"] == name)
            .unwrap_or_else(|| panic!("no {name}: {s:#}"));
        (
            p["into_packets"].as_u64().unwrap(),
            p["from_packets"].as_u64().unwrap(),
        )
    };
    let (pp1, pp2, pp3) = (pair("PP1"), pair("PP2"), pair("PP3"));
    assert_eq!(pp1.0 + pp2.0, N, "into PG1");
    assert_eq!(pp1.1 + pp2.1, N, "out of PG1");
    assert_eq!(pp3, (N, N), "into and out of SF3");
    let (m, _) = scrape(&demo);
    let metric = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no {k} in /metrics: {m:#?}"))
    };
    assert_eq!(
        metric("sfc_chain_entered_packets_total{chain=\"PC1\",direction=\"forward\"}"),
        N as f64
    );
    assert_eq!(
        metric("sfc_chain_left_packets_total{chain=\"PC1\",direction=\"forward\"}"),
        N as f64
    );
    assert_eq!(
        metric("sfc_sf_into_packets_total{port_pair=\"PP3\"}"),
        N as f64
    );
    assert_eq!(
        metric("sfc_sf_out_packets_total{port_pair=\"PP3\"}"),
        N as f64
    );
    assert_eq!(
        metric("sfc_hop_into_packets_total{chain=\"PC1\",direction=\"forward\",hop=\"2\"}"),
        N as f64
    );
}

#[test]
fn an_sf_that_stops_forwarding_is_reported_as_a_black_hole() {
    let demo = Demo::build("hole").unwrap();
    demo.apply(&udp_chain());
    send_udp(&demo, 200, 400);
    thread::sleep(Duration::from_millis(1500));
    let healthy = demo.lab.sfcctl(&["describe", "portchain", "PC1"]).unwrap();
    assert!(healthy.contains("no black hole"), "{healthy}");
    // SF3 stops forwarding: what goes in never comes out.
    demo.lab
        .sh("sf3", "sysctl -qw net.ipv4.ip_forward=0")
        .unwrap();
    send_udp(&demo, 600, 300);
    let described = wait_for(Duration::from_secs(5), || {
        let text = demo.lab.sfcctl(&["describe", "portchain", "PC1"]).ok()?;
        text.contains("BLACK HOLE").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no black hole reported: {}",
            demo.lab.sfcctl(&["describe", "portchain", "PC1"]).unwrap()
        )
    });
    println!("{described}");
    assert!(described.contains("BLACK HOLE at PP3"), "{described}");
    let s = stats(&demo);
    let state = |name: &str| {
        s["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pair"] == name)
            .map(|p| p["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("PP3"), "black-hole", "{s:#}");
    assert_ne!(state("PP1"), "black-hole");
    assert_ne!(state("PP2"), "black-hole");
    let table = demo.lab.sfcctl(&["stats", "PC1"]).unwrap();
    println!("{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("PP3") && l.ends_with("black-hole")),
        "{table}"
    );
    let (m, _) = scrape(&demo);
    assert_eq!(
        m.get("sfc_sf_black_hole{port_pair=\"PP3\"}"),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(m.get("sfc_sf_black_hole{port_pair=\"PP1\"}"), Some(&0.0));
}

/// Every panel expression of the Grafana dashboard (`manifests/grafana/sfc-dashboard.json`),
/// each with the legend it is drawn with; its datasource is the template variable, as
/// provisioning from a file or a ConfigMap needs.
fn dashboard_queries() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/grafana/sfc-dashboard.json");
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        dashboard.get("__inputs").is_none(),
        "the datasource is a template variable, not an import input"
    );
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                !expr.contains("vector(0)"),
                "{expr}: a dead scrape must show as missing, not as 0"
            );
            queries.push((
                expr.to_string(),
                target["legendFormat"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    queries
}

/// What Grafana puts in for the dashboard's variables: one job, every node, a rate window of
/// four scrapes, the last five minutes.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$job", "sfc")
        .replace("$node", ".*")
        .replace("$__rate_interval", "4s")
        .replace("$__range", "5m")
}

/// An instant query of the Prometheus in the node's namespace: (legend filled in, value) per
/// series.
fn query(lab: &Lab, expr: &str, legend: &str) -> Result<Vec<(String, f64)>, String> {
    let out = lab
        .cmd("node", "curl")
        .args(["-s", "--get", "http://127.0.0.1:9090/api/v1/query"])
        .arg("--data-urlencode")
        .arg(format!("query={}", as_grafana_sends(expr)))
        .output()
        .map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if answer["status"] != "success" {
        return Err(format!("{expr}: {answer}"));
    }
    Ok(answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let mut name = legend.to_string();
            for (label, value) in series["metric"].as_object().unwrap() {
                name = name.replace(&format!("{{{{{label}}}}}"), value.as_str().unwrap());
            }
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            (name, value)
        })
        .collect())
}

/// The dashboard's queries (expression, legend).
struct Board(Vec<(String, String)>);

impl Board {
    /// The panel query whose expression contains `metric`.
    fn find(&self, metric: &str) -> &(String, String) {
        self.0
            .iter()
            .find(|(e, _)| e.contains(metric))
            .unwrap_or_else(|| panic!("no panel queries {metric}"))
    }

    /// What the panel querying `metric` shows now.
    fn panel(&self, lab: &Lab, metric: &str) -> Result<Vec<(String, f64)>, String> {
        let (expr, legend) = self.find(metric);
        query(lab, expr, legend)
    }

    /// Waits (at most 15 s) until the panel querying `metric` shows `series` with a value
    /// that is `wanted`; panics with `what` and what it shows otherwise.
    fn wait(
        &self,
        lab: &Lab,
        metric: &str,
        series: &str,
        wanted: impl Fn(f64) -> bool,
        what: &str,
    ) {
        let shown = || {
            self.panel(lab, metric)
                .ok()?
                .into_iter()
                .find(|(name, v)| name == series && wanted(*v))
        };
        if wait_for(Duration::from_secs(15), shown).is_none() {
            panic!(
                "{what}: {:?} shows {:?}",
                self.find(metric).0,
                self.panel(lab, metric)
            );
        }
    }
}

/// The Grafana dashboard against a real Prometheus (Debian's, started here in the node's
/// namespace, scraping the live daemon every second): every panel's expression, as Grafana
/// sends it, parses and returns data during a black hole at SF3 and a failover in PG1; the
/// panels say which SF and which hop are the black hole and which member is down, a refused
/// apply counts, and a daemon that cannot be scraped shows as down, not as a healthy 0.
#[test]
fn the_dashboard_against_a_real_prometheus_shows_a_black_hole_a_failover_and_a_dead_scrape() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 18, "{queries:?}");
    let mut demo = Demo::build("prom").unwrap();
    demo.apply(&udp_chain_with_health_check());
    let dir = demo.lab.dir.join("prometheus");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("prometheus.yml"),
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n\
         scrape_configs:\n  - job_name: sfc\n    static_configs: [{targets: ['127.0.0.1:9464']}]\n",
    )
    .unwrap();
    demo.lab
        .spawn(
            "node",
            &format!(
                "prometheus --config.file={0}/prometheus.yml --storage.tsdb.path={0}/data \
                 --web.listen-address=127.0.0.1:9090 --log.level=warn",
                dir.display()
            ),
        )
        .unwrap();
    let board = Board(queries);
    board.wait(
        &demo.lab,
        "up{",
        "127.0.0.1:9464",
        |v| v == 1.0,
        "the daemon is not scraped",
    );
    // Steady UDP through the chain (30 s at 200/s), then SF3 stops forwarding.
    demo.lab
        .spawn(
            "src",
            &format!(
                "python3 {} send {DST_V4} 9000 6000 200 40998",
                script("udp_stream.py")
            ),
        )
        .unwrap();
    thread::sleep(Duration::from_secs(3));
    demo.lab
        .sh("sf3", "sysctl -qw net.ipv4.ip_forward=0")
        .unwrap();
    board.wait(
        &demo.lab,
        "sfc_sf_black_hole",
        "PP3",
        |v| v == 1.0,
        "the per-SF panel does not show PP3 as a black hole",
    );
    let hops = board.panel(&demo.lab, "sfc_hop_black_hole").unwrap();
    assert!(
        hops.contains(&("PC1 forward hop 2".to_string(), 1.0)),
        "the per-hop panel does not show hop 2 of PC1 as a black hole: {hops:?}"
    );
    let sfs = board.panel(&demo.lab, "sfc_sf_black_hole").unwrap();
    assert!(sfs.contains(&("PP1".to_string(), 0.0)), "{sfs:?}");
    // A failover: SF1 stops forwarding too, its probes fail, PP1 leaves PG1.
    demo.lab
        .sh("sf1", "sysctl -qw net.ipv4.ip_forward=0")
        .unwrap();
    board.wait(
        &demo.lab,
        "sfc_member_up",
        "PP1",
        |v| v == 0.0,
        "the liveness panel does not show PP1 down",
    );
    board.wait(
        &demo.lab,
        "sfc_member_transitions_total",
        "PP1",
        |v| v > 0.0,
        "the transitions panel shows no change of PP1",
    );
    // A refused apply counts.
    assert!(demo
        .lab
        .sfcctl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {name: G}\nspec: {portPairs: []}\n"),
        )
        .is_err());
    board.wait(
        &demo.lab,
        "sfc_apply_refused_total",
        "invalid",
        |v| v > 0.0,
        "the refused-applies panel does not count the invalid apply",
    );
    // Meanwhile, every panel's expression parses and has data.
    for (expr, legend) in &board.0 {
        let series = query(&demo.lab, expr, legend).unwrap_or_else(|e| panic!("{e}"));
        assert!(!series.is_empty(), "{expr} returned no data");
    }
    // The daemon gone: its target shows down (0), not missing and not green.
    demo.lab.kill_daemon().unwrap();
    board.wait(
        &demo.lab,
        "up{",
        "127.0.0.1:9464",
        |v| v == 0.0,
        "a daemon that cannot be scraped is not shown down",
    );
}

#[test]
fn every_metric_the_grafana_dashboard_queries_exists() {
    let mut queried = BTreeSet::new();
    for (expr, _) in dashboard_queries() {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("sfc_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    // A live daemon with a chain and some traffic.
    let demo = Demo::build("grafana").unwrap();
    demo.apply(&udp_chain_with_health_check());
    send_udp(&demo, 50, 500);
    thread::sleep(Duration::from_millis(1500));
    let (samples, families) = scrape(&demo);
    for name in &queried {
        // OpenMetrics names a counter family without `_total`, a histogram without `_sum`.
        let family = ["_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, the daemon does not export it"
        );
        assert!(
            samples
                .keys()
                .any(|k| k == name || k.starts_with(&format!("{name}{{"))),
            "{name} has no sample"
        );
    }
}
