//! Turns the desired state plus the interfaces present now into a dataplane image: the exact
//! map contents of one generation. Pure (no kernel writes), so it can run for `--dry-run`
//! and is compared with the last image to skip no-op updates.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use sfc_common::{
    action, remote_id, ClassEntry, ClassKey, Member, PortValue, RingEntry, SourcePorts, TunnelPeer,
    TupleMask, Verdict, COUNTERS_PER_GEN, FAMILY_V4, FAMILY_V6, FLAG_DELIVER_PEER, FLAG_ENTRY,
    FLAG_ONE_MEMBER, FLAG_PORTLESS, FLAG_REVERSE, FLAG_SKIPPED, MAX_TUPLES, PORT_BY_PATH,
    PORT_ENTRY, PORT_NEEDS_PORTS, PORT_PASS_UNPARSABLE, RING_SIZE, SIDE_EGRESS, SLOT_PEER,
};

pub mod capacity;
mod incremental;
pub mod maglev;
pub mod place;
mod tunnels;

pub use incremental::Compiled;
use place::{reverse_place, stops, Place};

use crate::{
    document::{ConfigError, ConfigErrors},
    model::{FailMode, Kind, PortPairSpec, State, Unparsable},
    validate::{
        classifier::{probe_order, Match},
        mac, validate, Origins,
    },
};

/// One interface of the node's namespace, as the agent read it from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub kind: Option<String>,
    /// For a veth: the peer's ifindex, in the namespace given by `peer_nsid` (or ours).
    pub peer_index: Option<u32>,
    pub peer_nsid: Option<i32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// With a carrier (IFF_LOWER_UP): for a veth, its peer is up too.
    pub running: bool,
    /// Its MTU (0: not known).
    pub mtu: u32,
}

/// The interfaces of the node namespace, as the compiler needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    pub links: BTreeMap<String, Link>,
    /// MAC of the NIC behind each veth (its peer), where the kernel could tell.
    pub peer_macs: BTreeMap<String, [u8; 6]>,
    /// In a cluster: this node's place in it.
    pub cluster: Option<Cluster>,
    /// Port pairs that fail their group's health check, each with why: left out of their
    /// group's table (their interfaces still run the program and count).
    pub failed: BTreeMap<String, String>,
}

/// What steering across the nodes of a cluster needs to know besides this node's links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// This node's name: to the others, its interfaces are `NODE/IFNAME`.
    pub node: String,
    /// The revision of the cluster's state being compiled (its low 32 bits travel with the
    /// packets between nodes).
    pub revision: u32,
    /// The interfaces of the other nodes that are alive, as `NODE/IFNAME`, each with its
    /// node's tunnel address.
    pub remote: BTreeMap<String, IpAddr>,
    /// The tunnel addresses of the other registered nodes, alive or not.
    pub peers: BTreeSet<IpAddr>,
}

impl Cluster {
    fn remote(&self, iface: &str) -> Option<IpAddr> {
        self.remote.get(iface).copied()
    }
}

/// A node's tunnel address as the datapath holds it.
pub fn tunnel_peer(addr: IpAddr) -> TunnelPeer {
    match addr {
        IpAddr::V4(a) => TunnelPeer {
            family: FAMILY_V4,
            addr: [u32::from_ne_bytes(a.octets()), 0, 0, 0],
            ..TunnelPeer::default()
        },
        IpAddr::V6(a) => {
            let o = a.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            TunnelPeer {
                family: FAMILY_V6,
                addr: [word(0), word(4), word(8), word(12)],
                ..TunnelPeer::default()
            }
        }
    }
}

/// The map contents of one generation (generation fields left at 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Image {
    pub ports: BTreeMap<u32, PortValue>,
    pub classify: BTreeMap<ClassKey, ClassEntry>,
    /// The source-port ranges of classify entries that have several (`ClassEntry::first` is
    /// an index here; the writer adds the generation base).
    pub source_ports: Vec<SourcePorts>,
    /// Group tables by slot, relative to the generation's first slot (the writer adds the
    /// generation base to the tables and to the verdicts that point at them).
    pub rings: Vec<Vec<RingEntry>>,
    /// What counter `i + 1` counts (relative to the generation's first counter).
    pub counters: Vec<CounterLabel>,
    /// The SF-facing interfaces (member sides, taps included) by the key of their counter slot
    /// ([`Side::key`]): an interface crossed by two pairs has two, one per pair. Their counter
    /// slots are the writer's to fill in (`slot` fields here are 0).
    pub sides: BTreeMap<u32, Side>,
    /// Interfaces that need the program: name -> ifindex.
    pub attach: BTreeMap<String, u32>,
    /// Things that are fine for now but worth saying (an interface not present yet).
    pub notes: Vec<String>,
    /// In a cluster: the revision of its state this image steers (the low 32 bits).
    pub revision: u32,
    /// Member sides and chain ends on other nodes (by [`remote_id`]): their node's address.
    pub remotes: BTreeMap<u32, TunnelPeer>,
    /// Member sides and chain ends on this node that other nodes send packets to (by
    /// [`remote_id`]), each with the key of its counter slot ([`Side::key`]; 0 for a chain
    /// end). The writer fills in the slot.
    pub landing: BTreeMap<u32, (Member, u32)>,
    /// The nodes tunnel packets are taken from.
    pub tunnel_peers: BTreeSet<TunnelPeer>,
    /// Groups some chain steers through that have no live member and fail open: their
    /// chains' verdicts skip their hop.
    pub skipped: BTreeSet<String>,
}

impl Image {
    /// Every verdict of the classify map: those of keys with one source-port range, and
    /// those of the stored ranges.
    pub fn verdicts(&self) -> impl Iterator<Item = &Verdict> {
        let only = self.classify.values().filter(|e| e.ranges == 0);
        only.map(|e| &e.only.verdict)
            .chain(self.source_ports.iter().map(|r| &r.verdict))
    }
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

/// An interface through which we send into, or receive from, an SF: one pair's use of it.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Side {
    pub pair: String,
    pub interface: String,
    pub role: Role,
}

/// Which field of its pair names a [`Side`]'s interface.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ingress,
    Egress,
    /// The pair's ingress and egress are this one interface.
    Both,
}

impl Role {
    fn of(pp: &PortPairSpec, ingress: bool) -> Role {
        match (pp.ingress == pp.egress, ingress) {
            (true, _) => Role::Both,
            (false, true) => Role::Ingress,
            (false, false) => Role::Egress,
        }
    }
}

impl Side {
    /// The key of the counter slot of interface `ifindex` used as `role` (`MAP_MEMBER_SLOTS`):
    /// an interface is the ingress of at most one pair and the egress of at most one, so the
    /// key tells the two pairs of crossed pairs apart. A packet sent into an ingress or leaving
    /// it in reverse counts in the ingress side's; sent into an egress in reverse or leaving it
    /// forward, in the egress side's.
    pub fn key(ifindex: u32, role: Role) -> u32 {
        match role {
            Role::Egress => ifindex | SIDE_EGRESS,
            Role::Ingress | Role::Both => ifindex,
        }
    }
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

/// Classification domains from here up belong to groups (two per group table); logical ports
/// are numbered below.
const GROUP_DOMAIN_BASE: u32 = 0x0001_0000;

/// Checks the whole state (all-or-nothing) and compiles it against `interfaces`.
pub fn compile(
    state: &State,
    interfaces: &Interfaces,
    origins: &Origins,
) -> Result<Image, ConfigErrors> {
    compile_cached(state, interfaces, origins).map(Compiled::into_image)
}

/// [`compile`], keeping what the compile found out that does not depend on the interfaces, so
/// that the same state can be compiled again on other interfaces redoing only the stages that
/// read them ([`Compiled::with_interfaces`]).
pub fn compile_cached(
    state: &State,
    interfaces: &Interfaces,
    origins: &Origins,
) -> Result<Compiled, ConfigErrors> {
    let matches = validate(state, origins)?;
    build(state, &matches, interfaces, origins)
}

/// Compiles a validated state in stages, each filling its part of the image and passing on what
/// later ones need. Errors are gathered so that one run reports all of them, except where a
/// stage cannot go on (too many group tables or logical ports): then that error alone. Only
/// the group tables (members' and taps' sides), the verdicts (taps, ends of chains) and
/// `attach` read the interfaces (see [`Compiled::with_interfaces`] for what that allows).
fn build(
    state: &State,
    matches: &BTreeMap<String, Match>,
    interfaces: &Interfaces,
    origins: &Origins,
) -> Result<Compiled, ConfigErrors> {
    let mut compiler = Compiler::new(state, interfaces, origins);
    let groups = compiler.group_tables()?;
    let domains = compiler.classifier_domains(&groups)?;
    let entries = compiler.entries(matches, &groups, &domains);
    let mut shapes = compiler.match_shapes(&entries, &domains);
    shapes.by_path = compiler.classify(entries, &shapes, &domains);
    let roots = compiler.roots(&domains);
    compiler.attach(&roots, &shapes);
    compiler.tunnels(&groups.taps);
    let image = compiler.finish()?;
    Ok(Compiled::new(image, state, interfaces, roots, shapes))
}

/// The inputs of one compilation, and the image and errors its stages fill in.
struct Compiler<'s> {
    state: &'s State,
    interfaces: &'s Interfaces,
    origins: &'s Origins,
    image: Image,
    errors: Vec<ConfigError>,
}

/// What the group tables leave for the later stages.
struct Groups<'s> {
    /// Each group some chain steers through (tap groups only get copies), with the slot of its
    /// table: in name order from 0.
    slot: BTreeMap<&'s String, u32>,
    /// The member each tap group sends its copies to (tap groups whose interface is usable).
    taps: BTreeMap<&'s String, Member>,
}

/// Where packets are classified: a domain per logical port and per group side, merged where
/// they share an interface ([`place::Domains`]).
struct Domains<'s> {
    /// Logical ports where chains start (forward, or reverse for symmetric chains): from 1, in
    /// name order.
    port: BTreeMap<&'s str, u32>,
    /// Per group in `Groups::slot`, in the same order: the domain of what leaves its members'
    /// egress, and of what leaves their ingress in reverse.
    group: BTreeMap<&'s str, GroupDomains>,
    /// Places that share an interface are one domain: the number of its representative.
    merged: place::Domains<'s>,
}

impl<'s> Domains<'s> {
    /// Where the packets of `domain` come from, as messages say it: every place merged in it,
    /// and the interfaces that merge them.
    fn name(&self, domain: u32) -> String {
        let Some(representative) = self.representative(domain) else {
            return "at one port".into();
        };
        let places = self.merged.places(representative);
        let names: Vec<String> = places.iter().map(|p| place_name(*p)).collect();
        match places.as_slice() {
            [_] => names.join(""),
            [first, .., last] => {
                let shared = self.merged.shared(*first, *last).join("\", \"");
                format!(
                    "{} (classified together on \"{shared}\", which their members share)",
                    names.join(" or ")
                )
            }
            [] => "at one port".into(),
        }
    }

    /// The place whose number `domain` is, among those that number a domain.
    fn representative(&self, domain: u32) -> Option<Place<'s>> {
        let ports = self.port.iter().map(|(p, d)| (Place::Port(p), *d));
        let groups = self.group.iter().flat_map(|(g, d)| {
            let reverse = match d.reverse == d.egress {
                true => Place::Egress(g),
                false => Place::Ingress(g),
            };
            [(Place::Egress(g), d.egress), (reverse, d.reverse)]
        });
        ports
            .chain(groups)
            .find(|(p, d)| *d == domain && self.merged.of(*p) == *p)
            .map(|(p, _)| p)
    }

    /// The domain of a place (see [`place::stops`]): that of the representative of the places
    /// merged with it. Every place of a valid state has one.
    fn of(&self, place: Place) -> u32 {
        match self.merged.of(place) {
            Place::Port(p) => self.port[p],
            Place::Egress(g) => self.group[g].egress,
            Place::Ingress(g) => self.group[g].reverse,
        }
    }
}

/// A place as messages say it.
fn place_name(place: Place) -> String {
    match place {
        Place::Port(p) => format!("entering at port {p}"),
        Place::Egress(g) => format!("leaving group {g}"),
        Place::Ingress(g) => format!("leaving group {g} in reverse"),
    }
}

#[derive(Clone, Copy)]
struct GroupDomains {
    egress: u32,
    /// The egress domain itself where any member of the group uses one interface for both
    /// sides ([`place::reverse_place`]): what comes out of that interface cannot be told apart
    /// by where it arrives.
    reverse: u32,
}

/// A chain's steering hops in crossing order, each with the tap (if any) that gets a copy just
/// before it, and the tap after the last hop.
struct Hops<'s> {
    steps: Vec<(&'s String, Option<Member>)>,
    trailing_tap: Option<Member>,
}

/// One chain as its classifier entries need it: both ways through it, and the counters that
/// are the chain's own (per hop; at the entry too when counted per chain, else 0 there).
struct ChainPlan<'s> {
    name: &'s String,
    chain_id: u16,
    symmetric: bool,
    /// Whether each classifier gets its own entry counters (see `counters_per_classifier`).
    per_classifier: bool,
    forward: Hops<'s>,
    reverse: Hops<'s>,
    forward_counters: Vec<u32>,
    reverse_counters: Vec<u32>,
}

/// One classifier map entry before its tuple is known.
struct Entry {
    domain: u32,
    /// The path of the classifier's packets going this way ([`path_of`]), and the domain
    /// where that path enters.
    path: u32,
    entered_at: u32,
    mask: TupleMask,
    key: ClassKey,
    /// The source ports it matches (`SourcePorts::ANY`: all).
    sport: (u16, u16),
    verdict: Verdict,
    classifier: String,
}

/// The match shapes (masks) of each domain, most specific first: the order they are probed in;
/// and the domains where every classifier lets unparsable traffic pass.
#[derive(Clone, Debug, Default)]
struct Shapes {
    masks: BTreeMap<u32, Vec<TupleMask>>,
    pass_unparsable: BTreeSet<u32>,
    /// Domains where paths meet that would take some packets different ways: their keys
    /// carry the path (see [`Compiler::classify`]).
    by_path: BTreeSet<u32>,
}

/// The interfaces where classified traffic arrives, each with its domain.
type Roots = Vec<(String, u32)>;

impl<'s> Compiler<'s> {
    fn new(state: &'s State, interfaces: &'s Interfaces, origins: &'s Origins) -> Self {
        Compiler {
            state,
            interfaces,
            origins,
            image: Image::default(),
            errors: Vec::new(),
        }
    }

    fn error(&mut self, kind: Kind, name: &str, field: &str, message: String) {
        self.errors
            .push(capacity::error(self.origins, kind, name, field, message));
    }

    /// The tunnel address of the node `iface` is on, when that is another node that is alive.
    fn remote(&self, iface: &str) -> Option<IpAddr> {
        self.interfaces.cluster.as_ref()?.remote(iface)
    }

    fn is_tap(&self, group: &String) -> bool {
        self.state.port_pair_groups[group].tap_enabled
    }

    fn finish(self) -> Result<Image, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(self.image)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    // Stage 1: group tables.

    /// One table (Maglev ring) per group that some chain steers through, so that each flow
    /// keeps its instance while members come and go; each entry holds both sides of a member,
    /// so that the two directions of a symmetric flow meet the same instance. Also the live
    /// members (flow pins to others are stale) and the members tap groups copy to. Refused
    /// whole, before anything else, when the tables do not fit.
    fn group_tables(&mut self) -> Result<Groups<'s>, ConfigErrors> {
        let state = self.state;
        let used: BTreeSet<&String> = state
            .port_chains
            .values()
            .flat_map(|c| &c.port_pair_groups)
            .filter(|g| !self.is_tap(g))
            .collect();
        // Groups of symmetric chains: reverse traffic is sent into their members' egress.
        let reverse: BTreeSet<&String> = state
            .port_chains
            .values()
            .filter(|c| c.chain_parameters.symmetric)
            .flat_map(|c| &c.port_pair_groups)
            .collect();
        if let Some(e) = capacity::group_tables(state, self.origins) {
            return Err(ConfigErrors(vec![e]));
        }
        let slot: BTreeMap<&String, u32> = used
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, i as u32))
            .collect();
        self.check_flow_pin_keys(&used);
        for group in &used {
            self.group_table(group, reverse.contains(group));
        }
        let taps = self.tap_members();
        Ok(Groups { slot, taps })
    }

    /// Flow pins are keyed by a hash of the group's name (stable across generations and
    /// restarts), so two groups in use must not share one.
    fn check_flow_pin_keys(&mut self, used: &BTreeSet<&String>) {
        let mut keys: BTreeMap<u32, &String> = BTreeMap::new();
        for g in used {
            if let Some(other) = keys.insert(group_key(g), g) {
                self.error(
                    Kind::PortPairGroup,
                    g,
                    "metadata.name",
                    format!("hashes to the same flow-pin key as PortPairGroup {other:?}; rename one of them"),
                );
            }
        }
    }

    /// One group's ring (indexes by slot follow name order) and live members. Members weigh as
    /// their weight; a group with no live member gets an empty table (`ifindex` 0), which the
    /// datapath reads as "no member".
    fn group_table(&mut self, group: &String, symmetric: bool) {
        let state = self.state;
        let mut live: Vec<(&str, u32, RingEntry)> = Vec::new();
        for pp_name in &state.port_pair_groups[group].port_pairs {
            let Some(entry) = self.member(pp_name, symmetric) else {
                continue;
            };
            if let Some(why) = self.interfaces.failed.get(pp_name) {
                self.image.notes.push(format!(
                    "PortPair {pp_name:?}: left out of PortPairGroup {group:?} while it fails its health check ({why})"
                ));
                continue;
            }
            live.push((pp_name, state.port_pairs[pp_name].weight, entry));
        }
        let weights: Vec<(&str, u32)> = live.iter().map(|(n, w, _)| (*n, *w)).collect();
        let table = maglev::table(&weights, RING_SIZE);
        if table.is_empty() {
            self.no_live_member(group);
            self.image
                .rings
                .push(vec![RingEntry::default(); RING_SIZE as usize]);
        } else {
            self.image
                .rings
                .push(table.iter().map(|&i| live[i].2).collect());
        }
    }

    /// A group without a live member: its chains drop their packets at its hop, or skip the
    /// hop when it fails open ([`Image::skipped`]). Said either way.
    fn no_live_member(&mut self, group: &String) {
        if self.state.port_pair_groups[group].fail_mode == FailMode::FailOpen {
            self.image.skipped.insert(group.clone());
            self.image.notes.push(format!(
                "PortPairGroup {group:?}: no member is live; it fails open: its chains skip its hop (counted hop_skipped)"
            ));
        } else {
            self.image.notes.push(format!(
                "PortPairGroup {group:?}: no member is live; its chains drop their packets at its hop (failClosed; counted no_member)"
            ));
        }
    }

    /// Both sides of one member, or `None` when it is skipped (an interface is absent, or one
    /// we send into has no MAC). Only symmetric chains send into the egress side; one-way chains
    /// only receive from it (counted, never sent into).
    fn member(&mut self, pp_name: &str, symmetric: bool) -> Option<RingEntry> {
        let pp = &self.state.port_pairs[pp_name];
        let ingress = self.side(
            pp_name,
            &pp.ingress,
            &pp.ingress_mac,
            "spec.ingressMac",
            true,
        )?;
        let egress = if !symmetric {
            // Only received from (counted, never sent into); but what the SF sends back comes
            // out of it to go on along the chain, so a member without it is no member yet:
            // traffic sent in would leave the SF unsteered, skipping the hops after it.
            self.side(pp_name, &pp.egress, &pp.egress_mac, "spec.egressMac", false)
                .or_else(|| {
                    self.image.notes.push(format!(
                        "PortPair {pp_name:?}: interface {:?} is not present; the member is skipped until it appears",
                        pp.egress
                    ));
                    None
                })?;
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
            self.side(pp_name, &pp.egress, &pp.egress_mac, "spec.egressMac", true)?
        };
        Some(RingEntry { ingress, egress })
    }

    /// One side of a pair: its interface and the MAC of the SF's NIC behind it (required when
    /// we send into it; a side we only receive from may have none). A side that is present is
    /// recorded in `sides`, for its counters.
    fn side(
        &mut self,
        pp_name: &str,
        iface: &String,
        configured: &Option<String>,
        field: &str,
        send_into: bool,
    ) -> Option<Member> {
        if self.remote(iface).is_some() {
            // On another node, which counts its traffic and knows its MAC.
            return Some(Member {
                ifindex: remote_id(iface),
                ..Member::default()
            });
        }
        let Some(link) = self.interfaces.links.get(iface) else {
            if send_into {
                self.image.notes.push(format!(
                    "PortPair {pp_name:?}: interface {iface:?} is not present; the member is skipped until it appears"
                ));
            }
            return None;
        };
        let discovered = match configured {
            Some(text) => mac(text),
            None => self.interfaces.peer_macs.get(iface).copied(),
        };
        if discovered.is_none() && send_into {
            self.error(
                Kind::PortPair,
                pp_name,
                field,
                format!(
                    "the MAC of the SF behind {iface:?} cannot be discovered (it is not a veth); set {}",
                    field.trim_start_matches("spec.")
                ),
            );
            return None;
        }
        let pp = &self.state.port_pairs[pp_name];
        let role = Role::of(pp, *iface == pp.ingress);
        self.image.sides.insert(
            Side::key(link.index, role),
            Side {
                pair: pp_name.to_string(),
                interface: iface.clone(),
                role,
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
    }

    /// A tap group's one pair: copies go into its ingress (on another node: sent there in the
    /// tunnel). Taps need no table. (A tap whose side is unusable is tried again, and noted
    /// again, for each chain that uses it.)
    fn tap_members(&mut self) -> BTreeMap<&'s String, Member> {
        let state = self.state;
        let mut taps: BTreeMap<&String, Member> = BTreeMap::new();
        for chain in state.port_chains.values() {
            let tap_groups = chain
                .port_pair_groups
                .iter()
                .filter(|g| state.port_pair_groups[*g].tap_enabled);
            for g in tap_groups {
                if taps.contains_key(g) {
                    continue;
                }
                if let Some(pp_name) = state.port_pair_groups[g].port_pairs.first() {
                    let pp = &state.port_pairs[pp_name];
                    if let Some(m) = self.side(
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
        taps
    }

    // Stage 2: classification domains.

    /// The same packet means different things depending on where it comes from, so each
    /// place is a domain of its own: one per logical port (where chains start, forward or
    /// reverse), and per group one for what leaves its members' egress and, for symmetric
    /// chains, one for what leaves their ingress; except that places whose packets arrive on
    /// one interface (crossed pairs) are one domain, numbered as the smallest of them
    /// ([`place::Domains`]; validation has made sure their classifiers do not meet). Refused
    /// alone when the logical ports would reach the groups' domains.
    fn classifier_domains(&self, groups: &Groups<'s>) -> Result<Domains<'s>, ConfigErrors> {
        let state = self.state;
        let mut logical_ports: BTreeSet<&str> = BTreeSet::new();
        for chain in state.port_chains.values() {
            for fc in &chain.flow_classifiers {
                let Some(spec) = state.flow_classifiers.get(fc) else {
                    continue;
                };
                for stop in stops(state, chain, spec) {
                    if let Place::Port(p) = stop.place {
                        logical_ports.insert(p);
                    }
                }
            }
        }
        let port: BTreeMap<&str, u32> = logical_ports
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i as u32 + 1))
            .collect();
        if let Some(e) = capacity::entry_ports(&port, GROUP_DOMAIN_BASE, state, self.origins) {
            return Err(ConfigErrors(vec![e]));
        }
        let group = groups
            .slot
            .iter()
            .map(|(&g, &slot)| {
                let egress = GROUP_DOMAIN_BASE + 2 * slot;
                let reverse = match reverse_place(state, g) {
                    Place::Egress(_) => egress,
                    _ => egress + 1,
                };
                (g.as_str(), GroupDomains { egress, reverse })
            })
            .collect();
        Ok(Domains {
            port,
            group,
            merged: place::Domains::new(state),
        })
    }

    /// Where a chain ends: redirected to a logical port (with the MAC of the NIC behind it,
    /// when known), or, when there is none or it is absent, handed to normal forwarding with
    /// the original destination MAC.
    fn end_of_chain(&self, port: Option<&String>) -> Verdict {
        let interfaces = self.interfaces;
        if let Some(p) = port.filter(|p| self.remote(p).is_some()) {
            return Verdict {
                action: action::DELIVER,
                deliver_ifindex: remote_id(p),
                ..Default::default()
            };
        }
        match port.and_then(|p| interfaces.links.get(p).map(|l| (p, l))) {
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
        }
    }

    // Stage 3: classifier entries and counters.

    /// For each chain and classifier, the entries that take a packet through the chain: at
    /// its entry, and again as it leaves each hop (the datapath keeps no per-packet chain
    /// state), forward and, for symmetric chains, reverse. Counters are allocated on the way.
    fn entries(
        &mut self,
        matches: &BTreeMap<String, Match>,
        groups: &Groups<'s>,
        domains: &Domains<'s>,
    ) -> Vec<Entry> {
        let per_classifier = self.counters_per_classifier();
        let index: BTreeMap<&String, usize> = self
            .state
            .flow_classifiers
            .keys()
            .enumerate()
            .map(|(i, name)| (name, i))
            .collect();
        let mut entries = Vec::new();
        for (name, chain) in &self.state.port_chains {
            let plan = self.chain_plan(name, groups, per_classifier);
            for fc_name in &chain.flow_classifiers {
                let forward = &matches[fc_name];
                let i = index[fc_name];
                entries
                    .extend(self.classifier_entries(&plan, fc_name, i, forward, groups, domains));
            }
        }
        self.check_counters();
        entries
    }

    /// Entry counters are per classifier while they fit; past that, per chain (the per-hop
    /// counters always are), so that any number of classifiers still applies.
    fn counters_per_classifier(&mut self) -> bool {
        let needed: usize = self
            .state
            .port_chains
            .values()
            .map(|c| {
                let directions = if c.chain_parameters.symmetric { 2 } else { 1 };
                directions * (c.port_pair_groups.len() + c.flow_classifiers.len())
            })
            .sum();
        let per_classifier = needed < COUNTERS_PER_GEN as usize;
        if !per_classifier {
            self.image.notes.push(format!(
                "{needed} counters would be needed to count each classifier's hits; this node holds {}: hits are counted per chain",
                COUNTERS_PER_GEN - 1
            ));
        }
        per_classifier
    }

    /// A chain's hops both ways, and its own counters: one per (direction, position), position
    /// p = hops already crossed; the entry's (p = 0) here only when counted per chain.
    fn chain_plan(
        &mut self,
        name: &'s String,
        groups: &Groups<'s>,
        per_classifier: bool,
    ) -> ChainPlan<'s> {
        let chain = &self.state.port_chains[name];
        let forward = self.hops(chain.port_pair_groups.iter(), &groups.taps);
        let reverse = self.hops(chain.port_pair_groups.iter().rev(), &groups.taps);
        let mut plan = ChainPlan {
            name,
            chain_id: chain.chain_id.unwrap_or(0) as u16,
            symmetric: chain.chain_parameters.symmetric,
            per_classifier,
            forward,
            reverse,
            forward_counters: Vec::new(),
            reverse_counters: Vec::new(),
        };
        let n = plan.forward.steps.len();
        plan.forward_counters = (0..=n)
            .map(|p| {
                if p > 0 || !per_classifier {
                    self.counter(&plan, Direction::Forward, p, None)
                } else {
                    0
                }
            })
            .collect();
        plan.reverse_counters = (0..=n)
            .map(|p| {
                if (p > 0 || !per_classifier) && plan.symmetric {
                    self.counter(&plan, Direction::Reverse, p, None)
                } else {
                    0
                }
            })
            .collect();
        plan
    }

    /// The steering hops among `groups` (in crossing order): a tap group is no hop, its copy
    /// is taken just before the next hop, or after the last.
    fn hops(
        &self,
        groups: impl Iterator<Item = &'s String>,
        taps: &BTreeMap<&'s String, Member>,
    ) -> Hops<'s> {
        let mut steps = Vec::new();
        let mut pending = None;
        for g in groups {
            if self.is_tap(g) {
                pending = taps.get(g).copied();
            } else {
                steps.push((g, pending.take()));
            }
        }
        Hops {
            steps,
            trailing_tap: pending,
        }
    }

    /// A new counter of `chain`; returns its number (from 1: 0 counts nothing).
    fn counter(
        &mut self,
        chain: &ChainPlan,
        direction: Direction,
        position: usize,
        classifier: Option<&String>,
    ) -> u32 {
        self.image.counters.push(CounterLabel {
            chain: chain.name.clone(),
            direction,
            position: position as u8,
            hops: chain.forward.steps.len() as u8,
            classifier: classifier.cloned(),
        });
        self.image.counters.len() as u32
    }

    /// One classifier's entries, at each of its [`stops`]: forward, entering at the source
    /// port, then leaving each group's egress for the next; reverse (symmetric chains),
    /// entering at the destination port, crossing the same groups backwards, ending at the
    /// source port. Each with the verdict of its position, and the counter of it: the
    /// classifier's own at the entry when counted per classifier.
    fn classifier_entries(
        &mut self,
        chain: &ChainPlan<'s>,
        fc_name: &String,
        classifier_index: usize,
        forward: &Match,
        groups: &Groups<'s>,
        domains: &Domains<'s>,
    ) -> Vec<Entry> {
        let state = self.state;
        let fc = &state.flow_classifiers[fc_name];
        let reversed = forward.reversed();
        let mut entries = Vec::new();
        for stop in stops(state, &state.port_chains[chain.name], fc) {
            let (m, end_port, counters) = match stop.direction {
                Direction::Forward => (
                    forward,
                    fc.logical_destination_port.as_ref(),
                    &chain.forward_counters,
                ),
                Direction::Reverse => (
                    &reversed,
                    Some(&fc.logical_source_port),
                    &chain.reverse_counters,
                ),
            };
            let counter = if stop.position == 0 && chain.per_classifier {
                self.counter(chain, stop.direction, 0, Some(fc_name))
            } else {
                counters[stop.position]
            };
            let verdict = self.verdict(
                chain,
                groups,
                stop.direction,
                stop.position,
                end_port,
                counter,
            );
            let mut verdict = verdict;
            if m.sport.is_none() && m.dport.is_none() {
                verdict.flags |= FLAG_PORTLESS;
            }
            let path = path_of(classifier_index, stop.direction);
            if stop.position == 0 {
                // Recorded with the flow where it enters (see `classify`).
                verdict.path = path;
            }
            let domain = domains.of(stop.place);
            let entered_at = match stop.direction {
                Direction::Forward => domains.port[fc.logical_source_port.as_str()],
                Direction::Reverse => fc
                    .logical_destination_port
                    .as_deref()
                    .map_or(0, |p| domains.port[p]),
            };
            let sport = m.sport.unwrap_or(SourcePorts::ANY);
            for (mask, key) in m.expand() {
                entries.push(Entry {
                    domain,
                    path,
                    entered_at,
                    mask,
                    key,
                    sport,
                    verdict,
                    classifier: fc_name.clone(),
                });
            }
        }
        entries
    }

    /// The decision taken after `position` hops of `chain` going `direction`: steer to the
    /// next hop, or end the chain at `end_port`; with the copy to the tap before it, if any.
    /// Hops are numbered as going forward, so that a hop number (as traces show it) names the
    /// same group both ways.
    fn verdict(
        &self,
        chain: &ChainPlan,
        groups: &Groups,
        direction: Direction,
        position: usize,
        end_port: Option<&String>,
        counter: u32,
    ) -> Verdict {
        let reverse = direction == Direction::Reverse;
        let entry = position == 0;
        let hops = if reverse {
            &chain.reverse
        } else {
            &chain.forward
        };
        let n = chain.forward.steps.len();
        // Hops whose group fails open without a live member are skipped: the packet gets the
        // verdict of the first hop after them (a tap before a skipped hop still gets its copy).
        let mut position = position;
        let mut skipped_tap = None;
        let mut skipped = false;
        while let Some((_, tap)) = hops
            .steps
            .get(position)
            .filter(|(g, _)| self.image.skipped.contains(*g))
        {
            skipped_tap = skipped_tap.or(*tap);
            skipped = true;
            position += 1;
        }
        let (mut verdict, tap) = match hops.steps.get(position) {
            Some((g, tap)) => (
                Verdict {
                    hop: (if reverse { n - 1 - position } else { position }) as u8,
                    action: action::STEER,
                    slot: groups.slot[*g],
                    group: group_key(g),
                    lb_fields: self.state.port_pair_groups[*g]
                        .lb_fields
                        .iter()
                        .fold(0, |acc, f| acc | f.bit()),
                    flags: if self.state.port_pair_groups[*g].port_pairs.len() == 1 {
                        FLAG_ONE_MEMBER
                    } else {
                        0
                    },
                    ..Default::default()
                },
                *tap,
            ),
            None => (
                Verdict {
                    hop: n as u8,
                    ..self.end_of_chain(end_port)
                },
                hops.trailing_tap,
            ),
        };
        verdict.chain_id = chain.chain_id;
        verdict.counter = counter;
        if reverse {
            verdict.flags |= FLAG_REVERSE;
        }
        if entry {
            verdict.flags |= FLAG_ENTRY;
        }
        if skipped {
            verdict.flags |= FLAG_SKIPPED;
        }
        if let Some(tap) = skipped_tap.or(tap) {
            verdict.tap_ifindex = tap.ifindex;
            verdict.tap_mac = tap.mac;
        }
        verdict
    }

    /// The counters map holds a fixed number per generation (counter 0 counts nothing).
    /// Counters are numbered from 1 and must stay below `COUNTERS_PER_GEN`; the error names
    /// the chain (in name order) whose counter is the first that does not fit.
    fn check_counters(&mut self) {
        let used = self.image.counters.len();
        let Some(first_over) = self.image.counters.get(COUNTERS_PER_GEN as usize - 1) else {
            return;
        };
        let chain = first_over.chain.clone();
        self.error(
            Kind::PortChain,
            &chain,
            "spec.portPairGroups",
            format!(
                "the chains need {} counters (one per chain, direction and hop, plus one), and this node holds at most {}; this chain's do not fit: use fewer or shorter chains",
                used + 1,
                COUNTERS_PER_GEN
            ),
        );
    }

    // Stage 4: match shapes and the classify map.

    /// Tuple space search probes each shape of a packet's domain in turn and the first hit
    /// wins: the shapes are sorted by [`probe_order`] (most specific first), which is the
    /// precedence between overlapping classifiers of one chain. The datapath probes at most
    /// `MAX_TUPLES`: a domain with more is an error naming its place.
    fn match_shapes(&mut self, entries: &[Entry], domains: &Domains) -> Shapes {
        let mut shapes = Shapes::default();
        let mut drop_unparsable = BTreeSet::new();
        for e in entries {
            let list = shapes.masks.entry(e.domain).or_default();
            if !list.contains(&e.mask) {
                list.push(e.mask);
            }
            // Unparsable traffic cannot be told apart by classifier: one that wants it dropped
            // decides for its whole port.
            if self.state.flow_classifiers[&e.classifier].unparsable == Unparsable::Pass {
                shapes.pass_unparsable.insert(e.domain);
            } else {
                drop_unparsable.insert(e.domain);
            }
        }
        shapes
            .pass_unparsable
            .retain(|d| !drop_unparsable.contains(d));
        for (domain, list) in shapes.masks.iter_mut() {
            list.sort_by_key(probe_order);
            if list.len() > MAX_TUPLES {
                self.too_many_shapes(*domain, list, entries, domains);
            }
        }
        shapes
    }

    /// The error for a domain with more shapes than are probed, naming the first classifier
    /// with a shape past the limit and, so that each domain's line says something of its own,
    /// the port or group the packets come from.
    fn too_many_shapes(
        &mut self,
        domain: u32,
        list: &[TupleMask],
        entries: &[Entry],
        domains: &Domains,
    ) {
        let culprit = entries
            .iter()
            .find(|e| e.domain == domain && !list[..MAX_TUPLES].contains(&e.mask))
            .map(|e| e.classifier.clone())
            .unwrap_or_default();
        let place = domains.name(domain);
        self.error(
            Kind::FlowClassifier,
            &culprit,
            "spec",
            format!(
                "the classifiers {place} need {} distinct match shapes (each combination of source and destination prefix lengths, protocol or not, and destination-port block size: 1, 16, 256, 4096 ports or any); at most {MAX_TUPLES} are probed: give these classifiers fewer distinct prefix lengths (e.g. /24 and /32 rather than /22, /24, /28 and /32)",
                list.len()
            ),
        );
    }

    /// The classify map: each entry keyed by its domain and the index of its shape there.
    /// Classifiers whose entries share a key are told apart by source port: each port goes to
    /// the one with the narrowest range that holds it, and among equal ranges to the one
    /// listed first in the chain (the entries come in that order), in every place alike.
    ///
    /// Where chains start (logical ports), classifiers of one chain going one way may overlap
    /// so (each counts its own hits); overlaps between chains, or the two directions of one,
    /// are refused by validation, and should one get here all the same it is an error, never
    /// a port silently given to one of them. Past the entry, the path a flow entered by is
    /// known (recorded with the flow): where paths that would take a packet different ways
    /// meet (chains sharing a group, classifiers of one chain that entered at different
    /// ports, the two directions through one interface), the domain's keys carry the path
    /// (`PORT_BY_PATH`), each path keeping its own verdicts; its keys without a path (for a
    /// flow whose record was lost) keep the verdict where all agree, and `PATH_UNKNOWN` (a
    /// drop) where they do not. Returns those domains. Passing a map's capacity is an error.
    fn classify(
        &mut self,
        entries: Vec<Entry>,
        shapes: &Shapes,
        domains: &Domains,
    ) -> BTreeSet<u32> {
        let chain_of: BTreeMap<&str, &str> = self
            .state
            .port_chains
            .iter()
            .flat_map(|(c, pc)| {
                pc.flow_classifiers
                    .iter()
                    .map(move |f| (f.as_str(), c.as_str()))
            })
            .collect();
        let same_way = |a: &Entry, b: &Entry| {
            chain_of.get(a.classifier.as_str()) == chain_of.get(b.classifier.as_str())
                && (a.verdict.flags ^ b.verdict.flags) & FLAG_REVERSE == 0
        };
        let mut by_path = BTreeSet::new();
        let mut clashes: Vec<(String, String, u32)> = Vec::new();
        let mut table = ClassifyTable::default();
        let keyed = KeyedEntries::new(entries, shapes, false);
        for key in &keyed.order {
            let sharers = &keyed.by_key[key];
            let entry_place = key.domain < GROUP_DOMAIN_BASE;
            let ranges = by_source_port(sharers, |holders| {
                let winner = holders[0];
                let apart = holders[1..].iter().find(|other| {
                    other.verdict != winner.verdict
                        && !(same_way(winner, other)
                            && (entry_place || winner.entered_at == other.entered_at))
                });
                match apart {
                    None => winner.verdict,
                    Some(other) if entry_place => {
                        clashes.push((
                            other.classifier.clone(),
                            winner.classifier.clone(),
                            key.domain,
                        ));
                        winner.verdict
                    }
                    Some(_) => {
                        by_path.insert(key.domain);
                        Verdict {
                            action: action::PATH_UNKNOWN,
                            ..Default::default()
                        }
                    }
                }
            });
            table.insert(*key, ranges, &sharers[0].classifier);
        }
        // Each path's own keys where paths meet.
        let keyed = KeyedEntries::new(
            keyed.into_entries().filter(|e| by_path.contains(&e.domain)),
            shapes,
            true,
        );
        for key in &keyed.order {
            let sharers = &keyed.by_key[key];
            let ranges = by_source_port(sharers, |holders| {
                if let Some(other) = holders[1..]
                    .iter()
                    .find(|o| o.verdict != holders[0].verdict)
                {
                    clashes.push((
                        other.classifier.clone(),
                        holders[0].classifier.clone(),
                        key.domain,
                    ));
                }
                holders[0].verdict
            });
            table.insert(*key, ranges, &sharers[0].classifier);
        }
        clashes.sort();
        clashes.dedup();
        for (classifier, other, domain) in clashes {
            let place = domains.name(domain);
            let message = format!("matches packets that FlowClassifier {other:?} matches too, {place}, and the two send them different ways; the datapath cannot tell there which way a packet goes: make them disjoint");
            self.error(Kind::FlowClassifier, &classifier, "spec", message);
        }
        self.image.classify = table.classify;
        self.image.source_ports = table.source_ports;
        let errors = [
            capacity::classifier_entries(
                self.image.classify.len(),
                table.classify_overflow_at.as_deref(),
                self.origins,
            ),
            capacity::source_port_ranges(
                self.image.source_ports.len(),
                table.ranges_overflow_at.as_deref(),
                self.origins,
            ),
        ];
        self.errors.extend(errors.into_iter().flatten());
        by_path
    }

    // Stage 5: per-interface roots.

    /// Where classified traffic arrives, with the domain it is classified in: logical ports
    /// first, then each group's members: egress, and ingress for symmetric chains
    /// ([`place::roots`], from which the domains were merged: an interface has one domain).
    /// Depends on the state alone (see [`Compiler::attach`] for the interfaces).
    fn roots(&self, domains: &Domains<'s>) -> Roots {
        let mut seen = BTreeSet::new();
        domains
            .merged
            .roots()
            .iter()
            .map(|&(iface, place)| (iface, domains.of(place)))
            .filter(|root| seen.insert(*root))
            .map(|(iface, domain)| (iface.to_string(), domain))
            .collect()
    }

    /// What the program needs on each root present: its domain and shapes (`ports`), and the
    /// program itself (`attach`). Absent roots are noted; places no classifier reaches need
    /// nothing.
    fn attach(&mut self, roots: &Roots, shapes: &Shapes) {
        for (iface, domain) in roots {
            let Some(value) = port_value(shapes, *domain) else {
                continue;
            };
            match self.interfaces.links.get(iface) {
                Some(link) => {
                    self.image.ports.insert(link.index, value);
                    self.image.attach.insert(iface.clone(), link.index);
                }
                // Another node's, steered there.
                None if self.remote(iface).is_some() => {}
                None => self.image.notes.push(format!(
                    "interface {iface:?} is not present; steering from it starts when it appears"
                )),
            }
        }
        if let Some(e) = capacity::managed_interfaces(&self.image.attach, self.state, self.origins)
        {
            self.errors.push(e);
        }
    }
}

/// The path of a classifier's packets going `direction`: never 0 (0 is "not known").
fn path_of(classifier_index: usize, direction: Direction) -> u32 {
    2 * classifier_index as u32 + u32::from(direction == Direction::Reverse) + 1
}

/// Entries grouped by their key (with its tuple and domain; with the entry's path when
/// `with_path`), keys in the order their first entry came, so that a capacity error names
/// the classifier that brought in the key past the limit.
struct KeyedEntries {
    by_key: HashMap<ClassKey, Vec<Entry>>,
    order: Vec<ClassKey>,
}

impl KeyedEntries {
    fn new(entries: impl IntoIterator<Item = Entry>, shapes: &Shapes, with_path: bool) -> Self {
        let mut keyed = KeyedEntries {
            by_key: HashMap::new(),
            order: Vec::new(),
        };
        for e in entries {
            let list = &shapes.masks[&e.domain];
            let Some(index) = list.iter().position(|m| *m == e.mask) else {
                continue;
            };
            if index >= MAX_TUPLES {
                continue;
            }
            let key = ClassKey {
                tuple: index as u8,
                domain: e.domain,
                path: if with_path { e.path } else { 0 },
                ..e.key
            };
            keyed
                .by_key
                .entry(key)
                .or_insert_with(|| {
                    keyed.order.push(key);
                    Vec::new()
                })
                .push(e);
        }
        keyed
    }

    /// The entries again, in the order they came in their keys' order.
    fn into_entries(mut self) -> impl Iterator<Item = Entry> {
        self.order
            .into_iter()
            .flat_map(move |k| self.by_key.remove(&k).unwrap_or_default())
    }
}

/// The classify map and its stored source-port ranges as they fill, with where each passed
/// its capacity.
#[derive(Default)]
struct ClassifyTable {
    classify: BTreeMap<ClassKey, ClassEntry>,
    source_ports: Vec<SourcePorts>,
    /// Lists of ranges shared by several keys (a classifier's destination-port blocks) are
    /// stored once.
    stored: HashMap<Vec<SourcePorts>, u32>,
    classify_overflow_at: Option<String>,
    ranges_overflow_at: Option<String>,
}

impl ClassifyTable {
    fn insert(&mut self, key: ClassKey, ranges: Vec<SourcePorts>, classifier: &str) {
        let entry = match ranges.as_slice() {
            [only] => ClassEntry {
                only: *only,
                ..Default::default()
            },
            _ => {
                let n = ranges.len() as u32;
                let first = match self.stored.get(&ranges) {
                    Some(&first) => first,
                    None => {
                        let first = self.source_ports.len() as u32;
                        self.source_ports.extend_from_slice(&ranges);
                        if self.ranges_overflow_at.is_none()
                            && self.source_ports.len() > capacity::SOURCE_PORTS_PER_GEN
                        {
                            self.ranges_overflow_at = Some(classifier.to_string());
                        }
                        self.stored.insert(ranges, first);
                        first
                    }
                };
                ClassEntry {
                    first,
                    ranges: n,
                    ..Default::default()
                }
            }
        };
        self.classify.insert(key, entry);
        if self.classify.len() == capacity::CLASSIFY_PER_GEN + 1 {
            self.classify_overflow_at = Some(classifier.to_string());
        }
    }
}

/// The source-port ranges of one classify key, sorted and disjoint, each with its verdict,
/// from the entries that share the key: `decide` gives the verdict of the ports a set of
/// entries hold, given those entries by precedence (the narrowest range first, among equals
/// the first in `sharers`' order). Adjacent ranges with the same verdict are merged; ports no
/// entry holds are left out.
fn by_source_port(
    sharers: &[Entry],
    mut decide: impl FnMut(&[&Entry]) -> Verdict,
) -> Vec<SourcePorts> {
    let mut by_precedence: Vec<&Entry> = sharers.iter().collect();
    by_precedence.sort_by_key(|e| e.sport.1 - e.sport.0);
    // A sweep over the ports where some range starts or ends, with the entries holding the
    // ports from there on, by precedence.
    let mut events: Vec<(u32, bool, usize)> = Vec::with_capacity(2 * sharers.len());
    for (i, e) in by_precedence.iter().enumerate() {
        events.push((e.sport.0 as u32, true, i));
        events.push((e.sport.1 as u32 + 1, false, i));
    }
    events.sort_unstable();
    let mut holding: BTreeSet<usize> = BTreeSet::new();
    let mut out: Vec<SourcePorts> = Vec::new();
    let mut k = 0;
    while k < events.len() {
        let at = events[k].0;
        while k < events.len() && events[k].0 == at {
            let (_, starts, i) = events[k];
            if starts {
                holding.insert(i);
            } else {
                holding.remove(&i);
            }
            k += 1;
        }
        if holding.is_empty() {
            continue;
        }
        let until = events.get(k).map_or(u16::MAX as u32, |e| e.0 - 1);
        let holders: Vec<&Entry> = holding.iter().map(|&i| by_precedence[i]).collect();
        let verdict = decide(&holders);
        match out.last_mut() {
            Some(last) if last.verdict == verdict && last.hi as u32 + 1 == at => {
                last.hi = until as u16
            }
            _ => out.push(SourcePorts {
                lo: at as u16,
                hi: until as u16,
                verdict,
            }),
        }
    }
    out
}

/// The `ports` value of an interface whose traffic is classified in `domain`: its shapes,
/// whether chains start there (`PORT_ENTRY`), whether unparsable traffic may pass
/// (`PORT_PASS_UNPARSABLE`) and whether a fragment of unknown ports is unparsable there
/// (`PORT_NEEDS_PORTS`). `None` when no entry uses the domain.
fn port_value(shapes: &Shapes, domain: u32) -> Option<PortValue> {
    let list = shapes.masks.get(&domain)?;
    let mut flags = 0;
    if domain < GROUP_DOMAIN_BASE {
        flags |= PORT_ENTRY;
    }
    if shapes.pass_unparsable.contains(&domain) {
        flags |= PORT_PASS_UNPARSABLE;
    }
    if list.iter().any(|m| m.uses_ports != 0) {
        flags |= PORT_NEEDS_PORTS;
    }
    if shapes.by_path.contains(&domain) {
        flags |= PORT_BY_PATH;
    }
    let mut value = PortValue {
        domain,
        n_tuples: list.len().min(MAX_TUPLES) as u16,
        flags,
        slot: 0,
        reverse_slot: 0,
        tuples: [TupleMask::default(); MAX_TUPLES],
    };
    for (slot, mask) in value.tuples.iter_mut().zip(list) {
        *slot = *mask;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FlowClassifierSpec;
    use crate::testing::{chain, group, pair, tap};
    use crate::validate::classifier::normalize;

    /// A classifier written as a YAML flow mapping, e.g. `{protocol: tcp, logicalSourcePort: p}`.
    pub(super) fn classifier(state: &mut State, name: &str, yaml: &str) {
        let spec: FlowClassifierSpec = serde_yaml_ng::from_str(yaml).unwrap();
        state.flow_classifiers.insert(name.into(), spec);
    }

    /// A veth whose peer is in another namespace, with the peer's MAC known: 02:00:00:00:00:index.
    pub(super) fn veth(interfaces: &mut Interfaces, name: &str, index: u32) {
        interfaces.links.insert(
            name.into(),
            Link {
                index,
                name: name.into(),
                mac: None,
                kind: Some("veth".into()),
                peer_index: Some(index + 1000),
                peer_nsid: Some(1),
                up: true,
                running: true,
                mtu: 1500,
            },
        );
        interfaces
            .peer_macs
            .insert(name.into(), [2, 0, 0, 0, 0, index as u8]);
    }

    /// An interface that is no veth: no MAC behind it can be discovered.
    pub(super) fn plain(interfaces: &mut Interfaces, name: &str, index: u32) {
        interfaces.links.insert(
            name.into(),
            Link {
                index,
                name: name.into(),
                mac: None,
                kind: None,
                peer_index: None,
                peer_nsid: None,
                up: true,
                running: true,
                mtu: 1500,
            },
        );
    }

    /// The classifiers' matches, checking that the state is valid.
    fn matches(state: &State) -> BTreeMap<String, Match> {
        validate(state, &Origins::new()).expect("a valid state")
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(|e| e.to_string()).collect()
    }

    /// The member of a veth made by `veth`.
    fn veth_member(index: u32) -> Member {
        Member {
            ifindex: index,
            mac: [2, 0, 0, 0, 0, index as u8],
            slot: SLOT_PEER,
        }
    }

    #[test]
    fn group_tables_hold_the_weighted_live_members_of_the_groups_in_use() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "a1", "a1-in", "a1-out");
        pair(&mut s, "a2", "a2-in", "a2-out");
        s.port_pairs.get_mut("a2").unwrap().weight = 3;
        pair(&mut s, "gone", "gone-in", "gone-out");
        pair(&mut s, "nomac", "nm-in", "nm-out");
        group(&mut s, "ga", &["a1", "a2", "gone", "nomac"]);
        pair(&mut s, "one", "one", "one");
        s.port_pairs.get_mut("one").unwrap().egress_mac = Some("02:00:00:00:00:55".into());
        group(&mut s, "gs", &["one"]);
        pair(&mut s, "e", "e-in", "e-out");
        group(&mut s, "empty", &["e"]);
        pair(&mut s, "t", "t-in", "t-out");
        tap(&mut s, "tap", "t");
        pair(&mut s, "u", "u-in", "u-out");
        group(&mut s, "unused", &["u"]);
        chain(&mut s, "c1", &["ga", "tap", "empty"], &[], false);
        chain(&mut s, "c2", &["gs"], &[], true);
        for (n, name) in ["a1-in", "a1-out", "a2-in", "a2-out", "one", "t-in"]
            .iter()
            .enumerate()
        {
            veth(&mut i, name, n as u32 + 1);
        }
        plain(&mut i, "nm-in", 9);
        matches(&s);
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &i, &origins);
        let groups = c.group_tables().expect("tables fit");

        // Tables for the groups chains steer through, in name order; none for taps or unused
        // groups.
        let slots: Vec<(&str, u32)> = groups.slot.iter().map(|(g, s)| (g.as_str(), *s)).collect();
        assert_eq!(slots, [("empty", 0), ("ga", 1), ("gs", 2)]);
        assert_eq!(c.image.rings.len(), 3);
        assert!(c.image.rings.iter().all(|r| r.len() == RING_SIZE as usize));
        // No live member: an empty table.
        assert!(c.image.rings[0].iter().all(|e| *e == RingEntry::default()));
        // One-way members: only the ingress is sent into. Weights 1 and 3.
        let a1 = RingEntry {
            ingress: veth_member(1),
            egress: Member::default(),
        };
        let a2 = RingEntry {
            ingress: veth_member(3),
            egress: Member::default(),
        };
        let ring = &c.image.rings[1];
        assert!(ring.iter().all(|e| *e == a1 || *e == a2));
        let share = ring.iter().filter(|e| **e == a2).count() as f64 / ring.len() as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        // Symmetric, one interface for both sides: the egress MAC as configured.
        let one = RingEntry {
            ingress: veth_member(5),
            egress: Member {
                mac: [2, 0, 0, 0, 0, 0x55],
                ..veth_member(5)
            },
        };
        assert!(c.image.rings[2].iter().all(|e| *e == one));
        assert_eq!(
            groups.taps.into_iter().collect::<Vec<_>>(),
            [(&"tap".to_string(), veth_member(6))]
        );
        // Every side present and usable, taps' and those only received from included, each
        // keyed by its interface and, for an egress that is not also its pair's ingress, the
        // egress bit.
        let sides: Vec<(u32, &str, Role)> = c
            .image
            .sides
            .iter()
            .map(|(key, side)| (*key, side.interface.as_str(), side.role))
            .collect();
        assert_eq!(
            sides,
            [
                (1, "a1-in", Role::Ingress),
                (3, "a2-in", Role::Ingress),
                (5, "one", Role::Both),
                (6, "t-in", Role::Ingress),
                (2 | SIDE_EGRESS, "a1-out", Role::Egress),
                (4 | SIDE_EGRESS, "a2-out", Role::Egress),
            ]
        );
        assert_eq!(
            c.image.notes,
            [
                "PortPair \"e\": interface \"e-in\" is not present; the member is skipped until it appears",
                "PortPairGroup \"empty\": no member is live; its chains drop their packets at its hop (failClosed; counted no_member)",
                "PortPair \"gone\": interface \"gone-in\" is not present; the member is skipped until it appears",
            ]
        );
        assert_eq!(
            messages(&c.errors),
            ["(applied state): PortPair \"nomac\": spec.ingressMac: the MAC of the SF behind \"nm-in\" cannot be discovered (it is not a veth); set ingressMac"]
        );
    }

    #[test]
    fn counters_past_the_limit_name_the_chain_where_they_run_out() {
        // 1100 chains of 32 hops (no classifiers: one counter per hop), each through 30 shared
        // groups and a pair of its own of 34 others, so that no two share their list.
        let mut s = State::default();
        let groups: Vec<String> = (0..64).map(|g| format!("g{g:02}")).collect();
        for g in &groups {
            pair(
                &mut s,
                &format!("p{g}"),
                &format!("{g}-in"),
                &format!("{g}-out"),
            );
            group(&mut s, g, &[format!("p{g}")]);
        }
        let extra = &groups[30..];
        let lists = extra
            .iter()
            .flat_map(|a| extra.iter().filter(move |b| *b != a).map(move |b| (a, b)));
        for (i, (a, b)) in lists.take(1100).enumerate() {
            let mut hops: Vec<&str> = groups[..30].iter().map(String::as_str).collect();
            hops.extend([a.as_str(), b.as_str()]);
            chain(&mut s, &format!("c{i:04}"), &hops, &[], false);
        }
        let origins = Origins::new();
        let errors = compile(&s, &Interfaces::default(), &origins).unwrap_err();
        // 33 counters a chain (32 hops, and one at the entry since counting per classifier
        // does not fit): the 32 768th, the first over, is one of c0992's.
        assert_eq!(
            messages(&errors.0),
            ["(applied state): PortChain \"c0992\": spec.portPairGroups: the chains need 36301 counters (one per chain, direction and hop, plus one), and this node holds at most 32768; this chain's do not fit: use fewer or shorter chains"]
        );
    }

    #[test]
    fn a_member_whose_egress_is_absent_is_skipped_until_it_appears() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "p", "p-in", "p-out");
        group(&mut s, "g", &["p"]);
        chain(&mut s, "c", &["g"], &[], false);
        veth(&mut i, "p-in", 1);
        matches(&s);
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &i, &origins);
        c.group_tables().expect("tables fit");
        // Traffic sent in would leave the SF where nothing steers it on.
        assert!(c.image.rings[0].iter().all(|e| *e == RingEntry::default()));
        assert_eq!(
            c.image.notes,
            [
                "PortPair \"p\": interface \"p-out\" is not present; the member is skipped until it appears",
                "PortPairGroup \"g\": no member is live; its chains drop their packets at its hop (failClosed; counted no_member)",
            ]
        );
        // Once it appears, the member is live.
        veth(&mut i, "p-out", 2);
        let mut c = Compiler::new(&s, &i, &origins);
        c.group_tables().expect("tables fit");
        assert!(c.image.rings[0].iter().all(|e| e.ingress.ifindex == 1));
        assert!(c.image.notes.is_empty());
    }

    #[test]
    fn classifier_domains_number_logical_ports_then_group_sides() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "p1", "in1", "out1");
        group(&mut s, "g1", &["p1"]);
        pair(&mut s, "p2", "x", "x");
        pair(&mut s, "p3", "in3", "out3");
        group(&mut s, "g2", &["p2", "p3"]);
        pair(&mut s, "p4", "in4", "out4");
        group(&mut s, "g3", &["p4"]);
        classifier(
            &mut s,
            "s1",
            "{sourceIpPrefix: 10.1.0.0/16, destinationIpPrefix: 10.2.0.0/16, logicalSourcePort: lp-b, logicalDestinationPort: lp-c}",
        );
        classifier(
            &mut s,
            "o1",
            "{logicalSourcePort: lp-a, logicalDestinationPort: lp-z}",
        );
        chain(&mut s, "sym", &["g1", "g2"], &["s1"], true);
        chain(&mut s, "ow", &["g3"], &["o1"], false);
        veth(&mut i, "lp-c", 7);
        veth(&mut i, "lp-b", 8);
        i.links.get_mut("lp-b").unwrap().peer_nsid = None;
        i.peer_macs.remove("lp-b");
        matches(&s);
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &i, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).expect("ports fit");

        // Logical ports from 1 in name order; a one-way chain's destination is none.
        let ports: Vec<(&str, u32)> = domains.port.iter().map(|(p, d)| (*p, *d)).collect();
        assert_eq!(ports, [("lp-a", 1), ("lp-b", 2), ("lp-c", 3)]);
        // Two domains per table slot; one for both sides of a group where a member uses one
        // interface for both.
        let group: Vec<(&str, u32, u32)> = domains
            .group
            .iter()
            .map(|(g, d)| (*g, d.egress, d.reverse))
            .collect();
        assert_eq!(
            group,
            [
                ("g1", GROUP_DOMAIN_BASE, GROUP_DOMAIN_BASE + 1),
                ("g2", GROUP_DOMAIN_BASE + 2, GROUP_DOMAIN_BASE + 2),
                ("g3", GROUP_DOMAIN_BASE + 4, GROUP_DOMAIN_BASE + 5),
            ]
        );
        // The end of a chain: into the peer's namespace, into a port of ours, or forwarded.
        let lp_c = "lp-c".to_string();
        let lp_b = "lp-b".to_string();
        let lp_a = "lp-a".to_string();
        assert_eq!(
            c.end_of_chain(Some(&lp_c)),
            Verdict {
                action: action::DELIVER,
                flags: FLAG_DELIVER_PEER,
                deliver_ifindex: 7,
                deliver_mac: [2, 0, 0, 0, 0, 7],
                ..Default::default()
            }
        );
        assert_eq!(
            c.end_of_chain(Some(&lp_b)),
            Verdict {
                action: action::DELIVER,
                deliver_ifindex: 8,
                ..Default::default()
            }
        );
        let forward = Verdict {
            action: action::FORWARD,
            ..Default::default()
        };
        assert_eq!(c.end_of_chain(Some(&lp_a)), forward);
        assert_eq!(c.end_of_chain(None), forward);
    }

    #[test]
    fn logical_ports_reaching_the_group_domains_are_refused_alone() {
        let mut s = State::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        let mut fcs = Vec::new();
        for n in 0..GROUP_DOMAIN_BASE {
            let name = format!("fc{n:05}");
            classifier(&mut s, &name, &format!("{{logicalSourcePort: p{n:05}}}"));
            fcs.push(name);
        }
        let refs: Vec<&str> = fcs.iter().map(|f| f.as_str()).collect();
        chain(&mut s, "c", &["g"], &refs, false);
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &interfaces, &origins);
        let groups = c.group_tables().unwrap();
        let Err(e) = c.classifier_domains(&groups) else {
            panic!("65 536 logical ports should be refused");
        };
        assert_eq!(
            messages(&e.0),
            ["(applied state): FlowClassifier \"fc65535\": spec.logicalSourcePort: \"p65535\" would be logical port 65536, and this node supports at most 65535; let classifiers share logical ports"]
        );
    }

    /// The chain of the entries tests: src -> g1 -> (tap t) -> g2 -> dst, symmetric.
    fn tapped_chain() -> (State, Interfaces) {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "p1", "in1", "out1");
        pair(&mut s, "p2", "in2", "out2");
        pair(&mut s, "pt", "tin", "tout");
        group(&mut s, "g1", &["p1"]);
        group(&mut s, "g2", &["p2"]);
        tap(&mut s, "t", "pt");
        for (name, dst) in [("a", "10.0.0.0/24"), ("b", "10.0.1.0/24")] {
            classifier(
                &mut s,
                name,
                &format!("{{destinationIpPrefix: {dst}, logicalSourcePort: src, logicalDestinationPort: dst}}"),
            );
        }
        chain(&mut s, "c", &["g1", "t", "g2"], &["a", "b"], true);
        for (n, name) in ["in1", "out1", "in2", "out2", "tin", "src", "dst"]
            .iter()
            .enumerate()
        {
            veth(&mut i, name, n as u32 + 1);
        }
        (s, i)
    }

    fn label(
        direction: Direction,
        position: u8,
        hops: u8,
        classifier: Option<&str>,
    ) -> CounterLabel {
        CounterLabel {
            chain: "c".into(),
            direction,
            position,
            hops,
            classifier: classifier.map(String::from),
        }
    }

    #[test]
    fn entries_walk_each_chain_both_ways_with_their_counters() {
        let (s, i) = tapped_chain();
        let matches = matches(&s);
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &i, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        let entries = c.entries(&matches, &groups, &domains);

        // The chain's per-hop counters first, then each classifier's entry counters.
        use Direction::{Forward, Reverse};
        assert_eq!(
            c.image.counters,
            [
                label(Forward, 1, 2, None),
                label(Forward, 2, 2, None),
                label(Reverse, 1, 2, None),
                label(Reverse, 2, 2, None),
                label(Forward, 0, 2, Some("a")),
                label(Reverse, 0, 2, Some("a")),
                label(Forward, 0, 2, Some("b")),
                label(Reverse, 0, 2, Some("b")),
            ]
        );
        assert!(c.image.notes.is_empty(), "{:?}", c.image.notes);
        // Classifier a: (domain, hop, action, slot, group, counter, flags, tap, deliver).
        let (dst, src) = (1, 2);
        let (g1, g2) = (GROUP_DOMAIN_BASE, GROUP_DOMAIN_BASE + 2);
        let (k1, k2) = (group_key("g1"), group_key("g2"));
        let (steer, deliver) = (action::STEER, action::DELIVER);
        let of_a: Vec<_> = entries
            .iter()
            .filter(|e| e.classifier == "a")
            .map(|e| {
                let v = &e.verdict;
                assert_eq!(v.chain_id, 1);
                (
                    e.domain,
                    v.hop,
                    v.action,
                    v.slot,
                    v.group,
                    v.counter,
                    v.flags & !FLAG_PORTLESS,
                    v.tap_ifindex,
                    v.deliver_ifindex,
                )
            })
            .collect();
        assert_eq!(
            of_a,
            [
                // Forward: enter at src to g1, leave g1 to g2 (copied to the tap first),
                // leave g2 to dst.
                // (Both groups have one member.)
                (src, 0, steer, 0, k1, 5, FLAG_ENTRY | FLAG_ONE_MEMBER, 0, 0),
                (g1, 1, steer, 1, k2, 1, FLAG_ONE_MEMBER, 5, 0),
                (g2, 2, deliver, 0, 0, 2, FLAG_DELIVER_PEER, 0, 7),
                // Reverse: enter at dst to g2 (hop 1, as going forward), leave g2 through its
                // ingress to the tap and g1 (hop 0), leave g1 to src.
                (
                    dst,
                    1,
                    steer,
                    1,
                    k2,
                    6,
                    FLAG_ENTRY | FLAG_REVERSE | FLAG_ONE_MEMBER,
                    0,
                    0
                ),
                (
                    g2 + 1,
                    0,
                    steer,
                    0,
                    k1,
                    3,
                    FLAG_REVERSE | FLAG_ONE_MEMBER,
                    5,
                    0
                ),
                (
                    g1 + 1,
                    2,
                    deliver,
                    0,
                    0,
                    4,
                    FLAG_REVERSE | FLAG_DELIVER_PEER,
                    0,
                    6
                ),
            ]
        );
        // The reverse entries match the swapped packet.
        let reverse = &entries
            .iter()
            .filter(|e| e.classifier == "a")
            .nth(3)
            .unwrap();
        assert_eq!(reverse.key, matches["a"].reversed().expand()[0].1);
        assert_eq!(entries.len(), 12);
    }

    #[test]
    fn a_group_failing_open_without_a_live_member_is_skipped_both_ways() {
        let (mut s, mut i) = tapped_chain();
        // g1's one member is absent.
        i.links.remove("in1");
        let hops_of_a = |s: &State| {
            let matches = matches(s);
            let origins = Origins::new();
            let mut c = Compiler::new(s, &i, &origins);
            let groups = c.group_tables().unwrap();
            let domains = c.classifier_domains(&groups).unwrap();
            let entries = c.entries(&matches, &groups, &domains);
            let of_a: Vec<_> = entries
                .iter()
                .filter(|e| e.classifier == "a")
                .map(|e| {
                    let v = &e.verdict;
                    (
                        e.domain,
                        v.hop,
                        v.action,
                        v.flags & (FLAG_SKIPPED | FLAG_ENTRY),
                        v.tap_ifindex,
                        v.deliver_ifindex,
                    )
                })
                .collect();
            (of_a, c.image.skipped, c.image.notes)
        };
        let (dst, src) = (1, 2);
        let (g1, g2) = (GROUP_DOMAIN_BASE, GROUP_DOMAIN_BASE + 2);
        let (steer, deliver) = (action::STEER, action::DELIVER);
        // Fail-closed (the default): the chain still steers into g1, which has no member.
        let (closed, skipped, notes) = hops_of_a(&s);
        assert_eq!(closed[0], (src, 0, steer, FLAG_ENTRY, 0, 0));
        assert!(skipped.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("\"g1\": no member is live")
                && n.contains("counted no_member")),
            "{notes:?}"
        );
        s.port_pair_groups.get_mut("g1").unwrap().fail_mode = FailMode::FailOpen;
        let (open, skipped, notes) = hops_of_a(&s);
        assert_eq!(skipped, BTreeSet::from(["g1".to_string()]));
        assert!(
            notes
                .iter()
                .any(|n| n.contains("it fails open: its chains skip its hop")),
            "{notes:?}"
        );
        let skip = FLAG_SKIPPED;
        assert_eq!(
            open,
            [
                // Forward: enter at src straight to g2 (with the tap's copy before it).
                (src, 1, steer, FLAG_ENTRY | skip, 5, 0),
                (g1, 1, steer, 0, 5, 0),
                (g2, 2, deliver, 0, 0, 7),
                // Reverse: leaving g2, g1 (hop 0) is skipped: to src, with the copy the tap
                // before g1 would have had.
                (dst, 1, steer, FLAG_ENTRY, 0, 0),
                (g2 + 1, 2, deliver, skip, 5, 6),
                (g1 + 1, 2, deliver, 0, 0, 6),
            ]
        );
    }

    #[test]
    fn entry_counters_fall_back_to_per_chain_when_per_classifier_would_not_fit() {
        // A symmetric chain of one group: 2 * (1 + classifiers) counters per classifier.
        let mut s = State::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        let mut fcs = Vec::new();
        for n in 0..16_383u32 {
            let name = format!("fc{n:05}");
            let dst = format!("10.0.{}.{}/32", n >> 8, n & 0xff);
            classifier(
                &mut s,
                &name,
                &format!("{{destinationIpPrefix: {dst}, logicalSourcePort: src, logicalDestinationPort: dst}}"),
            );
            fcs.push(name);
        }
        let refs: Vec<&str> = fcs.iter().map(|f| f.as_str()).collect();
        chain(&mut s, "c", &["g"], &refs[..16_382], true);
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        // 32 766 fit.
        let mut c = Compiler::new(&s, &interfaces, &origins);
        assert!(c.counters_per_classifier());
        assert!(c.image.notes.is_empty());
        // 32 768 do not.
        chain(&mut s, "c", &["g"], &refs, true);
        s.port_chains.get_mut("c").unwrap().chain_id = Some(1);
        let matches = matches(&s);
        let mut c = Compiler::new(&s, &interfaces, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        let entries = c.entries(&matches, &groups, &domains);
        assert_eq!(
            c.image.notes.last().unwrap(),
            "32768 counters would be needed to count each classifier's hits; this node holds 32767: hits are counted per chain"
        );
        use Direction::{Forward, Reverse};
        assert_eq!(
            c.image.counters,
            [
                label(Forward, 0, 1, None),
                label(Forward, 1, 1, None),
                label(Reverse, 0, 1, None),
                label(Reverse, 1, 1, None),
            ]
        );
        let (dst, src, g) = (1, 2, GROUP_DOMAIN_BASE);
        let counters: BTreeSet<(u32, u32)> = entries
            .iter()
            .map(|e| (e.domain, e.verdict.counter))
            .collect();
        assert_eq!(
            counters.into_iter().collect::<Vec<_>>(),
            [(dst, 3), (src, 1), (g, 2), (g + 1, 4)]
        );
        assert!(c.errors.is_empty());
    }

    /// Compiles `s` through the match shapes.
    fn through_shapes<'s>(
        s: &'s State,
        i: &'s Interfaces,
        origins: &'s Origins,
    ) -> (Compiler<'s>, Vec<Entry>, Shapes, Domains<'s>) {
        let matches = matches(s);
        let mut c = Compiler::new(s, i, origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        let entries = c.entries(&matches, &groups, &domains);
        let shapes = c.match_shapes(&entries, &domains);
        (c, entries, shapes, domains)
    }

    #[test]
    fn match_shapes_are_probed_most_specific_first() {
        let mut s = State::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        let fcs = [
            ("p16", "destinationIpPrefix: 10.0.0.0/16"),
            ("udp", "protocol: udp"),
            ("p32", "destinationIpPrefix: 10.2.0.1/32"),
            ("p24tcp", "protocol: tcp, destinationIpPrefix: 10.1.0.0/24"),
        ];
        for (name, fields) in fcs {
            classifier(
                &mut s,
                name,
                &format!("{{{fields}, logicalSourcePort: src}}"),
            );
        }
        chain(&mut s, "c", &["g"], &fcs.map(|(n, _)| n), false);
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        let (mut c, entries, shapes, domains) = through_shapes(&s, &interfaces, &origins);
        let matches = matches(&s);
        let mask = |name: &str| matches[name].expand()[0].0;
        let expected = vec![mask("p32"), mask("p24tcp"), mask("p16"), mask("udp")];
        let (src, g) = (1, GROUP_DOMAIN_BASE);
        assert_eq!(shapes.masks.keys().copied().collect::<Vec<_>>(), [src, g]);
        assert_eq!(shapes.masks[&src], expected);
        assert_eq!(shapes.masks[&g], expected);
        assert!(c.errors.is_empty());

        // Each key names its shape by its index in its domain's list.
        c.classify(entries, &shapes, &domains);
        assert_eq!(c.image.classify.len(), 8);
        for (tuple, name) in ["p32", "p24tcp", "p16", "udp"].iter().enumerate() {
            for domain in [src, g] {
                let key = ClassKey {
                    tuple: tuple as u8,
                    domain,
                    ..matches[*name].expand()[0].1
                };
                assert!(c.image.classify.contains_key(&key), "{name} in {domain}");
            }
        }
    }

    #[test]
    fn more_than_16_match_shapes_are_refused_in_each_place() {
        let mut s = State::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        let mut fcs = Vec::new();
        for len in 16..=32 {
            let name = format!("fc{len}");
            classifier(
                &mut s,
                &name,
                &format!("{{destinationIpPrefix: 10.0.0.0/{len}, logicalSourcePort: src, logicalDestinationPort: dst}}"),
            );
            fcs.push(name);
        }
        let refs: Vec<&str> = fcs.iter().map(|f| f.as_str()).collect();
        chain(&mut s, "c", &["g"], &refs, true);
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        let (mut c, entries, shapes, domains) = through_shapes(&s, &interfaces, &origins);
        // The /16 is the least specific: past the limit, so its classifier is named.
        let line = |place: &str| {
            format!("(applied state): FlowClassifier \"fc16\": spec: the classifiers {place} need 17 distinct match shapes (each combination of source and destination prefix lengths, protocol or not, and destination-port block size: 1, 16, 256, 4096 ports or any); at most 16 are probed: give these classifiers fewer distinct prefix lengths (e.g. /24 and /32 rather than /22, /24, /28 and /32)")
        };
        assert_eq!(
            messages(&c.errors),
            [
                line("entering at port dst"),
                line("entering at port src"),
                line("leaving group g"),
                line("leaving group g in reverse"),
            ]
        );
        assert!(shapes.masks.values().all(|list| list.len() == 17));
        // Entries of shapes past the limit are left out of the map.
        c.classify(entries, &shapes, &domains);
        assert_eq!(c.image.classify.len(), 4 * 16);
        assert!(c
            .image
            .classify
            .keys()
            .all(|k| (k.tuple as usize) < MAX_TUPLES));
    }

    #[test]
    fn identical_classifiers_of_one_chain_leave_their_packets_to_the_first_listed() {
        // Each counts its own hits at the entry, so their entry verdicts differ in the counter
        // alone: the first listed keeps the key. Past the entry they are the same and merge.
        let mut s = State::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        classifier(&mut s, "a", "{protocol: tcp, logicalSourcePort: src}");
        classifier(&mut s, "b", "{protocol: tcp, logicalSourcePort: src}");
        chain(&mut s, "c", &["g"], &["b", "a"], false);
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        let (mut c, entries, shapes, domains) = through_shapes(&s, &interfaces, &origins);
        c.classify(entries, &shapes, &domains);
        assert!(c.errors.is_empty(), "{:?}", messages(&c.errors));
        let counters: Vec<u32> = c.image.verdicts().map(|v| v.counter).collect();
        // b's entry (listed first: its own counter 2), and after the hop (the chain's 1).
        assert_eq!(counters, [2, 1]);
        assert_eq!(c.image.counters[1].classifier.as_deref(), Some("b"));
    }

    /// What the datapath finds for an IPv4 packet arriving at interface `ifindex` (as its
    /// `classify` does): the interface's shapes probed in order, the first hit wins.
    fn probe(
        image: &Image,
        ifindex: u32,
        packet: (u8, [u8; 4], [u8; 4], u16, u16),
    ) -> Option<Verdict> {
        probe_on_path(image, ifindex, 0, packet)
    }

    /// [`probe`], for a packet of a flow that entered by `path`.
    fn probe_on_path(
        image: &Image,
        ifindex: u32,
        path: u32,
        (proto, src, dst, sport, dport): (u8, [u8; 4], [u8; 4], u16, u16),
    ) -> Option<Verdict> {
        let port = &image.ports[&ifindex];
        let path = if port.flags & PORT_BY_PATH != 0 {
            path
        } else {
            0
        };
        let word = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
        let (src, dst) = (word(src), word(dst));
        let and = |a: [u32; 4], m: [u32; 4]| [a[0] & m[0], a[1] & m[1], a[2] & m[2], a[3] & m[3]];
        port.tuples[..port.n_tuples as usize]
            .iter()
            .enumerate()
            .filter(|(_, mask)| mask.family == sfc_common::FAMILY_V4)
            .find_map(|(i, mask)| {
                let key = ClassKey {
                    gen: 0,
                    tuple: i as u8,
                    family: sfc_common::FAMILY_V4,
                    proto: proto & mask.proto,
                    domain: port.domain,
                    path,
                    dport: dport & mask.dport,
                    _pad: 0,
                    src: and(src, mask.src),
                    dst: and(dst, mask.dst),
                };
                image
                    .classify
                    .get(&key)
                    .and_then(|entry| source_port(image, entry, sport))
            })
    }

    /// The verdict of a classify entry for a source port, as the datapath's `by_source_port`
    /// finds it.
    fn source_port(image: &Image, entry: &ClassEntry, sport: u16) -> Option<Verdict> {
        let ranges = match entry.ranges {
            0 => std::slice::from_ref(&entry.only),
            n => &image.source_ports[entry.first as usize..(entry.first + n) as usize],
        };
        ranges
            .iter()
            .find(|r| r.lo <= sport && sport <= r.hi)
            .map(|r| r.verdict)
    }

    #[test]
    fn where_classifiers_of_one_chain_overlap_the_most_specific_takes_the_packet_everywhere() {
        // One chain entering at src; each classifier ends at its own port, so that what the
        // datapath decides after the hop (leaving out) names the winner too.
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        let fcs = [
            ("wide", "destinationIpPrefix: 10.0.0.0/8", 11),
            (
                "narrow",
                "protocol: tcp, destinationIpPrefix: 10.1.0.0/16",
                12,
            ),
            (
                "range",
                "protocol: tcp, destinationPortRange: '1000:1999'",
                13,
            ),
            // Listed first, yet equally specific: destination bits count before source bits.
            ("src24", "sourceIpPrefix: 192.168.1.0/24", 14),
            ("dst24", "destinationIpPrefix: 10.3.0.0/24", 15),
            // The same shape and key for ports 2 and 3: the one listed first keeps them.
            ("first", "protocol: udp, destinationPortRange: '2:3'", 16),
            ("second", "protocol: udp, destinationPortRange: '2:4'", 17),
        ];
        for (name, fields, end) in fcs {
            let d = format!("d{end}");
            classifier(
                &mut s,
                name,
                &format!("{{{fields}, logicalSourcePort: src, logicalDestinationPort: {d}}}"),
            );
            veth(&mut i, &d, end);
        }
        chain(&mut s, "c", &["g"], &fcs.map(|(n, _, _)| n), false);
        for (name, index) in [("src", 1), ("in", 2), ("out", 3)] {
            veth(&mut i, name, index);
        }
        let image = compile(&s, &i, &Origins::new()).unwrap();
        let winner = |packet| {
            let entry = probe(&image, 1, packet).expect("a hit at the entry");
            let label = &image.counters[entry.counter as usize - 1];
            let after = probe(&image, 3, packet).expect("a hit after the hop");
            let end = fcs
                .iter()
                .find(|f| f.2 == after.deliver_ifindex)
                .map(|f| f.0);
            // Counted and delivered as the same classifier.
            assert_eq!(label.classifier.as_deref(), end, "{packet:?}");
            end.unwrap()
        };
        let tcp = |src: [u8; 4], dst: [u8; 4], dport| (PROTO_TCP_NUM, src, dst, 40000, dport);
        let udp = |dport| (17, [1, 1, 1, 1], [2, 2, 2, 2], 40000, dport);
        // /16 and tcp (24 bits) over /8 (8 bits) over 1000:1999 at 1500 (tcp and the 8 bits of
        // the block 1280:1535: 16 bits)...
        assert_eq!(winner(tcp([1, 1, 1, 1], [10, 1, 2, 3], 1500)), "narrow");
        assert_eq!(winner(tcp([1, 1, 1, 1], [10, 2, 2, 3], 1500)), "range");
        assert_eq!(winner(tcp([1, 1, 1, 1], [10, 2, 2, 3], 80)), "wide");
        // ... and at 1000 the block is 1000 alone (16 bits): tcp and it (24) beat the /8 too.
        assert_eq!(winner(tcp([1, 1, 1, 1], [10, 2, 2, 3], 1000)), "range");
        assert_eq!(winner(tcp([192, 168, 1, 9], [10, 3, 0, 9], 80)), "dst24");
        assert_eq!(winner(tcp([192, 168, 1, 9], [9, 9, 9, 9], 80)), "src24");
        assert_eq!(winner(udp(2)), "first");
        assert_eq!(winner(udp(3)), "first");
        assert_eq!(winner(udp(4)), "second");
    }

    const PROTO_TCP_NUM: u8 = 6;

    /// Chains `c0..` from port src (ifindex 1), chain n through group gn of one pair (ingress
    /// ifindex 10 + 2n, egress 11 + 2n), each with one classifier of `fields`.
    fn chains_from_src(fields: &[String]) -> Image {
        let mut s = State::default();
        let mut i = Interfaces::default();
        veth(&mut i, "src", 1);
        for (n, f) in fields.iter().enumerate() {
            pair(
                &mut s,
                &format!("pp{n}"),
                &format!("in{n}"),
                &format!("out{n}"),
            );
            group(&mut s, &format!("g{n}"), &[format!("pp{n}")]);
            classifier(
                &mut s,
                &format!("f{n}"),
                &format!("{{{f}, logicalSourcePort: src}}"),
            );
            chain(
                &mut s,
                &format!("c{n}"),
                &[format!("g{n}")],
                &[format!("f{n}")],
                false,
            );
            veth(&mut i, &format!("in{n}"), 10 + 2 * n as u32);
            veth(&mut i, &format!("out{n}"), 11 + 2 * n as u32);
        }
        compile(&s, &i, &Origins::new()).unwrap()
    }

    /// networking-sfc's OVS driver classifier: ranges on both ports, which used to need 20
    /// shapes (the product of both ranges' prefix lengths). Now the destination range takes
    /// two shapes and the source range is checked in the entry: every port in both ranges
    /// matches, and none outside.
    #[test]
    fn ranges_on_both_ports_match_exactly_what_they_say() {
        let image = chains_from_src(&[
            "protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400'".into(),
        ]);
        assert_eq!(image.ports[&1].n_tuples, 2);
        assert!(image.source_ports.is_empty(), "one range per key");
        let hit = |sport: u16, dport: u16| {
            probe(
                &image,
                1,
                (PROTO_TCP_NUM, [1, 1, 1, 1], [2, 2, 2, 2], sport, dport),
            )
            .is_some()
        };
        for port in 0..=u16::MAX {
            assert_eq!(hit(port, 300), (100..=200).contains(&port), "sport {port}");
            assert_eq!(hit(150, port), (300..=400).contains(&port), "dport {port}");
        }
        assert!(
            !hit(150, 350)
                || probe(&image, 1, (17, [1, 1, 1, 1], [2, 2, 2, 2], 150, 350)).is_none()
        );
    }

    /// Chains told apart by source port alone share their keys: the entry holds their ranges,
    /// sorted, and each port finds its own chain (or none in the gaps), at the entry and after
    /// the hop, whatever their destination ranges.
    #[test]
    fn chains_differing_by_source_port_share_a_key_and_keep_their_ports() {
        let ranges = [
            (1000, 1999, "80"),
            (2000, 2999, "80:90"),
            (5000, 5000, "1:65535"),
            (7, 9, "80"),
        ];
        let fields: Vec<String> = ranges
            .iter()
            .map(|(lo, hi, d)| {
                format!("protocol: udp, sourcePortRange: '{lo}:{hi}', destinationPortRange: '{d}'")
            })
            .collect();
        let image = chains_from_src(&fields);
        assert!(!image.source_ports.is_empty());
        // At the entry, where their keys are shared; after the hop (chain 2's group), where
        // only chain 2 is classified.
        for (ifindex, chains_entry) in [(1, true), (15, false)] {
            for sport in [
                0, 6, 7, 8, 9, 10, 999, 1000, 1500, 1999, 2000, 2999, 3000, 4999, 5000, 5001, 65535,
            ] {
                for dport in [79, 80, 85, 90, 91] {
                    let found = probe(
                        &image,
                        ifindex,
                        (17, [1, 1, 1, 1], [2, 2, 2, 2], sport, dport),
                    )
                    .map(|v| v.chain_id);
                    let expected = ranges
                        .iter()
                        .enumerate()
                        .filter(|(n, _)| chains_entry || *n == 2)
                        .find_map(|(n, (lo, hi, d))| {
                            let (dlo, dhi) = match d.split_once(':') {
                                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                                None => (d.parse().unwrap(), d.parse().unwrap()),
                            };
                            ((*lo..=*hi).contains(&sport) && (dlo..=dhi).contains(&dport))
                                .then_some(n as u16 + 1)
                        });
                    assert_eq!(
                        found, expected,
                        "at {ifindex} (entry: {chains_entry}), {sport} -> {dport}"
                    );
                }
            }
        }
        // Sorted and disjoint wherever stored.
        for e in image.classify.values().filter(|e| e.ranges > 0) {
            let list = &image.source_ports[e.first as usize..(e.first + e.ranges) as usize];
            assert!(list.windows(2).all(|w| w[0].hi < w[1].lo), "{list:?}");
        }
    }

    /// Where classifiers of one chain share a key, the narrower source range takes its ports
    /// and the wider one keeps the rest on both sides of it.
    #[test]
    fn within_one_chain_the_narrower_source_range_takes_its_ports() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "pp", "in", "out");
        group(&mut s, "g", &["pp"]);
        for (name, range, end) in [("wide", "1000:2000", 11), ("narrow", "1500", 12)] {
            classifier(
                &mut s,
                name,
                &format!("{{protocol: tcp, sourcePortRange: '{range}', logicalSourcePort: src, logicalDestinationPort: d{end}}}"),
            );
            veth(&mut i, &format!("d{end}"), end);
        }
        chain(&mut s, "c", &["g"], &["wide", "narrow"], false);
        for (name, index) in [("src", 1), ("in", 2), ("out", 3)] {
            veth(&mut i, name, index);
        }
        let image = compile(&s, &i, &Origins::new()).unwrap();
        let end = |sport| {
            probe(
                &image,
                3,
                (PROTO_TCP_NUM, [1, 1, 1, 1], [2, 2, 2, 2], sport, 80),
            )
            .map(|v| v.deliver_ifindex)
        };
        assert_eq!(end(999), None);
        assert_eq!(end(1000), Some(11));
        assert_eq!(end(1499), Some(11));
        assert_eq!(end(1500), Some(12));
        assert_eq!(end(1501), Some(11));
        assert_eq!(end(2000), Some(11));
        assert_eq!(end(2001), None);
    }

    #[test]
    fn one_key_leading_two_ways_at_an_entry_is_refused_even_past_validation() {
        // Validation refuses this state (two chains whose classifiers enter at one port and
        // overlap); the map must still never hold one key for two verdicts where flows
        // enter, so the stages are run on it directly.
        let mut s = State::default();
        pair(&mut s, "p1", "in1", "out1");
        pair(&mut s, "p2", "in2", "out2");
        group(&mut s, "g1", &["p1"]);
        group(&mut s, "g2", &["p2"]);
        classifier(&mut s, "a", "{protocol: tcp, logicalSourcePort: s1}");
        classifier(&mut s, "b", "{protocol: tcp, logicalSourcePort: s1}");
        chain(&mut s, "c1", &["g1"], &["a"], false);
        chain(&mut s, "c2", &["g2"], &["b"], false);
        assert!(validate(&s, &Origins::new()).is_err());
        let matches: BTreeMap<String, Match> = s
            .flow_classifiers
            .iter()
            .map(|(name, fc)| (name.clone(), normalize(fc).unwrap()))
            .collect();
        let interfaces = Interfaces::default();
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &interfaces, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        let entries = c.entries(&matches, &groups, &domains);
        let shapes = c.match_shapes(&entries, &domains);
        c.classify(entries, &shapes, &domains);
        assert_eq!(
            messages(&c.errors),
            ["(applied state): FlowClassifier \"b\": spec: matches packets that FlowClassifier \"a\" matches too, entering at port s1, and the two send them different ways; the datapath cannot tell there which way a packet goes: make them disjoint"]
        );
    }

    /// Past the entry, where paths that would take a packet different ways meet, the path a
    /// flow entered by (recorded with it from the entry verdict) decides; a packet whose
    /// flow's path is not known is dropped there rather than sent down either.
    #[test]
    fn where_paths_meet_past_the_entry_the_flows_path_decides() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        // Chains x (g, gx) from s1 and y (g, gy) from s2 share g; both take all UDP.
        for (name, index) in [("s1", 1), ("s2", 2), ("in", 3), ("out", 4)] {
            veth(&mut i, name, index);
        }
        pair(&mut s, "p", "in", "out");
        group(&mut s, "g", &["p"]);
        for (n, (chain_name, port)) in [("x", "s1"), ("y", "s2")].into_iter().enumerate() {
            let g = format!("g{chain_name}");
            pair(
                &mut s,
                &format!("p{chain_name}"),
                &format!("in{chain_name}"),
                &format!("out{chain_name}"),
            );
            group(&mut s, &g, &[format!("p{chain_name}")]);
            veth(&mut i, &format!("in{chain_name}"), 5 + 2 * n as u32);
            veth(&mut i, &format!("out{chain_name}"), 6 + 2 * n as u32);
            let fc = format!("f{chain_name}");
            classifier(
                &mut s,
                &fc,
                &format!("{{protocol: udp, logicalSourcePort: {port}}}"),
            );
            chain(&mut s, chain_name, &["g".to_string(), g], &[fc], false);
        }
        let image = compile(&s, &i, &Origins::new()).unwrap();
        let udp = (17, [1, 1, 1, 1], [2, 2, 2, 2], 5000, 53);
        let entered = |port| probe(&image, port, udp).unwrap().path;
        let (px, py) = (entered(1), entered(2));
        assert!(px != 0 && py != 0 && px != py);
        assert_eq!(
            image.ports[&1].flags & PORT_BY_PATH,
            0,
            "not where flows enter"
        );
        assert_ne!(image.ports[&4].flags & PORT_BY_PATH, 0);
        // Group slots in name order: g 0, gx 1, gy 2.
        let next = |path| probe_on_path(&image, 4, path, udp).map(|v| (v.action, v.slot));
        assert_eq!(next(px), Some((action::STEER, 1)));
        assert_eq!(next(py), Some((action::STEER, 2)));
        assert_eq!(next(0), Some((action::PATH_UNKNOWN, 0)));
        // Where only one path goes, keys carry none.
        assert_eq!(image.ports[&6].flags & PORT_BY_PATH, 0);
        // TCP is in neither: untouched, path or not.
        let tcp = (PROTO_TCP_NUM, [1, 1, 1, 1], [2, 2, 2, 2], 5000, 53);
        assert_eq!(probe_on_path(&image, 4, px, tcp), None);
    }

    /// Both directions of a symmetric chain through a member with one interface for both
    /// sides: what comes back out of it goes on the way its flow entered.
    #[test]
    fn both_directions_through_one_interface_go_their_own_ways() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "pp", "sh", "sh");
        group(&mut s, "g", &["pp"]);
        classifier(
            &mut s,
            "a",
            "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
        );
        chain(&mut s, "c", &["g"], &["a"], true);
        for (name, index) in [("s1", 1), ("d1", 2), ("sh", 3)] {
            veth(&mut i, name, index);
        }
        let image = compile(&s, &i, &Origins::new()).unwrap();
        let tcp = (PROTO_TCP_NUM, [1, 1, 1, 1], [2, 2, 2, 2], 40000, 80);
        let forward = probe(&image, 1, tcp).unwrap().path;
        let reverse = probe(&image, 2, tcp).unwrap().path;
        assert!(forward != reverse);
        let end = |path| probe_on_path(&image, 3, path, tcp).map(|v| (v.action, v.deliver_ifindex));
        assert_eq!(end(forward), Some((action::DELIVER, 2)));
        assert_eq!(end(reverse), Some((action::DELIVER, 1)));
        assert_eq!(end(0), Some((action::PATH_UNKNOWN, 0)));
    }

    /// Unparsable traffic may pass a port only if every classifier there says so; a port with
    /// a classifier on L4 ports cannot steer a fragment of unknown ports; a portless
    /// classifier's verdicts choose members without ports.
    #[test]
    fn port_flags_follow_the_classifiers_entering_there() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "p1", "in1", "out1");
        group(&mut s, "g1", &["p1"]);
        pair(&mut s, "p2", "in2", "out2");
        group(&mut s, "g2", &["p2"]);
        for (name, fields) in [
            (
                "pass_a",
                "protocol: udp, unparsable: pass, logicalSourcePort: lp1",
            ),
            (
                "pass_b",
                "protocol: tcp, unparsable: pass, logicalSourcePort: lp1",
            ),
            (
                "ports",
                "protocol: tcp, destinationPortRange: 80, logicalSourcePort: lp2",
            ),
            (
                "drop",
                "protocol: udp, logicalSourcePort: lp2, unparsable: drop",
            ),
        ] {
            classifier(&mut s, name, &format!("{{{fields}}}"));
        }
        chain(&mut s, "c1", &["g1"], &["pass_a", "pass_b"], false);
        chain(&mut s, "c2", &["g2"], &["ports", "drop"], false);
        for (name, index) in [("lp1", 1), ("lp2", 2), ("in1", 3), ("out1", 4)] {
            veth(&mut i, name, index);
        }
        for (name, index) in [("in2", 5), ("out2", 6)] {
            veth(&mut i, name, index);
        }
        let image = plan_image(&s, &i);
        let flags = |ifindex: u32| image.ports[&ifindex].flags;
        assert_eq!(flags(1), PORT_ENTRY | PORT_PASS_UNPARSABLE);
        assert_eq!(flags(4), PORT_PASS_UNPARSABLE);
        assert_eq!(flags(2), PORT_ENTRY | PORT_NEEDS_PORTS);
        assert_eq!(flags(6), PORT_NEEDS_PORTS);
        let portless: BTreeSet<bool> = image
            .classify
            .iter()
            .filter(|(k, _)| k.domain == image.ports[&2].domain)
            .map(|(k, v)| (k.dport != 0, v.only.verdict.flags & FLAG_PORTLESS != 0))
            .map(|(on_port, portless)| on_port != portless)
            .collect();
        assert_eq!(
            portless,
            BTreeSet::from([true]),
            "only the portless classifier is"
        );
    }

    /// One SF crossed by two pairs: pp-ab in at "a" (ifindex 3) and out at "b" (4), pp-ba the
    /// other way, each its own group, in a symmetric chain from "src" (1) to "dst" (2).
    fn crossed_chain() -> (State, Interfaces) {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "pp-ab", "a", "b");
        pair(&mut s, "pp-ba", "b", "a");
        group(&mut s, "g1", &["pp-ab"]);
        group(&mut s, "g2", &["pp-ba"]);
        classifier(
            &mut s,
            "fc",
            "{protocol: udp, sourceIpPrefix: 10.1.0.0/16, destinationIpPrefix: 10.2.0.0/16, logicalSourcePort: src, logicalDestinationPort: dst}",
        );
        chain(&mut s, "c", &["g1", "g2"], &["fc"], true);
        for (name, index) in [("src", 1), ("dst", 2), ("a", 3), ("b", 4)] {
            veth(&mut i, name, index);
        }
        (s, i)
    }

    #[test]
    fn crossed_pairs_classify_each_interface_in_one_merged_domain() {
        let (s, i) = crossed_chain();
        let image = plan_image(&s, &i);
        // g1 has table slot 0 (domains BASE, BASE + 1), g2 slot 1 (BASE + 2, BASE + 3). "b"
        // gets forward traffic leaving g1 and reverse traffic leaving g2: g1's egress domain
        // for both; "a", forward leaving g2 and reverse leaving g1: g2's egress domain.
        let base = GROUP_DOMAIN_BASE;
        let domain = |ifindex: u32| image.ports[&ifindex].domain;
        assert_eq!((domain(4), domain(3)), (base, base + 2));
        // Each merged domain holds both ways: forward steering on and reverse steering on
        // ("b"), forward and reverse ends of the chain ("a"); nothing is left in the
        // domains merged away.
        let verdicts = |d: u32| -> Vec<(u8, u8, bool)> {
            let mut v: Vec<(u8, u8, bool)> = image
                .classify
                .iter()
                .filter(|(k, _)| k.domain == d)
                .map(|(_, e)| &e.only.verdict)
                .map(|v| (v.action, v.hop, v.flags & FLAG_REVERSE != 0))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            verdicts(base),
            [(action::STEER, 0, true), (action::STEER, 1, false)]
        );
        assert_eq!(
            verdicts(base + 2),
            [(action::DELIVER, 2, false), (action::DELIVER, 2, true)]
        );
        assert!(verdicts(base + 1).is_empty() && verdicts(base + 3).is_empty());
        // Each side has its own counter slot: "a" is pp-ab's ingress and pp-ba's egress.
        let sides: Vec<(u32, &str, &str, Role)> = image
            .sides
            .iter()
            .map(|(k, s)| (*k, s.interface.as_str(), s.pair.as_str(), s.role))
            .collect();
        assert_eq!(
            sides,
            [
                (3, "a", "pp-ab", Role::Ingress),
                (4, "b", "pp-ba", Role::Ingress),
                (3 | SIDE_EGRESS, "a", "pp-ba", Role::Egress),
                (4 | SIDE_EGRESS, "b", "pp-ab", Role::Egress),
            ]
        );
        // Messages name every place of a merged domain, and the interface that merges them.
        let origins = Origins::new();
        let mut c = Compiler::new(&s, &i, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        assert_eq!(
            domains.name(base + 2),
            "leaving group g2 or leaving group g1 in reverse (classified together on \"a\", which their members share)"
        );
        assert_eq!(domains.name(1), "entering at port dst");
    }

    fn plan_image(state: &State, interfaces: &Interfaces) -> Image {
        let origins = Origins::new();
        compile_cached(state, interfaces, &origins)
            .map(|c| c.image().clone())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn roots_are_the_interfaces_where_classified_traffic_arrives() {
        let mut s = State::default();
        let mut i = Interfaces::default();
        pair(&mut s, "p1", "in1", "out1");
        pair(&mut s, "p2", "in2", "out2");
        pair(&mut s, "p3", "in3", "out3");
        // One interface for both sides: g2's reverse domain is its egress domain, yet a
        // one-way chain needs nothing from its members' ingress.
        pair(&mut s, "p5", "sh", "sh");
        group(&mut s, "g1", &["p1"]);
        group(&mut s, "g2", &["p2", "p5"]);
        group(&mut s, "g3", &["p3"]);
        classifier(
            &mut s,
            "s",
            "{protocol: udp, logicalSourcePort: lp1, logicalDestinationPort: lp2}",
        );
        classifier(
            &mut s,
            "o",
            "{protocol: tcp, logicalSourcePort: lp3, logicalDestinationPort: lp4}",
        );
        chain(&mut s, "sym", &["g1"], &["s"], true);
        chain(&mut s, "ow", &["g2"], &["o"], false);
        chain(&mut s, "bare", &["g3"], &[], false);
        for (name, index) in [
            ("lp1", 1),
            ("lp2", 2),
            ("lp3", 3),
            ("lp4", 4),
            ("in1", 5),
            ("in2", 7),
            ("out2", 8),
            ("in3", 9),
            ("out3", 10),
            ("sh", 11),
        ] {
            veth(&mut i, name, index);
        }
        let origins = Origins::new();
        let matches = matches(&s);
        let mut c = Compiler::new(&s, &i, &origins);
        let groups = c.group_tables().unwrap();
        let domains = c.classifier_domains(&groups).unwrap();
        let entries = c.entries(&matches, &groups, &domains);
        let shapes = c.match_shapes(&entries, &domains);
        c.classify(entries, &shapes, &domains);
        let notes_before = c.image.notes.len();
        let roots = c.roots(&domains);
        c.attach(&roots, &shapes);

        // Logical ports where chains start, SF egress sides, and for symmetric chains SF
        // ingress sides; not a one-way chain's destination, nor SF sides of a chain without
        // classifiers (nothing is classified there).
        let attach: Vec<(&str, u32)> = c
            .image
            .attach
            .iter()
            .map(|(n, x)| (n.as_str(), *x))
            .collect();
        assert_eq!(
            attach,
            [
                ("in1", 5),
                ("lp1", 1),
                ("lp2", 2),
                ("lp3", 3),
                ("out2", 8),
                ("sh", 11)
            ]
        );
        let ports: Vec<(u32, u32, u16, u16)> = c
            .image
            .ports
            .iter()
            .map(|(x, v)| (*x, v.domain, v.flags, v.n_tuples))
            .collect();
        let (g1, g2) = (GROUP_DOMAIN_BASE, GROUP_DOMAIN_BASE + 2);
        assert_eq!(
            ports,
            [
                (1, 1, PORT_ENTRY, 1),
                (2, 2, PORT_ENTRY, 1),
                (3, 3, PORT_ENTRY, 1),
                (5, g1 + 1, 0, 1),
                (8, g2, 0, 1),
                (11, g2, 0, 1),
            ]
        );
        let udp_reversed = matches["s"].reversed().expand()[0].0;
        let mut tuples = [TupleMask::default(); MAX_TUPLES];
        tuples[0] = udp_reversed;
        assert_eq!(c.image.ports[&5].tuples, tuples);
        assert_eq!(
            c.image.notes[notes_before..],
            ["interface \"out1\" is not present; steering from it starts when it appears"]
        );
        assert!(c.errors.is_empty(), "{:?}", messages(&c.errors));
    }
}
