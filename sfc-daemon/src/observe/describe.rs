//! `sfcctl describe KIND NAME`: one object in context: what it refers to, the interfaces
//! behind it and their state (present, program attached, MAC), its counters, and a health
//! line per SF (see `health`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
};

use sfc_api::health::{MemberHealth, PairHealth, Probed, State as Health};
use sfc_config::{
    compile::{Direction, Interfaces},
    model::{FailMode, FlowClassifierSpec, Kind, State},
};

use crate::{
    dataplane::links::Links,
    observe::{health::Ejection, snapshot::Snapshot},
};

/// What describe needs besides the state.
pub struct Context<'a> {
    pub state: &'a State,
    pub interfaces: &'a Interfaces,
    /// Interfaces with the program attached.
    pub attached: &'a BTreeMap<String, u32>,
    /// In XDP mode, the XDP links: attached, and refused with why.
    pub xdp: Option<&'a Links>,
    pub observed: &'a Snapshot,
    /// Why the dataplane does not steer the state shown, when it does not.
    pub not_ready: Option<String>,
    /// The health of probed members, and the members of groups with a health check that
    /// cannot be probed, with why.
    pub probed: &'a BTreeMap<String, MemberHealth>,
    pub unprobed: &'a BTreeMap<String, String>,
    /// Members out of their groups as black holes (passive checks).
    pub ejected: &'a BTreeMap<String, Ejection>,
    /// Groups that fail open whose hop the dataplane skips now (no member is live).
    pub skipped: &'a BTreeSet<String>,
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Context<'_> {
    fn interface(&self, name: &str, configured_mac: Option<&String>) -> String {
        let Some(link) = self.interfaces.links.get(name) else {
            return format!("{name} (not present)");
        };
        let xdp =
            self.xdp.map(
                |links| match (links.attached().get(name), links.refused().get(name)) {
                    (Some(_), _) => " (XDP and TC)".to_string(),
                    (None, Some((_, why))) => format!(" (TC only, no XDP: {why})"),
                    (None, None) => String::new(),
                },
            );
        let attached = if self.attached.contains_key(name) {
            format!(", program attached{}", xdp.unwrap_or_default())
        } else {
            String::new()
        };
        let mac = configured_mac
            .cloned()
            .or_else(|| self.interfaces.peer_macs.get(name).copied().map(mac_text));
        let mac = mac
            .map(|m| format!(", MAC behind it {m}"))
            .unwrap_or_default();
        format!("{name} (present, ifindex {}{attached}{mac})", link.index)
    }

    fn pair_health(&self, pair: &str) -> Option<&PairHealth> {
        self.observed.pairs.iter().find(|p| p.pair == pair)
    }

    fn health_line(&self, pair: &str) -> String {
        match self.pair_health(pair) {
            Some(h) => format!(
                "in {} pkts ({:.1}/s), out {} pkts ({:.1}/s): {}{}",
                h.into_packets,
                h.into_pps,
                h.from_packets,
                h.from_pps,
                h.state.as_str(),
                if h.state == Health::BlackHole {
                    " (packets go in, none come out: is the SF forwarding?)"
                } else {
                    ""
                }
            ),
            None => "no traffic counted yet".into(),
        }
    }

    fn pair(&self, out: &mut String, name: &str, indent: &str) {
        let Some(pp) = self.state.port_pairs.get(name) else {
            let _ = writeln!(out, "{indent}{name}: not defined");
            return;
        };
        let _ = writeln!(out, "{indent}PortPair {name} (weight {})", pp.weight);
        let _ = writeln!(
            out,
            "{indent}  ingress: {}",
            self.interface(&pp.ingress, pp.ingress_mac.as_ref())
        );
        let _ = writeln!(
            out,
            "{indent}  egress:  {}",
            self.interface(&pp.egress, pp.egress_mac.as_ref())
        );
        let _ = writeln!(out, "{indent}  health:  {}", self.health_line(name));
        if let Some(line) = self.probe_line(name) {
            let _ = writeln!(out, "{indent}  probes:  {line}");
        }
        if let Some(line) = self.passive_line(name) {
            let _ = writeln!(out, "{indent}  passive: {line}");
        }
    }

    /// A member of a group whose health check is passive too: out as a black hole (since
    /// when, for how long still), or in.
    fn passive_line(&self, pair: &str) -> Option<String> {
        let check = self
            .state
            .group_of(pair)?
            .health_check
            .as_ref()
            .filter(|c| c.passive)?;
        Some(match self.ejected.get(pair) {
            Some(e) => format!(
                "DOWN for {} s, out of its group: a black hole (packets went in, none came out); back in {} s, judged afresh",
                e.since.elapsed().map_or(0, |d| d.as_secs()),
                e.until
                    .saturating_duration_since(std::time::Instant::now())
                    .as_secs()
            ),
            None => format!(
                "in its group (judged a black hole, out for {} s)",
                check.eject_ms / 1000
            ),
        })
    }

    /// A member's health check: in or out of its group, since when and why; `None` when its
    /// group has no health check.
    fn probe_line(&self, pair: &str) -> Option<String> {
        self.state.group_of(pair)?.health_check.as_ref()?;
        if let Some(why) = self.unprobed.get(pair) {
            return Some(format!("not probed (stays in its group): {why}"));
        }
        let Some(h) = self.probed.get(pair) else {
            // In a cluster, its own node probes it and says when it is out.
            return Some(match self.interfaces.failed.get(pair) {
                Some(why) => format!("DOWN, out of its group: {why}"),
                None => "not probed here: on another node (which probes it), or its interfaces are not present".into(),
            });
        };
        let ago = h.since.elapsed().map_or(0, |d| d.as_secs());
        let (state, effect) = match h.state {
            Probed::Up => ("up", "in its group"),
            Probed::Down => ("DOWN", "out of its group"),
        };
        Some(format!(
            "{state} for {ago} s, {effect}: {}; {} sent, {} came back",
            h.reason, h.probes_sent, h.probes_back
        ))
    }

    fn group(&self, out: &mut String, name: &str, indent: &str) {
        let Some(g) = self.state.port_pair_groups.get(name) else {
            let _ = writeln!(out, "{indent}{name}: not defined");
            return;
        };
        let lb = if g.lb_fields.is_empty() {
            "symmetric 5-tuple".to_string()
        } else {
            format!("{:?}", g.lb_fields).to_lowercase()
        };
        let tap = if g.tap_enabled { ", tap" } else { "" };
        let check = g.health_check.as_ref().map_or(String::new(), |c| {
            format!(
                ", health check: a probe every {} ms, out after {} missed ({} ms each), back after {}{}",
                c.interval_ms,
                c.failures,
                c.timeout_ms,
                c.successes,
                if c.passive { ", passive" } else { "" }
            )
        });
        let open = if g.fail_mode == FailMode::FailOpen {
            ", failOpen"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{indent}PortPairGroup {name} (lbFields: {lb}{tap}{open}{check})"
        );
        if self.skipped.contains(name) {
            let _ = writeln!(
                out,
                "{indent}  no member is live: failing open, its chains skip this hop (counted hop_skipped)"
            );
        }
        for pp in &g.port_pairs {
            self.pair(out, pp, &format!("{indent}  "));
        }
    }

    fn classifier_text(fc: &FlowClassifierSpec) -> String {
        let any = || "any".to_string();
        let proto = fc
            .protocol
            .as_ref()
            .map(|p| {
                serde_json::to_string(p)
                    .unwrap_or_default()
                    .replace('"', "")
            })
            .unwrap_or_else(any);
        let range = |r: &Option<sfc_config::model::PortRange>| match r {
            Some(sfc_config::model::PortRange::Number(n)) => format!(":{n}"),
            Some(sfc_config::model::PortRange::Text(t)) => format!(":{t}"),
            None => String::new(),
        };
        format!(
            "{:?} {proto} {}{} -> {}{}",
            fc.ethertype,
            fc.source_ip_prefix.clone().unwrap_or_else(any),
            range(&fc.source_port_range),
            fc.destination_ip_prefix.clone().unwrap_or_else(any),
            range(&fc.destination_port_range),
        )
    }

    fn entered(&self, chain: &str, classifier: &str) -> u64 {
        self.observed
            .chains
            .iter()
            .filter(|r| {
                r.label.chain == chain
                    && r.label.position == 0
                    && r.label.classifier.as_deref() == Some(classifier)
            })
            .map(|r| r.packets)
            .sum()
    }

    fn chain(&self, out: &mut String, name: &str) {
        let Some(c) = self.state.port_chains.get(name) else {
            return;
        };
        let _ = writeln!(
            out,
            "PortChain {name} (chain id {}, symmetric: {})",
            c.chain_id.unwrap_or(0),
            if c.chain_parameters.symmetric {
                "yes"
            } else {
                "no"
            }
        );
        let _ = writeln!(out, "  classifiers:");
        for fc_name in &c.flow_classifiers {
            let Some(fc) = self.state.flow_classifiers.get(fc_name) else {
                continue;
            };
            let _ = writeln!(
                out,
                "    {fc_name}: {}; enters at {}; {} packets matched",
                Self::classifier_text(fc),
                self.interface(&fc.logical_source_port, None),
                self.entered(name, fc_name)
            );
            if let Some(ldp) = &fc.logical_destination_port {
                let _ = writeln!(out, "      delivered to {}", self.interface(ldp, None));
            }
        }
        let _ = writeln!(out, "  hops:");
        let mut steering = 0;
        for g in &c.port_pair_groups {
            let tap = self
                .state
                .port_pair_groups
                .get(g)
                .is_some_and(|g| g.tap_enabled);
            if !tap {
                steering += 1;
            }
            let hop = self.observed.hops.iter().find(|h| {
                h.chain == name && h.direction == Direction::Forward && h.hop == steering
            });
            let line = match (tap, hop) {
                (true, _) => "copies only".to_string(),
                (false, Some(h)) => format!(
                    "in {} out {} ({:.1}/s in, {:.1}/s out): {}",
                    h.into_packets,
                    h.from_packets,
                    h.into_pps,
                    h.from_pps,
                    h.state.as_str()
                ),
                (false, None) => "no traffic counted yet".into(),
            };
            let number = if tap {
                "tap".to_string()
            } else {
                format!("{steering}.")
            };
            let _ = writeln!(out, "    {number} {g}: {line}");
            self.group(out, g, "       ");
        }
        let black_holes: Vec<&str> = c
            .port_pair_groups
            .iter()
            .filter_map(|g| self.state.port_pair_groups.get(g))
            .flat_map(|g| &g.port_pairs)
            .filter(|pp| {
                self.pair_health(pp)
                    .is_some_and(|h| h.state == Health::BlackHole)
            })
            .map(|s| s.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  health: {}",
            if black_holes.is_empty() {
                "no black hole".to_string()
            } else {
                format!("BLACK HOLE at {}", black_holes.join(", "))
            }
        );
    }

    /// The chains that use `pred`'s objects, by name.
    fn chains_using(&self, pred: impl Fn(&sfc_config::model::PortChainSpec) -> bool) -> Vec<&str> {
        self.state
            .port_chains
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn describe(&self, kind: Kind, name: &str) -> Result<String, String> {
        if self.state.get(kind, name).is_none() {
            return Err(format!(
                "{kind} {name:?} not found; `sfcctl get {}` lists them",
                kind.as_str().to_lowercase()
            ));
        }
        let mut out = String::new();
        match kind {
            Kind::PortChain => self.chain(&mut out, name),
            Kind::PortPairGroup => {
                self.group(&mut out, name, "");
                let used = self.chains_using(|c| c.port_pair_groups.iter().any(|g| g == name));
                let _ = writeln!(out, "  used by chains: {}", list(&used));
            }
            Kind::PortPair => {
                self.pair(&mut out, name, "");
                let groups: Vec<&str> = self
                    .state
                    .port_pair_groups
                    .iter()
                    .filter(|(_, g)| g.port_pairs.iter().any(|p| p == name))
                    .map(|(n, _)| n.as_str())
                    .collect();
                let _ = writeln!(out, "  in group: {}", list(&groups));
            }
            Kind::FlowClassifier => {
                let fc = &self.state.flow_classifiers[name];
                let _ = writeln!(out, "FlowClassifier {name}: {}", Self::classifier_text(fc));
                let _ = writeln!(
                    out,
                    "  logical source port: {}",
                    self.interface(&fc.logical_source_port, None)
                );
                if let Some(ldp) = &fc.logical_destination_port {
                    let _ = writeln!(
                        out,
                        "  logical destination port: {}",
                        self.interface(ldp, None)
                    );
                }
                let used = self.chains_using(|c| c.flow_classifiers.iter().any(|f| f == name));
                let matched: u64 = used.iter().map(|c| self.entered(c, name)).sum();
                let _ = writeln!(out, "  chain: {}; {matched} packets matched", list(&used));
            }
        }
        if let Some(why) = &self.not_ready {
            let _ = writeln!(
                out,
                "  NOT READY: the dataplane does not steer this state yet: {why}"
            );
        }
        Ok(out)
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
