//! The LRU tables (flows, pins, decisions) and the fragment table: their sizes are daemon
//! flags, a pinned table of another size is replaced at start, and how full they are shows in
//! `stats` and `/metrics`.

use std::{
    mem::size_of,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData, MapInfo};
use serde_json::Value;
use sfc_common::{
    FlowState, FlowTuple4, PinKey, DECISIONS_CAPACITY, FLOWS_CAPACITY, FRAGMENTS_CAPACITY,
    MAP_DECISIONS, MAP_DECISIONS4, MAP_FLOWS, MAP_FLOWS4, MAP_FRAGMENTS, MAP_PINS, PINS_CAPACITY,
};
use sfc_lab::lab::{bin_dir, wait_for, Lab};

fn map_path(lab: &mut Lab, name: &str) -> PathBuf {
    lab.bpffs().unwrap().join("maps").join(name)
}

fn max_entries(lab: &mut Lab, name: &str) -> u32 {
    MapInfo::from_pin(map_path(lab, name))
        .unwrap()
        .max_entries()
}

/// Flow pins: (group, flow hash) -> the member's ingress ifindex.
fn pins(lab: &mut Lab) -> HashMap<MapData, PinKey, u32> {
    let data = MapData::from_pin(map_path(lab, MAP_PINS)).unwrap();
    HashMap::try_from(Map::LruHashMap(data)).unwrap()
}

/// The flow table as bytes (its key type is not `Pod` on the agent's side).
type Flow4Key = [u8; size_of::<FlowTuple4>()];

fn flows4(lab: &mut Lab) -> HashMap<MapData, Flow4Key, [u8; size_of::<FlowState>()]> {
    let data = MapData::from_pin(map_path(lab, MAP_FLOWS4)).unwrap();
    HashMap::try_from(Map::LruHashMap(data)).unwrap()
}

fn pin(hash: u32) -> (PinKey, u32) {
    (PinKey { group: 1, hash }, 7)
}

/// `sfc-daemon` with `args` only, outside any lab: its exit status and stderr.
fn daemon_refuses(args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("sfc-daemon"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "sfc-daemon {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn table_sizes_are_flags_checked_against_their_bounds() {
    for (args, error) in [
        (
            ["--pins-table-size", "0"],
            "invalid value '0' for '--pins-table-size <ENTRIES>': 0 entries is out of bounds: a table holds 1024 to 16777216 entries",
        ),
        (
            ["--flows-table-size", "4294967296"],
            "4294967296 entries is out of bounds: a table holds 1024 to 16777216 entries",
        ),
        (
            ["--decisions-table-size", "64k"],
            "invalid value '64k' for '--decisions-table-size <ENTRIES>': \"64k\" is not a number of entries",
        ),
    ] {
        let stderr = daemon_refuses(&args);
        assert!(stderr.contains(error), "{args:?}: {stderr}");
    }
    // The defaults are the ABI's, and --help says so.
    let help = Command::new(bin_dir().join("sfc-daemon"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, default) in [
        ("--flows-table-size", FLOWS_CAPACITY),
        ("--pins-table-size", PINS_CAPACITY),
        ("--decisions-table-size", DECISIONS_CAPACITY),
        ("--fragments-table-size", FRAGMENTS_CAPACITY),
    ] {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
        let next = help[at..].find("[default: ").unwrap() + at;
        assert!(
            help[next..].starts_with(&format!("[default: {default}]")),
            "{flag}: {help}"
        );
    }
}

#[test]
fn a_pinned_table_of_another_size_is_replaced_by_an_empty_one_of_the_asked_size() {
    let mut lab = Lab::new("tsize").unwrap();
    lab.add_ns("node").unwrap();
    lab.start_daemon("node").unwrap();
    for (name, size) in [
        (MAP_PINS, PINS_CAPACITY),
        (MAP_FLOWS, FLOWS_CAPACITY),
        (MAP_FLOWS4, FLOWS_CAPACITY),
        (MAP_DECISIONS, DECISIONS_CAPACITY),
        (MAP_DECISIONS4, DECISIONS_CAPACITY),
        (MAP_FRAGMENTS, FRAGMENTS_CAPACITY),
    ] {
        assert_eq!(max_entries(&mut lab, name), size, "{name}");
    }
    let (key, entry) = pin(1);
    pins(&mut lab).insert(key, entry, 0).unwrap();
    let flow: Flow4Key = [1; size_of::<FlowTuple4>()];
    flows4(&mut lab)
        .insert(flow, [0; size_of::<FlowState>()], 0)
        .unwrap();

    // Smaller pins, larger flows and fragments: replaced, empty; the decisions keep theirs.
    lab.kill_daemon().unwrap();
    lab.daemon_args = [
        "--pins-table-size",
        "4096",
        "--flows-table-size",
        "262144",
        "--fragments-table-size",
        "8192",
    ]
    .map(String::from)
    .to_vec();
    lab.start_daemon("node").unwrap();
    assert_eq!(max_entries(&mut lab, MAP_PINS), 4096);
    assert_eq!(max_entries(&mut lab, MAP_FLOWS4), 262144);
    assert_eq!(max_entries(&mut lab, MAP_FLOWS), 262144);
    assert_eq!(max_entries(&mut lab, MAP_FRAGMENTS), 8192);
    assert_eq!(max_entries(&mut lab, MAP_DECISIONS), DECISIONS_CAPACITY);
    assert!(pins(&mut lab).get(&key, 0).is_err(), "a fresh pins table");
    assert!(
        flows4(&mut lab).get(&flow, 0).is_err(),
        "a fresh flows4 table"
    );
    let log = lab.daemon_log();
    println!("{log}");
    for (table, line) in [
        ("pins", "the pinned pins table has another size than --pins-table-size asks: replaced by an empty one"),
        ("flows4", "the pinned flows4 table has another size than --flows-table-size asks: replaced by an empty one"),
        ("fragments", "the pinned fragments table has another size than --fragments-table-size asks: replaced by an empty one"),
    ] {
        assert!(log.contains(line), "{table}: {log}");
    }
    assert!(!log.contains("decisions table has another size"), "{log}");

    // The same sizes again: nothing replaced, what the tables held is kept.
    pins(&mut lab).insert(key, entry, 0).unwrap();
    lab.kill_daemon().unwrap();
    let before = lab.daemon_log().len();
    lab.start_daemon("node").unwrap();
    assert_eq!(max_entries(&mut lab, MAP_PINS), 4096);
    assert!(pins(&mut lab).get(&key, 0).is_ok(), "the pin is kept");
    let log = lab.daemon_log();
    assert!(
        !log[before..].contains("replaced by an empty one"),
        "{}",
        &log[before..]
    );
}

/// `sfcctl stats -o json`'s tables, once the daemon counted them.
fn counted(lab: &Lab, newer_than_ms: u64) -> Value {
    wait_for(Duration::from_secs(20), || {
        let json = lab.sfcctl(&["stats", "-o", "json"]).ok()?;
        let stats: Value = serde_json::from_str(&json).unwrap();
        let tables = stats["tables"].clone();
        (tables["counted_at_ms"].as_u64()? > newer_than_ms).then_some(tables)
    })
    .unwrap_or_else(|| panic!("no count of the tables within 20 s\n{}", lab.daemon_log()))
}

fn table<'a>(tables: &'a Value, name: &str) -> &'a Value {
    tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name}: {tables}"))
}

fn metric(lab: &Lab, name: &str) -> f64 {
    let text = lab
        .sh(
            "node",
            "curl -sf --max-time 5 http://127.0.0.1:9464/metrics",
        )
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn a_full_pins_table_shows_in_stats_and_metrics_and_is_counted_in_milliseconds() {
    let mut lab = Lab::new("tfill").unwrap();
    lab.add_ns("node").unwrap();
    lab.start_daemon("node").unwrap();
    let empty = counted(&lab, 0);
    assert_eq!(table(&empty, "pins")["entries"], 0);
    assert_eq!(table(&empty, "pins")["capacity"], PINS_CAPACITY);
    assert_eq!(table(&empty, "pins")["full"], false);

    // More flows than the table holds: the LRU evicts, as under a flood of new flows.
    lab.kill_daemon().unwrap();
    let mut map = pins(&mut lab);
    let started = Instant::now();
    for hash in 0..PINS_CAPACITY + PINS_CAPACITY / 8 {
        let (key, entry) = pin(hash);
        map.insert(key, entry, 0).unwrap();
    }
    println!(
        "{} pins written in {:?}",
        PINS_CAPACITY + PINS_CAPACITY / 8,
        started.elapsed()
    );
    // For comparison: a walk a key at a time, as `keys()` does (BPF_MAP_GET_NEXT_KEY).
    let started = Instant::now();
    let by_key = map.keys().filter_map(Result::ok).count();
    let by_key_took = started.elapsed();
    println!("a walk key by key: {by_key} entries in {by_key_took:?}");

    lab.start_daemon("node").unwrap();
    let full = counted(&lab, 0);
    let pins_fill = table(&full, "pins");
    let entries = pins_fill["entries"].as_u64().unwrap();
    println!(
        "the daemon counted {entries} pins; every table in {} µs",
        full["took_us"]
    );
    // Short of capacity by at most the free entries the LRU keeps per CPU (128 each).
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    assert!(
        entries <= PINS_CAPACITY as u64 && entries + 128 * (cpus + 1) >= PINS_CAPACITY as u64,
        "{entries} of {PINS_CAPACITY}"
    );
    assert_eq!(pins_fill["full"], true);
    assert_eq!(pins_fill["complete"], true);
    assert!(
        full["took_us"].as_u64().unwrap() < 1_000_000,
        "counting took {} µs",
        full["took_us"]
    );
    let stats = lab.sfcctl(&["stats"]).unwrap();
    println!("{stats}");
    let line = stats
        .lines()
        .find(|l| l.starts_with("pins "))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(
        line.contains(&format!(" {entries} "))
            && line.ends_with("full: established flows are being evicted, raise --pins-table-size"),
        "{line}"
    );
    assert!(stats.contains("(counted "), "{stats}");
    assert_eq!(
        metric(&lab, r#"sfc_table_entries{table="pins"}"#),
        entries as f64
    );
    assert_eq!(
        metric(&lab, r#"sfc_table_capacity{table="pins"}"#),
        PINS_CAPACITY as f64
    );
    assert_eq!(metric(&lab, r#"sfc_table_full{table="pins"}"#), 1.0);
    assert!(lab.daemon_log().contains(
        "the pins table is full: established flows are being evicted; raise --pins-table-size"
    ));

    // Emptied, the table is counted again within the period, and no longer full.
    let keys: Vec<PinKey> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = map.remove(&key);
    }
    let since = full["counted_at_ms"].as_u64().unwrap();
    let again = counted(&lab, since);
    assert_eq!(table(&again, "pins")["entries"], 0);
    assert_eq!(table(&again, "pins")["full"], false);
    let waited = again["counted_at_ms"].as_u64().unwrap() - since;
    assert!(waited <= 11_000, "counted again after {waited} ms");
    assert!(lab
        .daemon_log()
        .contains("the pins table is no longer full"));
    assert!(!lab.sfcctl(&["stats"]).unwrap().contains("full:"));
}
