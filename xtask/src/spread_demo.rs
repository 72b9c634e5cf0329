//! `cargo xtask demo --nodes 3`: the networking-sfc demo with its VMs and SFs on three nodes of
//! a cluster (the source VM and SF1 on n1, SF2 on n2, SF3 and the web server on n3), one etcd
//! started for it: the chain applied on one node, requests whose paths cross nodes, the group
//! changed from the other nodes, and one request traced on every node it crosses.

use std::thread;

use anyhow::{anyhow, bail, Result};
use sfc_lab::{
    demo::{self, request_from, Crossing, DST_V4, DST_V6, SFS},
    spread::{Spread, SF_NODE},
};

use crate::step;

/// The nodes' lease: the operator default.
const TTL: u64 = 10;

pub fn run(keep: bool, requests: usize) -> Result<()> {
    step("building three nodes (n1, n2, n3) in network namespaces, starting etcd and the agents");
    let spread = Spread::build("demo3", TTL)?;
    let chain = std::fs::read_to_string(demo::example_chain())?;
    step("sfcctl apply -f examples/chain.yaml (on n1)");
    let revision = spread.apply(1, &chain)?;
    println!("committed as revision {revision}; every node applied it");
    println!("\n$ sfcctl get nodes");
    print!("{}", sfcctl(&spread, 1, &["get", "nodes"])?);
    println!("\n$ sfcctl get portpairs");
    print!("{}", sfcctl(&spread, 1, &["get", "portpairs"])?);

    let mut failures = 0;
    step("HTTP requests from the source VM on n1 to the web server on n3");
    failures += requests_through(&spread, requests, &[0, 1])?;

    step("PG1 = {PP2} only, applied on n2: every request crosses n2's SF2, then n3's SF3");
    spread.apply(
        2,
        &chain.replace("portPairs: [PP1, PP2]", "portPairs: [PP2]"),
    )?;
    failures += requests_through(&spread, requests.div_ceil(2), &[1])?;

    step("PG1 = {PP1, PP2} again, applied on n3");
    spread.apply(3, &chain)?;
    failures += requests_through(&spread, requests.div_ceil(2), &[0, 1])?;

    step("one request traced across the nodes (one sfcctl trace, on n1)");
    trace_one_request(&spread)?;

    println!("\n$ sfcctl stats   (on n1: every node's counters)");
    print!("{}", sfcctl(&spread, 1, &["stats"])?);
    if keep {
        let lab = spread.lab();
        println!(
            "\nThe lab is up. Namespaces {0}-{{n1,n2,n3,u,src,dst,sf1,sf2,sf3}}; sockets in {1}/agent-nN/.\n  sfcctl --socket {1}/agent-n1/sfc.sock get nodes\n  ip netns exec {2} curl http://{DST_V4}/\nPress Enter to tear everything down.",
            lab.ns("").trim_end_matches('-'),
            lab.dir.display(),
            lab.ns("src"),
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    step("tearing down");
    drop(spread);
    if failures > 0 {
        bail!("{failures} request(s) did not cross exactly one PG1 member and then SF3");
    }
    println!(
        "demo on three nodes passed: every request crossed one PG1 member, then SF3, across nodes"
    );
    Ok(())
}

fn sfcctl(spread: &Spread, node: usize, args: &[&str]) -> Result<String> {
    spread.cluster.sfcctl(node, args).map_err(|e| anyhow!(e))
}

/// `n` requests over IPv4 and half as many over IPv6, each printed with its path; how many did
/// not cross exactly one PG1 member among `members` (indexes of [`SFS`]) and then SF3.
fn requests_through(spread: &Spread, n: usize, members: &[usize]) -> Result<usize> {
    let plan = std::iter::repeat_n(DST_V4, n).chain(std::iter::repeat_n(DST_V6, n.div_ceil(2)));
    let mut failures = 0;
    for (i, dst) in plan.enumerate() {
        let c = request_from(spread.lab(), dst, None)?;
        println!(
            "request {:>2}  GET http://{dst}/  status {}   path: {}",
            i + 1,
            c.status,
            path(&c)
        );
        let member = (0..2).find(|&m| c.forwarded[m] > 0);
        let ok = c.status == 200
            && c.forwarded[2] > 0
            && (c.forwarded[0] > 0) != (c.forwarded[1] > 0)
            && member.is_some_and(|m| members.contains(&m));
        if !ok {
            failures += 1;
        }
    }
    Ok(failures)
}

/// The SFs a request crossed, each with its node: `n1/sf1 -> n3/sf3`.
fn path(c: &Crossing) -> String {
    let crossed: Vec<String> = SFS
        .iter()
        .zip(SF_NODE)
        .zip(c.forwarded)
        .filter(|(_, n)| *n > 0)
        .map(|((sf, node), _)| format!("n{node}/{sf}"))
        .collect();
    if crossed.is_empty() {
        "direct (no SF)".into()
    } else {
        crossed.join(" -> ")
    }
}

/// Starts a trace of one HTTP flow on each node, sends one request from a fixed port, and
/// prints what each node saw of it.
fn trace_one_request(spread: &Spread) -> Result<()> {
    const PORT: u16 = 45123;
    let sport = PORT.to_string();
    let args = [
        "trace",
        "--src",
        demo::SRC_V4,
        "--dst",
        DST_V4,
        "--proto",
        "tcp",
        "--sport",
        &sport,
        "--duration",
        "4",
    ];
    let (request, trace) = thread::scope(|s| {
        let running = s.spawn(|| spread.cluster.sfcctl(1, &args));
        // Let the trace start on every node before the request.
        thread::sleep(std::time::Duration::from_millis(1500));
        let request = request_from(spread.lab(), DST_V4, Some(PORT));
        (request, running.join())
    });
    let request = request?;
    println!(
        "GET http://{DST_V4}/ from port {PORT}: status {}, path {}",
        request.status,
        path(&request)
    );
    let text = trace
        .map_err(|_| anyhow!("the trace panicked"))?
        .map_err(|e| anyhow!(e))?;
    println!("\n$ sfcctl trace --src {} --dst {DST_V4} --proto tcp --sport {PORT} --duration 4   (on n1)", demo::SRC_V4);
    print!("{text}");
    Ok(())
}
