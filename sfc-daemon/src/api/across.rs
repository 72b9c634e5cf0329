//! `sfcctl stats`, `describe` and `trace` in a cluster: every node's counters, each asked of
//! that node's agent (this node's directly, the others' through etcd: `cluster::ask`), side by
//! side and summed; every node's trace records, merged in time order. Served from the
//! connection's own task, never from the agent's thread, so that two nodes asking each other
//! at once never wait on each other.

use std::{collections::BTreeMap, fmt::Write, time::Duration};

use etcd_client::{EventType, WatchOptions};

use futures::future::join_all;
use sfc_api::{
    counters::Row,
    health::{self, HopHealth},
    protocol::{NodeStats, Request, Response},
    trace::{TraceRecord, TraceSpec},
};
use sfc_config::{
    compile::{CounterLabel, Direction},
    model::{Kind, State},
};
use tokio::sync::mpsc;

use crate::{
    agent::run::AgentHandle,
    cluster::ask,
    observe::{health::WINDOW, metrics::direction},
};

/// Every alive node's stats (or only `only`'s), lost nodes named with why they have none.
pub async fn stats(
    asker: &ask::Asker,
    agent: &AgentHandle,
    chain: Option<String>,
    only: Option<String>,
) -> Response {
    let nodes = match asker.store.nodes().await {
        Ok(nodes) => nodes,
        // Without etcd, this node's counters are all there is to show, and it says so.
        Err(e) => {
            let local = agent.call(Request::Stats { chain, node: None }).await;
            if !local.ok {
                return local;
            }
            let here = NodeStats {
                node: asker.node.clone(),
                error: String::new(),
                stats: local,
            };
            let others = NodeStats {
                node: "other nodes".into(),
                error: e.to_string(),
                stats: Response::default(),
            };
            return summed(vec![here, others]);
        }
    };
    if let Some(name) = &only {
        if !nodes.iter().any(|n| &n.name == name) {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            return Response::failure(format!(
                "node {name:?} is not registered (registered nodes: {})",
                known.join(", ")
            ));
        }
    }
    let request = Request::Stats { chain, node: None };
    let asked = nodes
        .iter()
        .filter(|n| only.as_ref().is_none_or(|o| *o == n.name))
        .map(|n| {
            let request = request.clone();
            async move {
                let answer = if !n.alive {
                    Err("lost (its agent no longer renews its lease): no counters".to_string())
                } else if n.name == asker.node {
                    Ok(agent.call(request).await)
                } else {
                    ask::ask(&asker.store, &asker.node, &n.name, &request).await
                };
                let (error, stats) = match answer {
                    Ok(r) if r.ok => (String::new(), r),
                    Ok(r) => (r.message, Response::default()),
                    Err(e) => (e, Response::default()),
                };
                NodeStats {
                    node: n.name.clone(),
                    error,
                    stats,
                }
            }
        });
    let mut per_node = join_all(asked).await;
    per_node.sort_by(|a, b| a.node.cmp(&b.node));
    summed(per_node)
}

/// `describe` in a cluster: this node's description, then the object's counters as each
/// node counts them (an SF's on the node it is on).
pub async fn describe(
    asker: &ask::Asker,
    agent: &AgentHandle,
    state: &State,
    kind: Kind,
    name: String,
) -> Response {
    let mut response = agent
        .call(Request::Describe {
            kind,
            name: name.clone(),
        })
        .await;
    if response.ok {
        let chain = (kind == Kind::PortChain).then(|| name.clone());
        let all = stats(asker, agent, chain, None).await;
        response
            .message
            .push_str(&counters_by_node(&all, state, kind, &name));
    }
    response
}

/// The rows of `all` (every node's stats) that are about object `name`.
fn counters_by_node(all: &Response, state: &State, kind: Kind, name: &str) -> String {
    let mut out = String::from("\nCounters on each node (asked just now):\n");
    let hop_line = |out: &mut String, node: &str, h: &HopHealth| {
        let _ = writeln!(
            out,
            "  {node}\thop {} {}\tin {} ({:.1}/s)\tout {} ({:.1}/s)\t{}",
            h.hop,
            direction(h.direction),
            h.into_packets,
            h.into_pps,
            h.from_packets,
            h.from_pps,
            h.state.as_str()
        );
    };
    let pairs: Vec<&str> = match kind {
        Kind::PortPair => vec![name],
        Kind::PortPairGroup => state
            .port_pair_groups
            .get(name)
            .map(|g| g.port_pairs.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for n in &all.per_node {
        if !n.error.is_empty() {
            let _ = writeln!(out, "  {}\t{}", n.node, n.error);
            continue;
        }
        let s = &n.stats;
        let entered = s.chains.iter().filter(|r| {
            r.label.position == 0
                && match kind {
                    Kind::PortChain => r.label.chain == name,
                    Kind::FlowClassifier => r.label.classifier.as_deref() == Some(name),
                    _ => false,
                }
        });
        for r in entered {
            let _ = writeln!(
                out,
                "  {}\t{} entered {} by {}\t{} packets\t{} bytes",
                n.node,
                r.label.chain,
                direction(r.label.direction),
                r.label.classifier.as_deref().unwrap_or("-"),
                r.packets,
                r.bytes
            );
        }
        if kind == Kind::PortChain {
            for h in s.hops.iter().filter(|h| h.chain == name) {
                hop_line(&mut out, &n.node, h);
            }
        }
        for p in s.pairs.iter().filter(|p| pairs.contains(&p.pair.as_str())) {
            let _ = writeln!(
                out,
                "  {}\t{}\tin {} ({:.1}/s)\tout {} ({:.1}/s)\t{}",
                n.node,
                p.pair,
                p.into_packets,
                p.into_pps,
                p.from_packets,
                p.from_pps,
                p.state.as_str()
            );
        }
    }
    // The hops judged on every node's counters together.
    if all.per_node.len() > 1 {
        for h in all.hops.iter().filter(|h| h.chain == name) {
            hop_line(&mut out, "all", h);
        }
    }
    out
}

/// How long records are held back before they are sent in time order: other nodes' come in
/// batches, one per 200 ms, through etcd.
pub const TRACE_WINDOW: Duration = Duration::from_millis(600);
/// How long the other nodes have to start tracing before this one starts.
const TRACE_STARTS_WITHIN: Duration = Duration::from_secs(2);

/// The other nodes' part of a trace started here.
pub struct RemoteTraces {
    /// Their records, as they come.
    pub records: mpsc::Receiver<Vec<TraceRecord>>,
    /// Held while the trace runs: dropped, the other nodes' traces end.
    pub guard: Option<ask::LeaseGuard>,
    traced: Vec<String>,
    notes: Vec<String>,
}

impl RemoteTraces {
    /// The first answer's message: where the trace runs, and why not elsewhere.
    pub fn hello(&self, here: &str) -> String {
        let mut nodes = self.traced.clone();
        nodes.push(here.to_string());
        nodes.sort();
        let mut text = format!("tracing on {}", nodes.join(", "));
        for note in &self.notes {
            text.push_str("; ");
            text.push_str(note);
        }
        text
    }
}

/// Asks every other alive node to trace `spec` too, and to send its records here.
pub async fn trace_others(
    asker: &ask::Asker,
    spec: &TraceSpec,
    lease_seconds: Option<u64>,
) -> RemoteTraces {
    let (sender, records) = mpsc::channel(256);
    let mut remote = RemoteTraces {
        records,
        guard: None,
        traced: Vec::new(),
        notes: Vec::new(),
    };
    let store = &asker.store;
    let nodes = match store.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            remote.notes.push(format!("not on the other nodes: {e}"));
            return remote;
        }
    };
    let mut others = Vec::new();
    for n in nodes.into_iter().filter(|n| n.name != asker.node) {
        if n.alive {
            others.push(n.name);
        } else {
            remote.notes.push(format!("{}: lost, not traced", n.name));
        }
    }
    if others.is_empty() {
        return remote;
    }
    let mut guard = match ask::LeaseGuard::new(store).await {
        Ok(g) => g,
        Err(e) => {
            remote.notes.push(format!("not on the other nodes: {e}"));
            return remote;
        }
    };
    let base = ask::question_id(&asker.node);
    let prefix = format!("{}.", ask::reply_key(&base));
    // Watching before asking: no answer can come before the watch.
    let mut client = store.client();
    let watch = store
        .call(client.watch(prefix.clone(), Some(WatchOptions::new().with_prefix())))
        .await;
    let mut stream = match watch {
        Ok(s) => s,
        Err(e) => {
            remote.notes.push(format!("not on the other nodes: {e}"));
            return remote;
        }
    };
    let request = Request::Trace {
        spec: spec.clone(),
        lease_seconds,
    };
    for node in &others {
        let id = format!("{base}.{node}");
        if let Err(e) = ask::put_question(store, &asker.node, node, &id, guard.id(), &request).await
        {
            remote.notes.push(format!("{node}: not traced: {e}"));
        }
    }
    // Each node's first answer (does it trace?) comes here; its records go to the session.
    let (started, mut starts) = mpsc::channel::<(String, Response)>(others.len());
    guard.hold(tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            for kv in message
                .events()
                .iter()
                .filter(|e| e.event_type() == EventType::Put)
                .filter_map(|e| e.kv())
            {
                let Some((node, batch)) = kv
                    .key_str()
                    .ok()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .and_then(|k| k.split_once('/'))
                else {
                    continue;
                };
                if batch == "00000000" {
                    if let Ok(r) = serde_json::from_slice::<Response>(kv.value()) {
                        let _ = started.try_send((node.to_string(), r));
                    }
                    continue;
                }
                let batch: Vec<TraceRecord> = kv
                    .value()
                    .split(|b| *b == b'\n')
                    .filter_map(|line| serde_json::from_slice(line).ok())
                    .collect();
                // A client that reads too slowly loses records rather than stall the watch.
                if sender.try_send(batch).is_err() && sender.is_closed() {
                    return;
                }
            }
        }
    }));
    let mut waiting: BTreeMap<String, ()> = others.iter().map(|n| (n.clone(), ())).collect();
    let _ = tokio::time::timeout(TRACE_STARTS_WITHIN, async {
        while let Some((node, answer)) = starts.recv().await {
            if waiting.remove(&node).is_none() {
                continue;
            }
            if answer.ok {
                remote.traced.push(node);
            } else {
                remote.notes.push(format!("{node}: {}", answer.message));
            }
            if waiting.is_empty() {
                return;
            }
        }
    })
    .await;
    for node in waiting.into_keys() {
        remote.notes.push(format!(
            "{node}: no answer within {} s, not traced",
            TRACE_STARTS_WITHIN.as_secs()
        ));
    }
    remote.guard = Some(guard);
    remote
}

/// The nodes' answers with their counters and per-chain rows summed. One node's answer is
/// shown whole, as on a single node.
fn summed(per_node: Vec<NodeStats>) -> Response {
    let mut response = match per_node.as_slice() {
        [one] if one.error.is_empty() => one.stats.clone(),
        _ => Response {
            ok: true,
            ..Default::default()
        },
    };
    if per_node.len() > 1 {
        let mut counters: Vec<(String, u64)> = Vec::new();
        // In the order first seen.
        let mut chains: Vec<Row> = Vec::new();
        let mut index: BTreeMap<&CounterLabel, usize> = BTreeMap::new();
        for n in &per_node {
            for (name, value) in &n.stats.counters {
                match counters.iter_mut().find(|(c, _)| c == name) {
                    Some((_, sum)) => *sum += value,
                    None => counters.push((name.clone(), *value)),
                }
            }
            for row in &n.stats.chains {
                match index.get(&row.label) {
                    Some(&i) => {
                        chains[i].packets += row.packets;
                        chains[i].bytes += row.bytes;
                    }
                    None => {
                        index.insert(&row.label, chains.len());
                        chains.push(row.clone());
                    }
                }
            }
        }
        response.counters = counters;
        response.chains = chains;
        response.hops = hops_across(&per_node);
    }
    response.ok = true;
    response.per_node = per_node;
    response
}

/// Each hop's counters and rates summed over the nodes, judged together: a hop's packets may
/// go in on one node and come out on another.
fn hops_across(per_node: &[NodeStats]) -> Vec<HopHealth> {
    let mut hops: Vec<HopHealth> = Vec::new();
    let mut index: BTreeMap<(&str, Direction, u8), usize> = BTreeMap::new();
    for h in per_node.iter().flat_map(|n| &n.stats.hops) {
        match index.get(&(h.chain.as_str(), h.direction, h.hop)) {
            Some(&i) => {
                let sum = &mut hops[i];
                sum.into_packets += h.into_packets;
                sum.from_packets += h.from_packets;
                sum.into_pps += h.into_pps;
                sum.from_pps += h.from_pps;
            }
            None => {
                index.insert((h.chain.as_str(), h.direction, h.hop), hops.len());
                hops.push(h.clone());
            }
        }
    }
    // Each node's rates are over its own window of about this long.
    let window = WINDOW.as_secs_f64();
    for h in &mut hops {
        h.state = health::State::judge(
            (h.into_pps * window).round() as u64,
            (h.from_pps * window).round() as u64,
        );
    }
    hops
}

#[cfg(test)]
mod tests {
    use sfc_config::compile::Direction;

    use super::*;

    fn node(name: &str, steered: u64, entered: u64) -> NodeStats {
        let label = CounterLabel {
            chain: "PC1".into(),
            direction: Direction::Forward,
            position: 0,
            hops: 2,
            classifier: Some("FC1".into()),
        };
        NodeStats {
            node: name.into(),
            error: String::new(),
            stats: Response {
                ok: true,
                counters: vec![("steered".into(), steered), ("no_match".into(), 1)],
                chains: vec![Row {
                    label,
                    packets: entered,
                    bytes: entered * 100,
                }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn counters_and_chain_rows_are_summed_over_the_nodes_that_answered() {
        let lost = NodeStats {
            node: "n3".into(),
            error: "lost".into(),
            stats: Response::default(),
        };
        let r = summed(vec![node("n1", 5, 2), node("n2", 7, 0), lost]);
        assert!(r.ok);
        assert_eq!(
            r.counters,
            [("steered".to_string(), 12), ("no_match".to_string(), 2)]
        );
        assert_eq!(r.chains.len(), 1);
        assert_eq!((r.chains[0].packets, r.chains[0].bytes), (2, 200));
        assert_eq!(r.per_node.len(), 3);
    }

    fn hop(into_pps: f64, from_pps: f64) -> HopHealth {
        HopHealth {
            chain: "PC1".into(),
            direction: Direction::Forward,
            hop: 2,
            into_packets: (into_pps * 5.0) as u64,
            from_packets: (from_pps * 5.0) as u64,
            into_pps,
            from_pps,
            state: health::State::AcrossNodes,
        }
    }

    fn with_hop(name: &str, h: HopHealth) -> NodeStats {
        let mut n = node(name, 0, 0);
        n.stats.hops = vec![h];
        n
    }

    #[test]
    fn a_hop_entered_on_one_node_and_left_on_another_is_judged_on_both() {
        // Sent in on n1, out of the SF on n3: neither node alone can tell.
        let flowing = hops_across(&[
            with_hop("n1", hop(20.0, 0.0)),
            with_hop("n3", hop(0.0, 20.0)),
        ]);
        assert_eq!(flowing.len(), 1);
        assert_eq!(flowing[0].state, health::State::Ok);
        assert_eq!(
            (flowing[0].into_packets, flowing[0].from_packets),
            (100, 100)
        );
        let lost = hops_across(&[
            with_hop("n1", hop(20.0, 0.0)),
            with_hop("n3", hop(0.0, 0.5)),
        ]);
        assert_eq!(lost[0].state, health::State::BlackHole);
    }

    #[test]
    fn one_node_is_shown_whole() {
        let r = summed(vec![node("n2", 7, 3)]);
        assert_eq!(
            r.counters,
            [("steered".to_string(), 7), ("no_match".to_string(), 1)]
        );
        assert_eq!(r.per_node[0].node, "n2");
    }
}
