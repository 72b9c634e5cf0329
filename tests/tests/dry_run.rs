//! `--dry-run`: says what an apply or a delete would create, change and delete, and what the
//! dataplane would do, and changes nothing: not the state, not the maps, not the traffic.

use std::fs;

use aya::maps::{Array, Map, MapData};
use sfc_common::{CONFIG_EPOCH, MAP_CONFIG};
use sfc_lab::{
    demo::{example_chain, Demo, DST_V4},
    yaml::doc,
};

const KINDS: [&str; 4] = ["pp", "ppg", "fc", "pc"];

/// Everything a dry run must leave alone: every `get` in every format, the state file, the
/// dataplane's epoch (bumped by every reprogramming) and how often the daemon wrote the maps.
#[derive(Debug, PartialEq)]
struct Snapshot {
    gets: Vec<String>,
    state_file: Vec<u8>,
    epoch: u64,
    updates: usize,
}

fn snapshot(demo: &Demo) -> Snapshot {
    let lab = &demo.lab;
    let mut gets = Vec::new();
    for kind in KINDS {
        for output in ["table", "yaml", "json"] {
            gets.push(lab.sfcctl(&["get", kind, "-o", output]).unwrap());
        }
    }
    let config = MapData::from_pin(lab.dir.join("bpffs/maps").join(MAP_CONFIG)).unwrap();
    let config: Array<MapData, u64> = Array::try_from(Map::Array(config)).unwrap();
    Snapshot {
        gets,
        state_file: fs::read(lab.dir.join("state/state.json")).unwrap(),
        epoch: config.get(&CONFIG_EPOCH, 0).unwrap(),
        updates: lab.daemon_log().matches("dataplane updated").count(),
    }
}

/// Which of SF1, SF2 and SF3 twelve fixed flows crossed.
fn members_used(demo: &Demo, first_port: u16) -> [bool; 3] {
    let mut used = [false; 3];
    for port in first_port..first_port + 12 {
        let c = demo.request_from(DST_V4, Some(port)).unwrap();
        assert_eq!(c.status, 200, "{c:?}");
        for (u, n) in used.iter_mut().zip(c.forwarded) {
            *u |= n > 0;
        }
    }
    used
}

#[test]
fn dry_runs_report_changes_and_change_nothing() {
    let demo = Demo::build("dry").unwrap();
    let lab = &demo.lab;
    lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    assert_eq!(members_used(&demo, 42000), [true, true, true]);
    let before = snapshot(&demo);

    // PG1 loses SF1, FC1 is restated as it is, and a second chain enters at vm-dst.
    let file = lab
        .file(
            "next.yaml",
            &[
                doc("PortChain", "PC2", "{portPairGroups: [PG2, PG1], flowClassifiers: [FC2]}"),
                doc("FlowClassifier", "FC2", "{protocol: udp, logicalSourcePort: vm-dst}"),
                doc("PortPairGroup", "PG1", "{portPairs: [PP2]}"),
                doc(
                    "FlowClassifier",
                    "FC1",
                    "{ethertype: IPv4, protocol: tcp, sourceIpPrefix: 198.18.0.10/32, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: '80', logicalSourcePort: vm-src}",
                ),
            ]
            .concat(),
        )
        .unwrap();
    let out = lab
        .sfcctl(&["apply", "-f", &file, "--dry-run"])
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.daemon_log()));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "portpairgroup/PG1 changed (portPairs)",
            "flowclassifier/FC1 unchanged",
            "flowclassifier/FC2 created",
            "portchain/PC2 created",
        ],
        "{out}"
    );
    assert!(
        lines[4]
            .starts_with("dataplane: would start managing vm-dst; would stop managing sf1-out;"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"dry run: nothing was changed"), "{out}");
    // The same request twice prints the same bytes.
    assert_eq!(
        lab.sfcctl(&["apply", "-f", &file, "--dry-run"]).unwrap(),
        out
    );
    assert_eq!(snapshot(&demo), before, "a dry-run apply changed something");
    // Traffic still follows the old configuration: PG1 still has SF1.
    assert_eq!(members_used(&demo, 42100), [true, true, true]);

    // A dry-run delete refuses what a delete refuses.
    let err = lab
        .sfcctl(&["delete", "ppg", "PG2", "--dry-run"])
        .unwrap_err();
    assert!(
        err.contains("PG2") && err.contains("nothing was deleted"),
        "{err}"
    );
    // And reports what a delete would do.
    let out = lab.sfcctl(&["delete", "pc", "PC1", "--dry-run"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "portchain/PC1 deleted", "{out}");
    assert!(
        lines[1].starts_with(
            "dataplane: would start managing none; would stop managing sf1-out, sf2-out, sf3-out, vm-src;"
        ),
        "{out}"
    );
    let out = lab
        .sfcctl(&["delete", "-f", &example_chain(), "--dry-run"])
        .unwrap();
    assert_eq!(
        out.lines().take(8).collect::<Vec<_>>(),
        [
            "portpair/PP1 deleted",
            "portpair/PP2 deleted",
            "portpair/PP3 deleted",
            "portpairgroup/PG1 deleted",
            "portpairgroup/PG2 deleted",
            "flowclassifier/FC1 deleted",
            "flowclassifier/FC1-v6 deleted",
            "portchain/PC1 deleted",
        ],
        "{out}"
    );
    assert_eq!(
        snapshot(&demo),
        before,
        "a dry-run delete changed something"
    );
    assert_eq!(members_used(&demo, 42200), [true, true, true]);

    // The real apply of the same file does what the dry run said.
    lab.sfcctl(&["apply", "-f", &file]).unwrap();
    assert_ne!(snapshot(&demo).epoch, before.epoch);
    assert_eq!(members_used(&demo, 42300), [false, true, true]);
}
