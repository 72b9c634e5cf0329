//! Health checks of the groups that ask for one (`healthCheck`): every interval, a probe goes
//! into each member's ingress (a packet socket on the host-side interface) and the datapath
//! records it where it comes back out of the SF's egress (`sfc_v12_probes`), then drops it.
//! A member whose probes stop coming back leaves its group's table, so that only its flows
//! move, to the others, by the same consistent hash; once they come back, it returns, for
//! new flows. One task probes every member of this node; the agent hears of each change.

mod frame;
pub mod health;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{HashMap, MapData};
use sfc_api::health::MemberHealth;
use sfc_config::{compile::Interfaces, model::State};
use tokio::sync::watch;
use tracing::warn;

use frame::{Probe, Sender};
use health::Thresholds;

/// One member to probe, on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pair: String,
    /// The host-side interface probes go out of, into the SF, with its MAC.
    pub ingress: String,
    pub ingress_ifindex: u32,
    pub host_mac: [u8; 6],
    /// The SF's NIC behind it: the probes' destination MAC.
    pub sf_mac: [u8; 6],
    /// Where probes come back out of the SF.
    pub egress: String,
    pub egress_ifindex: u32,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// The members of this node to probe, and those of groups with a health check that cannot be
/// probed, with why (they stay in their group).
pub fn targets(state: &State, interfaces: &Interfaces) -> (Vec<Target>, BTreeMap<String, String>) {
    let (mut out, mut unprobed) = (Vec::new(), BTreeMap::new());
    for (group, spec) in &state.port_pair_groups {
        let Some(check) = &spec.health_check else {
            continue;
        };
        let addresses = check
            .source
            .zip(check.destination)
            .or_else(|| chain_addresses(state, group));
        for pair in &spec.port_pairs {
            let Some(pp) = state.port_pairs.get(pair) else {
                continue;
            };
            let (Some(ingress), Some(egress)) = (
                interfaces.links.get(&pp.ingress),
                interfaces.links.get(&pp.egress),
            ) else {
                // On another node, or absent (then out of its group anyway).
                continue;
            };
            let sf_mac = pp
                .ingress_mac
                .as_deref()
                .and_then(sfc_config::validate::mac)
                .or_else(|| interfaces.peer_macs.get(&pp.ingress).copied());
            let why = match (addresses, sf_mac, ingress.mac) {
                (None, _, _) => "no address to probe with: no chain through the group has a classifier with source and destination prefixes; set healthCheck.source and healthCheck.destination",
                (_, None, _) => "the MAC of the SF's ingress NIC is not known; set the PortPair's ingressMac",
                (_, _, None) => "the ingress interface has no MAC",
                (Some((source, destination)), Some(sf_mac), Some(host_mac)) => {
                    out.push(Target {
                        pair: pair.clone(),
                        ingress: pp.ingress.clone(),
                        ingress_ifindex: ingress.index,
                        host_mac,
                        sf_mac,
                        egress: pp.egress.clone(),
                        egress_ifindex: egress.index,
                        source,
                        destination,
                        interval: Duration::from_millis(check.interval_ms.into()),
                        timeout: Duration::from_millis(check.timeout_ms.into()),
                        thresholds: Thresholds {
                            failures: check.failures,
                            successes: check.successes,
                        },
                    });
                    continue;
                }
            };
            unprobed.insert(pair.clone(), why.to_string());
        }
    }
    (out, unprobed)
}

/// The first addresses of the source and destination prefixes of the first classifier (chains
/// in name order) of a chain through `group` that has both: a packet its SFs forward.
fn chain_addresses(state: &State, group: &str) -> Option<(IpAddr, IpAddr)> {
    let first = |prefix: &Option<String>| -> Option<IpAddr> {
        prefix.as_deref()?.split('/').next()?.parse().ok()
    };
    state
        .port_chains
        .values()
        .filter(|c| c.port_pair_groups.iter().any(|g| g == group))
        .flat_map(|c| &c.flow_classifiers)
        .filter_map(|name| state.flow_classifiers.get(name))
        .find_map(|fc| {
            Some((
                first(&fc.source_ip_prefix)?,
                first(&fc.destination_ip_prefix)?,
            ))
        })
}

/// What the probing task needs: the datapath's record of returned probes, the token probes
/// carry, and the members to probe (the agent sends a new list after each change).
pub struct Prober {
    pub returned: HashMap<MapData, u32, u64>,
    pub token: u64,
    pub targets: watch::Receiver<Vec<Target>>,
}

/// A member being probed.
struct Probing {
    target: Target,
    health: MemberHealth,
    seq: u64,
    /// When the probe `seq` went out, until its outcome is known.
    sent_at: Option<Instant>,
    next: Instant,
}

/// How often due probes are sent and outcomes read.
const TICK: Duration = Duration::from_millis(10);
/// How often the agent hears of every member's health when nothing changed (for `describe`).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Probes until the agent goes; `report` gets every member's health after each change, and
/// every [`REPORT_EVERY`].
pub async fn run(mut p: Prober, report: impl Fn(BTreeMap<String, MemberHealth>)) {
    let sender = match Sender::new() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open a packet socket: no health checks");
            return;
        }
    };
    let mut probing: BTreeMap<String, Probing> = BTreeMap::new();
    let mut reported = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut changed = false;
        // Err: the agent is gone.
        let Ok(listed) = p.targets.has_changed() else {
            return;
        };
        if listed {
            let targets = p.targets.borrow_and_update().clone();
            let before: Vec<u32> = probing.values().map(|m| m.target.egress_ifindex).collect();
            changed |= follow(&mut probing, targets);
            // The datapath's record of interfaces no longer probed goes, so that the map
            // never fills with interfaces long gone.
            for ifindex in before {
                if !probing.values().any(|m| m.target.egress_ifindex == ifindex) {
                    let _ = p.returned.remove(&ifindex);
                }
            }
        }
        let now = Instant::now();
        for m in probing.values_mut() {
            let t = &m.target;
            if m.sent_at.is_some_and(|s| now >= s + t.timeout) {
                let outcome = match p.returned.get(&t.egress_ifindex, 0) {
                    Ok(seq) if seq == m.seq => Ok(()),
                    _ => Err(format!(
                        "none came out of {} within {} ms",
                        t.egress,
                        t.timeout.as_millis()
                    )),
                };
                changed |= health::record(&mut m.health, outcome, t.thresholds, SystemTime::now());
                m.sent_at = None;
            }
            if m.sent_at.is_none() && now >= m.next {
                m.seq += 1;
                m.next = now + t.interval;
                let probe = frame::build(&Probe {
                    sf_mac: t.sf_mac,
                    host_mac: t.host_mac,
                    source: t.source,
                    destination: t.destination,
                    token: p.token,
                    seq: m.seq,
                });
                match sender.send(t.ingress_ifindex, &probe) {
                    Ok(()) => m.sent_at = Some(now),
                    Err(e) => {
                        let why = format!("cannot send into {}: {e}", t.ingress);
                        changed |= health::record(
                            &mut m.health,
                            Err(why),
                            t.thresholds,
                            SystemTime::now(),
                        );
                    }
                }
            }
        }
        if changed || reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            report(
                probing
                    .iter()
                    .map(|(pair, m)| (pair.clone(), m.health.clone()))
                    .collect(),
            );
        }
    }
}

/// Takes a new list of members: those still listed keep their health (and, with the same
/// interfaces, their probe in flight); new ones start up. True when the set changed.
fn follow(probing: &mut BTreeMap<String, Probing>, targets: Vec<Target>) -> bool {
    let before: Vec<String> = probing.keys().cloned().collect();
    let mut next = BTreeMap::new();
    for target in targets {
        let pair = target.pair.clone();
        let m = match probing.remove(&pair) {
            Some(mut m) => {
                if m.target.egress_ifindex != target.egress_ifindex {
                    m.sent_at = None;
                }
                m.target = target;
                m
            }
            None => Probing {
                target,
                health: MemberHealth::starting(SystemTime::now()),
                seq: 0,
                sent_at: None,
                next: Instant::now(),
            },
        };
        next.insert(pair, m);
    }
    *probing = next;
    probing.keys().ne(before.iter())
}
