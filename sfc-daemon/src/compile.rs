//! Turns the desired state plus the interfaces present now into a dataplane image: the exact
//! map contents of one generation. Pure (no kernel writes), so it can run for `--dry-run`
//! and is compared with the last image to skip no-op updates.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::{
    action, ClassKey, Member, PortValue, TupleMask, Verdict, FLAG_ENTRY, MAX_TUPLES, RING_SIZE,
};

use crate::{
    capacity,
    classifier::{specificity, Match},
    document::{ConfigError, ConfigErrors},
    maglev,
    model::{Kind, State},
    netlink::Link,
    validate::{mac, validate, Origins, APPLIED},
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
    pub rings: Vec<Vec<Member>>,
    /// Interfaces that need the program: name -> ifindex.
    pub attach: BTreeMap<String, u32>,
    /// Things that are fine for now but worth saying (an interface not present yet).
    pub notes: Vec<String>,
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
    let err = |kind: Kind, name: &str, field: &str, message: String| ConfigError {
        file: origins
            .get(&(kind, name.to_string()))
            .cloned()
            .unwrap_or_else(|| APPLIED.to_string()),
        kind: kind.to_string(),
        name: name.to_string(),
        field: field.to_string(),
        message,
    };

    // Group tables: one per group that some chain uses (forward: into the members' ingress),
    // and one more per group of a symmetric chain (reverse: into their egress). Both come from
    // one Maglev table, so a flow's two directions meet the same instance.
    let used_groups: BTreeSet<&String> = state
        .port_chains
        .values()
        .flat_map(|c| &c.port_pair_groups)
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
    let reverse_slot: BTreeMap<&String, u32> = reverse_groups
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, (used_groups.len() + i) as u32))
        .collect();
    let mut reverse_rings = Vec::new();
    for group in &used_groups {
        let symmetric = reverse_groups.contains(group);
        let spec = &state.port_pair_groups[*group];
        let mut live: Vec<(&str, u32, Member, Member)> = Vec::new();
        for pp_name in &spec.port_pairs {
            let pp = &state.port_pairs[pp_name];
            let mut side = |iface: &String, configured: &Option<String>, field: &str| {
                let Some(link) = interfaces.links.get(iface) else {
                    image.notes.push(format!(
                        "PortPair {pp_name:?}: interface {iface:?} is not present; the member is skipped until it appears"
                    ));
                    return None;
                };
                let discovered = match configured {
                    Some(text) => mac(text),
                    None => interfaces.peer_macs.get(iface).copied(),
                };
                let Some(member_mac) = discovered else {
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
                };
                Some(Member {
                    ifindex: link.index,
                    mac: member_mac,
                    _pad: [0; 2],
                })
            };
            let Some(ingress) = side(&pp.ingress, &pp.ingress_mac, "spec.ingressMac") else {
                continue;
            };
            let egress = if !symmetric {
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
                match side(&pp.egress, &pp.egress_mac, "spec.egressMac") {
                    Some(m) => m,
                    None => continue,
                }
            };
            live.push((pp_name, pp.weight, ingress, egress));
        }
        let weights: Vec<(&str, u32)> = live.iter().map(|(n, w, _, _)| (*n, *w)).collect();
        let table = maglev::table(&weights, RING_SIZE);
        let ring = |pick: fn(&(&str, u32, Member, Member)) -> Member| -> Vec<Member> {
            if table.is_empty() {
                vec![Member::default(); RING_SIZE as usize]
            } else {
                table.iter().map(|&i| pick(&live[i])).collect()
            }
        };
        image.rings.push(ring(|m| m.2));
        if symmetric {
            reverse_rings.push(ring(|m| m.3));
        }
    }
    image.rings.extend(reverse_rings);

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
    let group_domain = |g: &String| GROUP_DOMAIN_BASE + slot[g];
    let reverse_domain = |g: &String| {
        let shared = state.port_pair_groups[g]
            .port_pairs
            .iter()
            .any(|pp| state.port_pairs[pp].ingress == state.port_pairs[pp].egress);
        if shared {
            group_domain(g)
        } else {
            GROUP_DOMAIN_BASE + reverse_slot[g]
        }
    };
    // Where a chain ends: redirected to a logical port (with the MAC of the NIC behind it,
    // when known), or handed to normal forwarding with the original destination MAC.
    let end = |chain_id: u16, hop: u8, port: Option<&String>| match port
        .and_then(|p| interfaces.links.get(p).map(|l| (p, l)))
    {
        Some((name, link)) => Verdict {
            chain_id,
            hop,
            action: action::DELIVER,
            deliver_ifindex: link.index,
            deliver_mac: interfaces.peer_macs.get(name).copied().unwrap_or_default(),
            ..Default::default()
        },
        None => Verdict {
            chain_id,
            hop,
            action: action::FORWARD,
            ..Default::default()
        },
    };

    let mut entries = Vec::new();
    for chain in state.port_chains.values() {
        let chain_id = chain.chain_id.unwrap_or(0) as u16;
        let hops = &chain.port_pair_groups;
        let n = hops.len();
        let steer = |hop: usize, slot: u32| Verdict {
            chain_id,
            hop: hop as u8,
            action: action::STEER,
            slot,
            lb_fields: state.port_pair_groups[&hops[hop]]
                .lb_fields
                .iter()
                .fold(0, |acc, f| acc | f.bit()),
            ..Default::default()
        };
        let entry = |v: Verdict| Verdict {
            flags: FLAG_ENTRY,
            ..v
        };
        for fc_name in &chain.flow_classifiers {
            let fc = &state.flow_classifiers[fc_name];
            let forward = &matches[fc_name];
            // Forward: enter at the source port, then from each group's egress to the next.
            let mut targets = vec![(
                forward.clone(),
                port_domain[&fc.logical_source_port],
                entry(steer(0, slot[&hops[0]])),
            )];
            for k in 0..n {
                let next = if k + 1 < n {
                    steer(k + 1, slot[&hops[k + 1]])
                } else {
                    end(chain_id, n as u8, fc.logical_destination_port.as_ref())
                };
                targets.push((forward.clone(), group_domain(&hops[k]), next));
            }
            // Reverse (symmetric chains): enter at the destination port, cross the same
            // groups backwards through their egress, end at the source port.
            if let (true, Some(ldp)) = (
                chain.chain_parameters.symmetric,
                fc.logical_destination_port.as_ref(),
            ) {
                let reverse = forward.reversed();
                targets.push((
                    reverse.clone(),
                    port_domain[ldp],
                    entry(steer(n - 1, reverse_slot[&hops[n - 1]])),
                ));
                for k in 0..n {
                    let next = if k > 0 {
                        steer(k - 1, reverse_slot[&hops[k - 1]])
                    } else {
                        end(chain_id, n as u8, Some(&fc.logical_source_port))
                    };
                    targets.push((reverse.clone(), reverse_domain(&hops[k]), next));
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
            errors.push(err(
                Kind::FlowClassifier,
                &culprit,
                "spec",
                format!(
                    "the classifiers entering at one port (or leaving one group) need {} distinct match shapes (prefix lengths and port-range blocks); at most {MAX_TUPLES} are supported: use fewer distinct prefix lengths or port ranges that are powers of two",
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
            n_tuples: list.len().min(MAX_TUPLES) as u32,
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
