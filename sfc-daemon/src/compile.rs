//! Turns the desired state plus the interfaces present now into a dataplane image: the exact
//! map contents of one generation. Pure (no kernel writes), so it can run for `--dry-run`
//! and is compared with the last image to skip no-op updates.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::{
    action, ClassKey, Member, PortValue, RingEntry, TupleMask, Verdict, COUNTERS_PER_GEN,
    FLAG_DELIVER_PEER, FLAG_ENTRY, FLAG_REVERSE, MAX_TUPLES, PORT_ENTRY, RING_SIZE, SLOT_PEER,
};

use crate::{
    capacity,
    classifier::{specificity, Match},
    document::ConfigErrors,
    maglev,
    model::{Kind, State},
    netlink::Link,
    validate::{mac, validate, Origins},
};

/// The interfaces of the node namespace, as the compiler needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    pub links: BTreeMap<String, Link>,
    /// MAC of the NIC behind each veth (its peer), where the kernel could tell.
    pub peer_macs: BTreeMap<String, [u8; 6]>,
}

impl Interfaces {
    /// Reads the current namespace's interfaces. Peer MACs are looked up for veths only.
    pub fn read() -> Result<Self, crate::netlink::NetlinkError> {
        let links = crate::netlink::links()?;
        let mut peer_macs = BTreeMap::new();
        for (name, link) in &links {
            // A peer that vanished between the two requests is simply not known yet.
            if let Ok(Some(mac)) = crate::netlink::peer_mac(link) {
                peer_macs.insert(name.clone(), mac);
            }
        }
        Ok(Self { links, peer_macs })
    }
}

/// The map contents of one generation (generation fields left at 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub ports: BTreeMap<u32, PortValue>,
    pub classify: BTreeMap<ClassKey, Verdict>,
    /// Group tables by slot, relative to the generation's first slot (the writer adds the
    /// generation base to the tables and to the verdicts that point at them).
    pub rings: Vec<Vec<RingEntry>>,
    /// The live members of each group, by group key: flow pins to anything else are stale.
    pub members: BTreeMap<u32, Vec<RingEntry>>,
    /// What counter `i + 1` counts (relative to the generation's first counter).
    pub counters: Vec<CounterLabel>,
    /// The SF-facing interfaces (member sides, taps included) by ifindex. Their counter slots
    /// are the writer's to fill in (`slot` fields here are 0).
    pub sides: BTreeMap<u32, Side>,
    /// Interfaces that need the program: name -> ifindex.
    pub attach: BTreeMap<String, u32>,
    /// Things that are fine for now but worth saying (an interface not present yet).
    pub notes: Vec<String>,
}

/// Which way a packet crosses a chain.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Forward,
    Reverse,
}

/// What one per-chain counter counts: packets of `chain` going `direction` that have crossed
/// `position` of its `hops` hops (0: entering; `hops`: leaving the chain).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CounterLabel {
    pub chain: String,
    pub direction: Direction,
    pub position: u8,
    pub hops: u8,
    /// At the entry (position 0): the classifier that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
}

/// An interface through which we send into, or receive from, an SF.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Side {
    pub pair: String,
    pub interface: String,
}

/// A veth whose other end is in another namespace: the datapath can hand packets straight to
/// that end (`bpf_redirect_peer` drops them when both ends share a namespace).
fn peer_in_other_namespace(link: &Link) -> bool {
    link.kind.as_deref() == Some("veth") && link.peer_nsid.is_some()
}

/// The stable key of a group for flow pins: the same in every generation and after a restart
/// (FNV-1a of its name; never 0).
pub fn group_key(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    hash.max(1)
}

/// A chain's steering hops in crossing order, each with the tap group (if any) that gets a
/// copy just before it, and the tap after the last hop.
fn hops_with_taps<'a>(
    groups: impl Iterator<Item = &'a String>,
    is_tap: &dyn Fn(&String) -> bool,
    taps: &BTreeMap<&String, Member>,
) -> (Vec<(&'a String, Option<Member>)>, Option<Member>) {
    let mut hops = Vec::new();
    let mut pending = None;
    for g in groups {
        if is_tap(g) {
            pending = taps.get(g).copied();
        } else {
            hops.push((g, pending.take()));
        }
    }
    (hops, pending)
}

struct Entry {
    domain: u32,
    mask: TupleMask,
    key: ClassKey,
    verdict: Verdict,
    classifier: String,
}

const GROUP_DOMAIN_BASE: u32 = 0x0001_0000;

/// Checks the whole state (all-or-nothing) and compiles it against `interfaces`.
pub fn compile(
    state: &State,
    interfaces: &Interfaces,
    origins: &Origins,
) -> Result<Image, ConfigErrors> {
    let matches = validate(state, origins)?;
    build(state, &matches, interfaces, origins)
}

fn build(
    state: &State,
    matches: &BTreeMap<String, Match>,
    interfaces: &Interfaces,
    origins: &Origins,
) -> Result<Image, ConfigErrors> {
    let mut errors = Vec::new();
    let mut image = Image::default();
    let err = |kind: Kind, name: &str, field: &str, message: String| {
        capacity::error(origins, kind, name, field, message)
    };

    // Group tables: one per (non-tap) group that some chain uses. Each entry holds both sides
    // of a member, so the two directions of a symmetric flow meet the same instance.
    let is_tap = |g: &String| state.port_pair_groups[g].tap_enabled;
    let used_groups: BTreeSet<&String> = state
        .port_chains
        .values()
        .flat_map(|c| &c.port_pair_groups)
        .filter(|g| !is_tap(g))
        .collect();
    let reverse_groups: BTreeSet<&String> = state
        .port_chains
        .values()
        .filter(|c| c.chain_parameters.symmetric)
        .flat_map(|c| &c.port_pair_groups)
        .collect();
    if let Some(e) = capacity::group_tables(state, origins) {
        return Err(ConfigErrors(vec![e]));
    }
    let slot: BTreeMap<&String, u32> = used_groups
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, i as u32))
        .collect();
    let mut keys: BTreeMap<u32, &String> = BTreeMap::new();
    for g in &used_groups {
        if let Some(other) = keys.insert(group_key(g), g) {
            errors.push(err(
                Kind::PortPairGroup,
                g,
                "metadata.name",
                format!("hashes to the same flow-pin key as PortPairGroup {other:?}; rename one of them"),
            ));
        }
    }
    // One side of a pair: its interface and the MAC of the SF's NIC behind it (required when
    // we send into it; a side we only receive from may have none).
    let mut side = |pp_name: &str,
                    iface: &String,
                    configured: &Option<String>,
                    field: &str,
                    send_into: bool| {
        let Some(link) = interfaces.links.get(iface) else {
            if send_into {
                image.notes.push(format!(
                    "PortPair {pp_name:?}: interface {iface:?} is not present; the member is skipped until it appears"
                ));
            }
            return None;
        };
        let discovered = match configured {
            Some(text) => mac(text),
            None => interfaces.peer_macs.get(iface).copied(),
        };
        if discovered.is_none() && send_into {
            errors.push(err(
                Kind::PortPair,
                pp_name,
                field,
                format!(
                    "the MAC of the SF behind {iface:?} cannot be discovered (it is not a veth); set {}",
                    field.trim_start_matches("spec.")
                ),
            ));
            return None;
        }
        image.sides.insert(
            link.index,
            Side {
                pair: pp_name.to_string(),
                interface: iface.clone(),
            },
        );
        Some(Member {
            ifindex: link.index,
            mac: discovered.unwrap_or_default(),
            slot: if peer_in_other_namespace(link) {
                SLOT_PEER
            } else {
                0
            },
        })
    };
    let mut rings = Vec::new();
    let mut members: BTreeMap<u32, Vec<RingEntry>> = BTreeMap::new();
    for group in &used_groups {
        let symmetric = reverse_groups.contains(group);
        let spec = &state.port_pair_groups[*group];
        let mut live: Vec<(&str, u32, RingEntry)> = Vec::new();
        for pp_name in &spec.port_pairs {
            let pp = &state.port_pairs[pp_name];
            let Some(ingress) = side(
                pp_name,
                &pp.ingress,
                &pp.ingress_mac,
                "spec.ingressMac",
                true,
            ) else {
                continue;
            };
            let egress = if !symmetric {
                // Only received from: counted, never sent into.
                side(pp_name, &pp.egress, &pp.egress_mac, "spec.egressMac", false);
                Member::default()
            } else if pp.egress == pp.ingress {
                Member {
                    mac: pp
                        .egress_mac
                        .as_deref()
                        .and_then(mac)
                        .unwrap_or(ingress.mac),
                    ..ingress
                }
            } else {
                match side(pp_name, &pp.egress, &pp.egress_mac, "spec.egressMac", true) {
                    Some(m) => m,
                    None => continue,
                }
            };
            live.push((pp_name, pp.weight, RingEntry { ingress, egress }));
        }
        let weights: Vec<(&str, u32)> = live.iter().map(|(n, w, _)| (*n, *w)).collect();
        let table = maglev::table(&weights, RING_SIZE);
        rings.push(if table.is_empty() {
            vec![RingEntry::default(); RING_SIZE as usize]
        } else {
            table.iter().map(|&i| live[i].2).collect()
        });
        members.insert(group_key(group), live.iter().map(|m| m.2).collect());
    }
    // A tap group's one pair: copies go into its ingress.
    let mut taps: BTreeMap<&String, Member> = BTreeMap::new();
    for chain in state.port_chains.values() {
        for g in chain.port_pair_groups.iter().filter(|g| is_tap(g)) {
            if taps.contains_key(g) {
                continue;
            }
            if let Some(pp_name) = state.port_pair_groups[g].port_pairs.first() {
                let pp = &state.port_pairs[pp_name];
                if let Some(m) = side(
                    pp_name,
                    &pp.ingress,
                    &pp.ingress_mac,
                    "spec.ingressMac",
                    true,
                ) {
                    taps.insert(g, m);
                }
            }
        }
    }
    image.rings = rings;
    image.members = members;

    // Classification domains: one per logical port (where chains start, forward or reverse),
    // and per group one for what leaves its members' egress and, for symmetric chains, one
    // for what leaves their ingress (the same one where a member uses one interface for both).
    let logical_ports: BTreeSet<&String> = state
        .port_chains
        .values()
        .flat_map(|c| {
            c.flow_classifiers
                .iter()
                .filter_map(|fc| state.flow_classifiers.get(fc))
                .flat_map(|fc| {
                    std::iter::once(&fc.logical_source_port).chain(
                        fc.logical_destination_port
                            .as_ref()
                            .filter(|_| c.chain_parameters.symmetric),
                    )
                })
        })
        .collect();
    let port_domain: BTreeMap<&String, u32> = logical_ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i as u32 + 1))
        .collect();
    if let Some(e) = capacity::entry_ports(&port_domain, GROUP_DOMAIN_BASE, state, origins) {
        return Err(ConfigErrors(vec![e]));
    }
    let group_domain = |g: &String| GROUP_DOMAIN_BASE + 2 * slot[g];
    let reverse_domain = |g: &String| {
        let shared = state.port_pair_groups[g]
            .port_pairs
            .iter()
            .any(|pp| state.port_pairs[pp].ingress == state.port_pairs[pp].egress);
        if shared {
            group_domain(g)
        } else {
            group_domain(g) + 1
        }
    };
    // Where a chain ends: redirected to a logical port (with the MAC of the NIC behind it,
    // when known), or handed to normal forwarding with the original destination MAC.
    let end =
        |port: Option<&String>| match port.and_then(|p| interfaces.links.get(p).map(|l| (p, l))) {
            Some((name, link)) => Verdict {
                action: action::DELIVER,
                flags: if peer_in_other_namespace(link) {
                    FLAG_DELIVER_PEER
                } else {
                    0
                },
                deliver_ifindex: link.index,
                deliver_mac: interfaces.peer_macs.get(name).copied().unwrap_or_default(),
                ..Default::default()
            },
            None => Verdict {
                action: action::FORWARD,
                ..Default::default()
            },
        };
    let lb_fields = |g: &String| {
        state.port_pair_groups[g]
            .lb_fields
            .iter()
            .fold(0, |acc, f| acc | f.bit())
    };

    // Entry counters are per classifier while they fit; past that, per chain (the per-hop
    // counters always are), so that any number of classifiers still applies.
    let needed_per_classifier: usize = state
        .port_chains
        .values()
        .map(|c| {
            let directions = if c.chain_parameters.symmetric { 2 } else { 1 };
            directions * (c.port_pair_groups.len() + c.flow_classifiers.len())
        })
        .sum();
    let per_classifier = needed_per_classifier < COUNTERS_PER_GEN as usize;
    if !per_classifier {
        image.notes.push(format!(
            "{needed_per_classifier} counters would be needed to count each classifier's hits; this node holds {}: hits are counted per chain",
            COUNTERS_PER_GEN - 1
        ));
    }
    let mut entries = Vec::new();
    for (chain_name, chain) in &state.port_chains {
        let chain_id = chain.chain_id.unwrap_or(0) as u16;
        let forward_hops = hops_with_taps(chain.port_pair_groups.iter(), &is_tap, &taps);
        let reverse_hops = hops_with_taps(chain.port_pair_groups.iter().rev(), &is_tap, &taps);
        let n = forward_hops.0.len();
        // Counters: one per (direction, position), position p = hops already crossed; at
        // the entry (p = 0), one per classifier.
        let mut counter = |direction: Direction, position: usize, classifier: Option<&String>| {
            image.counters.push(CounterLabel {
                chain: chain_name.clone(),
                direction,
                position: position as u8,
                hops: n as u8,
                classifier: classifier.cloned(),
            });
            image.counters.len() as u32
        };
        // (Entry counters, position 0, are per classifier when they fit: taken below.)
        let forward_counters: Vec<u32> = (0..=n)
            .map(|p| {
                if p > 0 || !per_classifier {
                    counter(Direction::Forward, p, None)
                } else {
                    0
                }
            })
            .collect();
        let reverse_counters: Vec<u32> = (0..=n)
            .map(|p| {
                if (p > 0 || !per_classifier) && chain.chain_parameters.symmetric {
                    counter(Direction::Reverse, p, None)
                } else {
                    0
                }
            })
            .collect();
        // The decision taken after `position` hops of `hops` (forward or reverse order).
        let decide = |hops: &(Vec<(&String, Option<Member>)>, Option<Member>),
                      position: usize,
                      reverse: bool,
                      end_port: Option<&String>,
                      counter: u32| {
            let (list, trailing_tap) = hops;
            let (mut verdict, tap) = match list.get(position) {
                Some((g, tap)) => (
                    Verdict {
                        hop: (if reverse { n - 1 - position } else { position }) as u8,
                        action: action::STEER,
                        slot: slot[*g],
                        group: group_key(g),
                        lb_fields: lb_fields(g),
                        ..Default::default()
                    },
                    *tap,
                ),
                None => (
                    Verdict {
                        hop: n as u8,
                        ..end(end_port)
                    },
                    *trailing_tap,
                ),
            };
            verdict.chain_id = chain_id;
            verdict.counter = counter;
            if reverse {
                verdict.flags |= FLAG_REVERSE;
            }
            if position == 0 {
                verdict.flags |= FLAG_ENTRY;
            }
            if let Some(tap) = tap {
                verdict.tap_ifindex = tap.ifindex;
                verdict.tap_mac = tap.mac;
            }
            verdict
        };
        for fc_name in &chain.flow_classifiers {
            let fc = &state.flow_classifiers[fc_name];
            let forward = &matches[fc_name];
            let ldp = fc.logical_destination_port.as_ref();
            // Forward: enter at the source port, then from each group's egress to the next.
            let mut targets = vec![(
                forward.clone(),
                port_domain[&fc.logical_source_port],
                decide(
                    &forward_hops,
                    0,
                    false,
                    ldp,
                    if per_classifier {
                        counter(Direction::Forward, 0, Some(fc_name))
                    } else {
                        forward_counters[0]
                    },
                ),
            )];
            for (k, (g, _)) in forward_hops.0.iter().enumerate() {
                targets.push((
                    forward.clone(),
                    group_domain(g),
                    decide(&forward_hops, k + 1, false, ldp, forward_counters[k + 1]),
                ));
            }
            // Reverse (symmetric chains): enter at the destination port, cross the same
            // groups backwards through their egress, end at the source port.
            if let (true, Some(ldp)) = (chain.chain_parameters.symmetric, ldp) {
                let reverse = forward.reversed();
                let lsp = Some(&fc.logical_source_port);
                targets.push((
                    reverse.clone(),
                    port_domain[ldp],
                    decide(
                        &reverse_hops,
                        0,
                        true,
                        lsp,
                        if per_classifier {
                            counter(Direction::Reverse, 0, Some(fc_name))
                        } else {
                            reverse_counters[0]
                        },
                    ),
                ));
                for (j, (g, _)) in reverse_hops.0.iter().enumerate() {
                    targets.push((
                        reverse.clone(),
                        reverse_domain(g),
                        decide(&reverse_hops, j + 1, true, lsp, reverse_counters[j + 1]),
                    ));
                }
            }
            for (m, domain, verdict) in targets {
                for (mask, key) in m.expand() {
                    entries.push(Entry {
                        domain,
                        mask,
                        key,
                        verdict,
                        classifier: fc_name.clone(),
                    });
                }
            }
        }
    }
    if image.counters.len() >= COUNTERS_PER_GEN as usize {
        errors.push(err(
            Kind::PortChain,
            "",
            "",
            format!(
                "the chains need {} counters (one per chain, direction and hop, plus one); this node holds at most {}: use fewer or shorter chains",
                image.counters.len() + 1,
                COUNTERS_PER_GEN
            ),
        ));
    }

    // Tuples per domain, most specific first.
    let mut tuples: BTreeMap<u32, Vec<TupleMask>> = BTreeMap::new();
    for e in &entries {
        let list = tuples.entry(e.domain).or_default();
        if !list.contains(&e.mask) {
            list.push(e.mask);
        }
    }
    for (domain, list) in tuples.iter_mut() {
        list.sort_by_key(|m| std::cmp::Reverse(specificity(m)));
        if list.len() > MAX_TUPLES {
            let culprit = entries
                .iter()
                .find(|e| e.domain == *domain && !list[..MAX_TUPLES].contains(&e.mask))
                .map(|e| e.classifier.clone())
                .unwrap_or_default();
            // Which port or group, so that each domain's line says something of its own.
            let place = port_domain
                .iter()
                .find(|(_, d)| **d == *domain)
                .map(|(p, _)| format!("entering at port {p}"))
                .or_else(|| {
                    slot.keys().find_map(|&g| {
                        if group_domain(g) == *domain {
                            Some(format!("leaving group {g}"))
                        } else if reverse_domain(g) == *domain {
                            Some(format!("leaving group {g} in reverse"))
                        } else {
                            None
                        }
                    })
                })
                .unwrap_or_else(|| "at one port".into());
            errors.push(err(
                Kind::FlowClassifier,
                &culprit,
                "spec",
                format!(
                    "the classifiers {place} need {} distinct match shapes (prefix lengths and port-range blocks); at most {MAX_TUPLES} are supported: use fewer distinct prefix lengths or port ranges that are powers of two",
                    list.len()
                ),
            ));
        }
    }

    let mut owner: BTreeMap<ClassKey, String> = BTreeMap::new();
    // The classifier whose entries go past the map's capacity, to name it.
    let mut overflow_at: Option<String> = None;
    for e in entries {
        let list = &tuples[&e.domain];
        let Some(index) = list.iter().position(|m| *m == e.mask) else {
            continue;
        };
        if index >= MAX_TUPLES {
            continue;
        }
        let key = ClassKey {
            tuple: index as u8,
            domain: e.domain,
            ..e.key
        };
        match image.classify.get(&key) {
            Some(existing) if *existing != e.verdict => {
                let other = owner.get(&key).cloned().unwrap_or_default();
                errors.push(err(
                    Kind::FlowClassifier,
                    &e.classifier,
                    "spec",
                    format!("matches exactly the same packets as FlowClassifier {other:?} but leads elsewhere; remove one of them"),
                ));
            }
            Some(_) => {}
            None => {
                image.classify.insert(key, e.verdict);
                if image.classify.len() == capacity::CLASSIFY_PER_GEN + 1 {
                    overflow_at = Some(e.classifier.clone());
                }
                owner.insert(key, e.classifier);
            }
        }
    }
    if let Some(e) =
        capacity::classifier_entries(image.classify.len(), overflow_at.as_deref(), origins)
    {
        errors.push(e);
    }

    // Ports: where each domain's traffic arrives.
    let port_value = |domain: u32| -> Option<PortValue> {
        let list = tuples.get(&domain)?;
        let mut value = PortValue {
            domain,
            n_tuples: list.len().min(MAX_TUPLES) as u16,
            flags: if domain < GROUP_DOMAIN_BASE {
                PORT_ENTRY
            } else {
                0
            },
            slot: 0,
            _pad: 0,
            tuples: [TupleMask::default(); MAX_TUPLES],
        };
        for (slot, mask) in value.tuples.iter_mut().zip(list) {
            *slot = *mask;
        }
        Some(value)
    };
    let mut wanted: Vec<(&String, u32)> = port_domain.iter().map(|(p, d)| (*p, *d)).collect();
    for g in &used_groups {
        for pp in &state.port_pair_groups[*g].port_pairs {
            wanted.push((&state.port_pairs[pp].egress, group_domain(g)));
            if reverse_groups.contains(g) {
                wanted.push((&state.port_pairs[pp].ingress, reverse_domain(g)));
            }
        }
    }
    for (iface, domain) in wanted {
        let Some(value) = port_value(domain) else {
            continue;
        };
        match interfaces.links.get(iface) {
            Some(link) => {
                image.ports.insert(link.index, value);
                image.attach.insert(iface.clone(), link.index);
            }
            None => image.notes.push(format!(
                "interface {iface:?} is not present; steering from it starts when it appears"
            )),
        }
    }
    if let Some(e) = capacity::managed_interfaces(&image.attach, state, origins) {
        errors.push(e);
    }

    if errors.is_empty() {
        Ok(image)
    } else {
        Err(ConfigErrors(errors))
    }
}
