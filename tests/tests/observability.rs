//! Seeing the chain: live tracing of real requests through the demo topology.

use std::{collections::BTreeSet, fs, thread, time::Duration};

use serde_json::Value;
use sfc_common::{tracking_id, HashInput, PROTO_TCP};
use sfc_tests::demo::{example_chain, Demo, DST_V4, SRC_V4};

fn apply(demo: &Demo, yaml: &str) {
    if let Err(e) = demo.lab.sfcctl_stdin(&["apply", "-f", "-"], Some(yaml)) {
        panic!("apply failed: {e}\n{}", demo.lab.daemon_log());
    }
}

fn symmetric_chain() -> String {
    fs::read_to_string(example_chain())
        .unwrap()
        .replace(
            "  logicalSourcePort: vm-src\n",
            "  logicalSourcePort: vm-src\n  logicalDestinationPort: vm-dst\n",
        )
        .replace(
            "  flowClassifiers: [FC1, FC1-v6]",
            "  flowClassifiers: [FC1, FC1-v6]\n  chainParameters: {symmetric: true}",
        )
}

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
    apply(&demo, &symmetric_chain());
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
