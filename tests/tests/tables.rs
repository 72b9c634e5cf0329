//! The LRU tables (flows, pins, decisions) and the fragment table: their sizes are daemon
//! flags, and a pinned table of another size is replaced at start.

use std::{
    mem::size_of,
    path::PathBuf,
    process::{Command, Stdio},
};

use aya::maps::{HashMap, Map, MapData, MapInfo};
use sfc_common::{
    FlowState, FlowTuple4, PinKey, DECISIONS_CAPACITY, FLOWS_CAPACITY, FRAGMENTS_CAPACITY,
    MAP_DECISIONS, MAP_DECISIONS4, MAP_FLOWS, MAP_FLOWS4, MAP_FRAGMENTS, MAP_PINS, PINS_CAPACITY,
};
use sfc_lab::lab::{bin_dir, Lab};

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
