//! The kernel side: bpffs, the pinned maps, the programs and their per-interface links.
//!
//! Updates are make-before-break: an image is written into the inactive generation (group
//! tables first, then classifier entries, then the per-interface roots), and one write of the
//! epoch flips every interface to it at once. Flows keep the generation they entered with
//! until their packets are out of the chain (at most `GENERATION_LEASE_NS`), and a retired
//! generation is left intact for twice that before it is reused, so every packet is steered
//! entirely by one generation.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::IpAddr,
    os::{fd::AsFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{
        xdp::XdpMapError, Array, DevMapHash, HashMap, IterableMap, Map, MapData, MapError,
        PerCpuArray, PerCpuValues,
    },
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use sfc_common::{
    stat, ClassEntry, ClassKey, ClassKey4, Counter, FragmentKey, FragmentState, Member,
    MemberCounter, MemberKey, PortKey, PortValue, RemoteKey, RingEntry, SourcePorts, TraceFilter,
    TunnelPeer, Verdict, CONFIG_EPOCH, CONFIG_FLIP_NS, CONFIG_PROBE_TOKEN, CONFIG_REVISION,
    CONFIG_TUNNEL_ADDRESS, CONFIG_TUNNEL_ADDRESS6, CONFIG_TUNNEL_IFINDEX, CONFIG_TUNNEL_USABLE_MTU,
    COUNTERS_PER_GEN, FAMILY_V4, FRAGMENT_TIMEOUT_NS, GENERATION_LEASE_NS, MAP_CLASSIFY,
    MAP_CLASSIFY4, MAP_CONFIG, MAP_COUNTERS, MAP_FRAGMENTS, MAP_LANDING, MAP_LIVE, MAP_MEMBERS,
    MAP_MEMBER_COUNTERS, MAP_MEMBER_SLOTS, MAP_PORTS, MAP_PROBES, MAP_REMOTES, MAP_RING,
    MAP_SOURCE_PORTS, MAP_STATS, MAP_TRACE_FILTER, MAP_TUNNEL_PEERS, MAP_XDP_INTO_VETH,
    MEMBER_SLOTS, PORT_ENTRY, PROGRAM_TC, PROGRAM_TUNNEL, PROGRAM_TUNNEL_XDP, PROGRAM_XDP, REMOTE,
    RING_SIZE, SIDE_EGRESS, SLOTS_PER_GEN, SLOT_PEER, SOURCE_PORTS_PER_GEN, TUNNEL_OVERHEAD,
    TUNNEL_OVERHEAD_V6,
};
use thiserror::Error;
use tracing::{info, warn};

pub mod handover;
pub mod links;
pub mod netlink;
pub mod tables;

use sfc_api::counters::{Generation, Row};
use sfc_config::compile::{Image, Interfaces, Role, Side};

use crate::observe::counters::ChainCounters;
use handover::{Alone, Handover, Steered};
use links::{Hook, Links};
use tables::{Table, Tables};

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("bpffs at {path}: {source}")]
    Bpffs { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {PROGRAM_TC} or {PROGRAM_XDP}: {0}")]
    Program(#[from] ProgramError),
    #[error("more than {limit} SF-facing interfaces need counters; remove port pairs or taps")]
    MemberSlots { limit: u32 },
    #[error("map {MAP_LIVE}: {0}")]
    Live(XdpMapError),
    #[error("counting the possible CPUs: {0}")]
    Cpus(io::Error),
    #[error("pinned link {path}: {source}")]
    PinnedLink {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
    #[error("the link of interface {iface}: {source}")]
    LinkFd {
        iface: String,
        source: aya::programs::links::LinkError,
    },
    #[error("pinning the link of interface {iface}: {source}")]
    Pin {
        iface: String,
        source: aya::pin::PinError,
    },
    #[error("map {name} is not a hash map")]
    NotAHashMap { name: &'static str },
    #[error("duplicating the descriptor of map {name}: {source}")]
    Duplicate {
        name: &'static str,
        source: io::Error,
    },
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at `dir` unless one is mounted there already.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let err = |source| DataplaneError::Bpffs {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut st) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    if st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c_dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    info!(path = %dir.display(), "mounted bpffs");
    Ok(())
}

fn take<T: TryFrom<Map, Error = MapError>>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DataplaneError> {
    let map = bpf.take_map(name).ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
}

/// The same map through a descriptor of its own, for use on another thread or task.
fn own_descriptor(data: &MapData, name: &'static str) -> Result<MapData, DataplaneError> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Duplicate { name, source })?;
    MapData::from_fd(fd).map_err(map_err(name))
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Which hooks steer: TC alone, or XDP in front of TC where the driver has native XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Tc,
    /// Not on veths unless `on_veth`: the veth driver runs XDP on the sender's skbs, and a
    /// frame redirected from there loses the skb's checksum-offload state, so a packet whose
    /// sender left its TCP/UDP checksum to offload arrives with a wrong one. Only where every
    /// sender into the steered veths computes checksums itself is XDP on them correct.
    Xdp { on_veth: bool },
}

/// How the daemon was asked to run its dataplane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    pub tables: Tables,
}

const VETH_REFUSED: &str = "a veth: XDP would hand on frames without the sender's checksum \
    offload state (start sfc-daemon with --xdp-on-veth if every sender into it computes \
    checksums, ethtool -K IFACE tx off)";

/// Where this node's packets to and from other nodes go: its tunnel address and the
/// interface that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub name: String,
    pub index: u32,
    pub address: IpAddr,
    pub mtu: u32,
    /// Other nodes' packets are stripped in XDP too, before GRO.
    pub xdp: bool,
}

impl Underlay {
    /// The largest IP packet a chain can carry to another node: the underlay's MTU less the
    /// encapsulation (20 bytes more over IPv6).
    pub fn usable_mtu(&self) -> u32 {
        let overhead = match self.address {
            IpAddr::V4(_) => TUNNEL_OVERHEAD,
            IpAddr::V6(_) => TUNNEL_OVERHEAD_V6,
        };
        self.mtu.saturating_sub(overhead)
    }
}

pub struct Dataplane {
    bpf: Ebpf,
    mode: Mode,
    config: Array<MapData, u64>,
    ports: HashMap<MapData, PortKey, PortValue>,
    classify: HashMap<MapData, ClassKey, ClassEntry>,
    classify4: HashMap<MapData, ClassKey4, ClassEntry>,
    source_ports: Array<MapData, SourcePorts>,
    ring: Array<MapData, RingEntry>,
    members: HashMap<MapData, MemberKey, RingEntry>,
    live: DevMapHash<MapData>,
    remotes: HashMap<MapData, RemoteKey, TunnelPeer>,
    landing: HashMap<MapData, RemoteKey, Member>,
    tunnel_peers: HashMap<MapData, TunnelPeer, u32>,
    fragments: HashMap<MapData, FragmentKey, FragmentState>,
    /// At the last sweep of `fragments`: the count of tracked first fragments, and the
    /// entries left.
    fragments_swept: Option<(u64, usize)>,
    stats: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, Counter>,
    /// Per-chain counts of retired generations.
    pub chain_counters: ChainCounters,
    member_counters: PerCpuArray<MapData, MemberCounter>,
    member_slot_map: HashMap<MapData, u32, u32>,
    /// Counter slot of each side of an SF-facing interface, by [`Side::key`] (a copy of
    /// `member_slot_map`).
    member_slots: BTreeMap<u32, u16>,
    /// The last known pair and name of each of those sides.
    member_labels: BTreeMap<u32, Side>,
    /// Counts of interfaces whose slot was given up.
    member_totals: BTreeMap<Side, MemberCounter>,
    /// What each generation holds, when known (unknown after a restart).
    written: [Option<Image>; 2],
    /// What each generation's group tables hold in `sfc_v12_ring`, table by table, as this
    /// daemon wrote them (clearing a generation leaves them be; empty after a start): a table
    /// written again is written only where it changed, one syscall per entry otherwise.
    rings_held: [Vec<Vec<RingEntry>>; 2],
    /// The fingerprint of each generation's image, when written by this daemon.
    fingerprints: [Option<u64>; 2],
    /// After a restart: the fingerprint an earlier daemon recorded for the active generation.
    /// The same image is then adopted instead of written again.
    adopted: Option<u64>,
    tc: Links,
    /// Empty unless in XDP mode.
    xdp: Links,
    /// The interfaces the active generation steers from (TC, XDP), as the last apply that made
    /// it active wanted them: every other one loses the program once the generation before is
    /// retired ([`Self::detach_stale`]).
    wanted: Option<(BTreeMap<String, u32>, BTreeMap<String, u32>)>,
    /// The tunnel program's link on the underlay interface, in a cluster.
    tunnel: Links,
    /// The XDP tunnel program's link there, with `--tunnel-xdp`.
    tunnel_xdp: Links,
    tables: Tables,
    /// Who else must agree before a flip (nobody on one node).
    handover: Box<dyn Handover>,
}

impl Dataplane {
    /// Loads the programs and opens (or creates) the pinned maps under `bpffs`, the tables of
    /// `tables` with their sizes (a pinned one of another size is replaced by an empty one).
    /// Links pinned by an earlier daemon are adopted, and moved atomically onto this daemon's
    /// programs (its XDP links removed if this daemon is not in XDP mode).
    pub fn open(bpffs: &Path, mode: Mode, tables: Tables) -> Result<Self, DataplaneError> {
        ensure_bpffs(bpffs)?;
        let maps_dir = bpffs.join("maps");
        fs::create_dir_all(&maps_dir).map_err(|source| DataplaneError::Bpffs {
            path: maps_dir.clone(),
            source,
        })?;
        tables::replace_resized(&maps_dir, &tables)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps_dir);
        for table in tables.list() {
            loader.map_max_entries(table.map, table.size);
        }
        let mut bpf = loader.load(crate::EBPF_OBJECT)?;
        clear_trace_filter(&mut bpf)?;
        links::tc_program(&mut bpf)?.load()?;
        links::xdp_program(&mut bpf, PROGRAM_XDP)?.load()?;
        links::classifier(&mut bpf, PROGRAM_TUNNEL)?.load()?;
        links::xdp_program(&mut bpf, PROGRAM_TUNNEL_XDP)?.load()?;
        // Before a link gets these programs.
        let mut into_veth: Array<MapData, u32> = take(&mut bpf, MAP_XDP_INTO_VETH)?;
        let on_veth = matches!(mode, Mode::Xdp { on_veth: true });
        into_veth
            .set(0, on_veth as u32, 0)
            .map_err(map_err(MAP_XDP_INTO_VETH))?;
        let tc = Links::adopt(Hook::Tc, bpffs.join("links"), &mut bpf)?;
        let mut xdp = Links::adopt(Hook::Xdp, bpffs.join("links-xdp"), &mut bpf)?;
        if mode == Mode::Tc {
            xdp.detach_all();
        }
        let tunnel = Links::adopt(Hook::Tunnel, bpffs.join("links-tunnel"), &mut bpf)?;
        let tunnel_xdp = Links::adopt(Hook::TunnelXdp, bpffs.join("links-tunnel-xdp"), &mut bpf)?;
        let mut dp = Self {
            config: take(&mut bpf, MAP_CONFIG)?,
            ports: take(&mut bpf, MAP_PORTS)?,
            classify: take(&mut bpf, MAP_CLASSIFY)?,
            classify4: take(&mut bpf, MAP_CLASSIFY4)?,
            source_ports: take(&mut bpf, MAP_SOURCE_PORTS)?,
            ring: take(&mut bpf, MAP_RING)?,
            members: take(&mut bpf, MAP_MEMBERS)?,
            live: take(&mut bpf, MAP_LIVE)?,
            remotes: take(&mut bpf, MAP_REMOTES)?,
            landing: take(&mut bpf, MAP_LANDING)?,
            tunnel_peers: take(&mut bpf, MAP_TUNNEL_PEERS)?,
            fragments: take(&mut bpf, MAP_FRAGMENTS)?,
            fragments_swept: None,
            stats: take(&mut bpf, MAP_STATS)?,
            counters: take(&mut bpf, MAP_COUNTERS)?,
            chain_counters: ChainCounters::default(),
            member_counters: take(&mut bpf, MAP_MEMBER_COUNTERS)?,
            member_slot_map: take(&mut bpf, MAP_MEMBER_SLOTS)?,
            member_slots: BTreeMap::new(),
            member_labels: BTreeMap::new(),
            member_totals: BTreeMap::new(),
            bpf,
            mode,
            written: [None, None],
            rings_held: Default::default(),
            fingerprints: [None, None],
            adopted: None,
            tc,
            xdp,
            wanted: None,
            tunnel,
            tunnel_xdp,
            tables,
            handover: Box::new(Alone),
        };
        dp.member_slots = dp
            .member_slot_map
            .iter()
            .filter_map(Result::ok)
            .map(|(ifindex, slot)| (ifindex, slot as u16))
            .collect();
        // Maps never flipped are fresh: both generations are known to be empty.
        if dp.epoch()? == 0
            && dp
                .config
                .get(&CONFIG_FLIP_NS, 0)
                .map_err(map_err(MAP_CONFIG))?
                == 0
        {
            dp.written = [Some(Image::default()), Some(Image::default())];
        }
        Ok(dp)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The tables sized by flags, each with a descriptor of its own (for counting their
    /// entries on another thread than the one that writes the maps).
    pub fn table_maps(&self) -> Result<Vec<(Table, MapData)>, DataplaneError> {
        self.tables
            .list()
            .into_iter()
            .map(|table| {
                let name = table.map;
                let data = match self.bpf.map(name) {
                    Some(Map::HashMap(data) | Map::LruHashMap(data)) => data,
                    Some(_) => return Err(DataplaneError::NotAHashMap { name }),
                    // Taken out of the loader to be used here.
                    None if name == MAP_FRAGMENTS => self.fragments.map(),
                    None => return Err(DataplaneError::MissingMap(name)),
                };
                Ok((table, own_descriptor(data, name)?))
            })
            .collect()
    }

    /// The token probes carry, as the pinned maps hold it (0: none yet).
    pub fn probe_token(&self) -> Result<u64, DataplaneError> {
        self.config
            .get(&CONFIG_PROBE_TOKEN, 0)
            .map_err(map_err(MAP_CONFIG))
    }

    /// Starts taking probes that carry `token` (see `probe`): where each came out of an SF,
    /// the sequence number of the last, in a map of its own descriptor (read on the probing
    /// task).
    pub fn probes(&mut self, token: u64) -> Result<HashMap<MapData, u32, u64>, DataplaneError> {
        let name = MAP_PROBES;
        let data = match self.bpf.map(name) {
            Some(Map::HashMap(data)) => data,
            Some(_) => return Err(DataplaneError::NotAHashMap { name }),
            None => return Err(DataplaneError::MissingMap(name)),
        };
        let data = own_descriptor(data, name)?;
        self.config
            .set(CONFIG_PROBE_TOKEN, token, 0)
            .map_err(map_err(MAP_CONFIG))?;
        HashMap::try_from(Map::HashMap(data)).map_err(map_err(name))
    }

    /// Interfaces with the TC program attached (every steered one): name -> ifindex.
    pub fn attached(&self) -> &BTreeMap<String, u32> {
        self.tc.attached()
    }

    /// XDP links (in XDP mode): the interfaces with the XDP program attached, and those where
    /// it could not be, with why.
    pub fn xdp(&self) -> &Links {
        &self.xdp
    }

    pub fn program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        links::tc_program(&mut self.bpf)
    }

    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        links::xdp_program(&mut self.bpf, PROGRAM_XDP)
    }

    /// The active generation's epoch and the fingerprint of its image, when this daemon knows
    /// it: kept by the agent, so that a restarted daemon can adopt the generation.
    pub fn active_fingerprint(&self) -> Result<Option<(u64, u64)>, DataplaneError> {
        let epoch = self.epoch()?;
        Ok(self.fingerprints[(epoch & 1) as usize].map(|f| (epoch, f)))
    }

    /// After a restart: the active generation, if it is still at `epoch`, holds an image of
    /// `fingerprint` (as recorded by [`Self::active_fingerprint`] before).
    pub fn adopt(&mut self, epoch: u64, fingerprint: u64) -> Result<(), DataplaneError> {
        if self.epoch()? == epoch {
            self.adopted = Some(fingerprint);
        }
        Ok(())
    }

    pub fn epoch(&self) -> Result<u64, DataplaneError> {
        self.config
            .get(&CONFIG_EPOCH, 0)
            .map_err(map_err(MAP_CONFIG))
    }

    /// In a cluster: how flips are agreed with the other nodes.
    pub fn set_handover(&mut self, handover: Box<dyn Handover>) -> Result<(), DataplaneError> {
        self.handover = handover;
        // What an earlier daemon left in the maps steers on: the other nodes learn it now.
        let held = self.held()?;
        self.handover.holding(held);
        self.handover.flipped(0, held[(self.epoch()? & 1) as usize]);
        Ok(())
    }

    /// Makes `image` the active generation. A no-op when it already is.
    pub fn apply(
        &mut self,
        image: &Image,
        interfaces: &Interfaces,
    ) -> Result<Steered, DataplaneError> {
        // Make before break for interfaces too: those the new generation steers from get the
        // program before the flip (until then it finds no entry for them and passes their
        // packets), and those it no longer needs lose it only once the old generation is
        // retired ([`Self::detach_stale`]). Attaching after the flip would let packets leave a
        // newly used SF unsteered, skipping the next hops; detaching at the flip, the same for
        // packets still inside an SF the update left out.
        let busy = self.busy_new_ports(image);
        self.tc
            .attach_missing_busy(&image.attach, &busy, &mut self.bpf)?;
        let mut epoch = self.epoch()?;
        let mut active = (epoch & 1) as usize;
        if self.written[active].is_none() && self.adopted.is_some() {
            let fingerprint = fingerprint(image);
            if self.adopted.take() == Some(fingerprint) {
                // What an earlier daemon made active is what we would write: leave it be.
                self.written[active] = Some(image.clone());
                self.fingerprints[active] = Some(fingerprint);
                info!(epoch, "adopted the active generation");
            }
        }
        let mut steered = Steered::Active;
        if self.written[active].as_ref() != Some(image) {
            let held = self.held()?;
            let target = 1 - active;
            // The inactive generation holds a newer revision that this node was overtaken on
            // and another node already sends: this node must go on taking its packets, and
            // can only overwrite the older one. It flips to it first.
            if held[target] > held[active] && self.handover.sent_elsewhere(held[target]) {
                self.flip(epoch)?;
                self.handover.flipped(held[active], held[target]);
                epoch += 1;
                active = target;
            }
            let target = 1 - active;
            if held[target] != 0 && held[target] != held[active] {
                self.handover.until_unsent(held[target]);
            }
            self.fingerprints[target] = Some(fingerprint(image));
            self.wait_until_retired(target)?;
            self.retire_counters(target, epoch.wrapping_sub(1))?;
            self.clear(target)?;
            self.handover.holding(self.held()?);
            self.assign_member_slots(image, active)?;
            self.write(target, image)?;
            self.handover.holding(self.held()?);
            self.sync_live(interfaces)?;
            if self.handover.until_held(image.revision) {
                self.flip(epoch)?;
                self.handover.flipped(held[active], image.revision);
                self.forget_what_is_gone();
                info!(
                    epoch = epoch + 1,
                    ports = image.ports.len(),
                    classifier_entries = image.classify.len(),
                    groups = image.rings.len(),
                    "dataplane updated"
                );
            } else {
                info!(
                    revision = image.revision,
                    "written, not flipped to: another node has a newer revision"
                );
                steered = Steered::Overtaken;
            }
        }
        // Links that went up or down meanwhile, when the image itself did not change.
        self.sync_live(interfaces)?;
        self.sync_tunnel_peers(image)?;
        // The chain is in effect: now what takes a while. The TCX links (see links.rs), and
        // XDP, which only takes over what TC already steers (an XDP attach to a veth costs
        // milliseconds too).
        self.tc.settle(&mut self.bpf);
        let xdp_want = self.xdp_candidates(image, interfaces);
        self.xdp.attach_missing(&xdp_want, &mut self.bpf)?;
        if steered == Steered::Active {
            self.wanted = Some((image.attach.clone(), xdp_want));
            self.detach_stale()?;
        }
        Ok(steered)
    }

    /// Takes the program off the interfaces the active generation no longer steers from, once
    /// the generation before it is retired (two leases after the flip, as
    /// [`Self::wait_until_retired`]): until then, packets of flows still on that generation
    /// come out of those interfaces' SFs, and must be steered on by it, not routed around the
    /// rest of their chain. Returns how long until some are due, if any wait.
    pub fn detach_stale(&mut self) -> Result<Option<Duration>, DataplaneError> {
        let Some((tc, xdp)) = &self.wanted else {
            return Ok(None);
        };
        if !self.tc.any_stale(tc) && !self.xdp.any_stale(xdp) {
            return Ok(None);
        }
        let wait = self.until_retired()?;
        if wait.is_some() {
            return Ok(wait);
        }
        self.tc.detach_stale(tc);
        self.xdp.detach_stale(xdp);
        Ok(None)
    }

    /// The flip: one 8-byte write, seen by the next packet on every CPU.
    fn flip(&mut self, epoch: u64) -> Result<(), DataplaneError> {
        self.config
            .set(CONFIG_FLIP_NS, monotonic_ns(), 0)
            .map_err(map_err(MAP_CONFIG))?;
        self.config
            .set(CONFIG_EPOCH, epoch + 1, 0)
            .map_err(map_err(MAP_CONFIG))
    }

    /// The revision each generation takes packets of from other nodes (0: none).
    fn held(&self) -> Result<[u32; 2], DataplaneError> {
        let revision = |gen: u32| {
            self.config
                .get(&(CONFIG_REVISION + gen), 0)
                .map(|r| r as u32)
                .map_err(map_err(MAP_CONFIG))
        };
        Ok([revision(0)?, revision(1)?])
    }

    /// The logical ports the program is not on yet and that have no clsact qdisc: they carry
    /// their VMs' traffic before any chain, so they get their TCX link at once rather than a
    /// tc filter whose clsact would be grafted under that traffic (see links.rs). Where one
    /// has a clsact already, a filter grafts nothing, and the chain takes effect sooner.
    fn busy_new_ports(&self, image: &Image) -> BTreeSet<u32> {
        let attached: BTreeSet<u32> = self.tc.attached().values().copied().collect();
        let new: BTreeSet<u32> = image
            .ports
            .iter()
            .filter(|(index, port)| port.flags & PORT_ENTRY != 0 && !attached.contains(index))
            .map(|(&index, _)| index)
            .collect();
        match netlink::with_clsact(&new) {
            Ok(with) => new.difference(&with).copied().collect(),
            Err(e) => {
                warn!(error = %e, "listing clsact qdiscs; new logical ports get TCX at once");
                new
            }
        }
    }

    /// The interfaces of `image` that get XDP in front of TC (none in TC mode); veths are
    /// refused, with why, unless allowed.
    fn xdp_candidates(&mut self, image: &Image, interfaces: &Interfaces) -> BTreeMap<String, u32> {
        let Mode::Xdp { on_veth } = self.mode else {
            return BTreeMap::new();
        };
        let links = &interfaces.links;
        let mut want = BTreeMap::new();
        for (iface, &index) in &image.attach {
            let veth = links.get(iface).and_then(|l| l.kind.as_deref()) == Some("veth");
            if veth && !on_veth {
                self.xdp.refuse(iface, index, VETH_REFUSED);
            } else {
                want.insert(iface.clone(), index);
            }
        }
        want
    }

    /// Packets of flows that entered just before the last flip may still be crossing their
    /// chain on the generation we are about to overwrite: wait out their lease (twice).
    /// A generation that held no classifier entry steered nothing: no wait.
    fn wait_until_retired(&self, target: usize) -> Result<(), DataplaneError> {
        if self.written[target]
            .as_ref()
            .is_some_and(|image| image.classify.is_empty())
        {
            return Ok(());
        }
        if let Some(wait) = self.until_retired()? {
            std::thread::sleep(wait);
        }
        Ok(())
    }

    /// How long until the generation the last flip left is retired (its flows' lease, twice);
    /// None once it is.
    fn until_retired(&self) -> Result<Option<Duration>, DataplaneError> {
        let flipped = self
            .config
            .get(&CONFIG_FLIP_NS, 0)
            .map_err(map_err(MAP_CONFIG))?;
        let ready = flipped.saturating_add(2 * GENERATION_LEASE_NS);
        let now = monotonic_ns();
        Ok((now < ready).then(|| Duration::from_nanos(ready - now)))
    }

    /// Moves a retired generation's per-chain counters into the running totals, then zeroes
    /// them for their next use.
    fn retire_counters(&mut self, gen: usize, epoch: u64) -> Result<(), DataplaneError> {
        let base = gen as u32 * COUNTERS_PER_GEN;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        let labels = self.written[gen]
            .as_ref()
            .map(|image| image.counters.clone());
        let Some(labels) = labels else {
            // Written by an earlier daemon: what its counters counted is unknown, so they are
            // dropped rather than credited to the wrong chains.
            for index in base + 1..base + COUNTERS_PER_GEN {
                self.zero_counter(index, cpus)?;
            }
            return Ok(());
        };
        let mut rows = Vec::with_capacity(labels.len());
        for (i, label) in labels.into_iter().enumerate() {
            let index = base + i as u32 + 1;
            rows.push(Row::new(label, self.read_counter(index)?));
            self.zero_counter(index, cpus)?;
        }
        self.chain_counters.retire(Generation { epoch, rows });
        Ok(())
    }

    fn zero_counter(&mut self, index: u32, cpus: usize) -> Result<(), DataplaneError> {
        let values =
            PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(DataplaneError::Cpus)?;
        self.counters
            .set(index, values, 0)
            .map_err(map_err(MAP_COUNTERS))
    }

    fn read_counter(&self, index: u32) -> Result<Counter, DataplaneError> {
        let per_cpu = self
            .counters
            .get(&index, 0)
            .map_err(map_err(MAP_COUNTERS))?;
        Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
            packets: sum.packets + c.packets,
            bytes: sum.bytes + c.bytes,
        }))
    }

    /// The per-chain counters of the generations written by this daemon (the active one
    /// first).
    pub fn live_counters(&self) -> Result<Vec<Generation>, DataplaneError> {
        let epoch = self.epoch()?;
        let mut out = Vec::new();
        for e in [epoch, epoch.wrapping_sub(1)] {
            let Some(image) = &self.written[(e & 1) as usize] else {
                continue;
            };
            let base = (e & 1) as u32 * COUNTERS_PER_GEN;
            let mut rows = Vec::new();
            for (i, label) in image.counters.iter().enumerate() {
                rows.push(Row::new(
                    label.clone(),
                    self.read_counter(base + i as u32 + 1)?,
                ));
            }
            out.push(Generation { epoch: e, rows });
        }
        Ok(out)
    }

    /// Drops the totals of counters and SF interfaces that neither live generation (the one
    /// just written and the one it replaced) has, so that deleted objects and vanished
    /// interfaces do not pile up over the daemon's life.
    fn forget_what_is_gone(&mut self) {
        let [a, b] = &self.written;
        let live = [a.as_ref(), b.as_ref()];
        self.chain_counters
            .keep_only(|label| live.iter().flatten().any(|i| i.counters.contains(label)));
        self.member_totals.retain(|side, _| {
            live.iter()
                .flatten()
                .any(|i| i.sides.values().any(|s| s == side))
        });
    }

    /// Gives every side of an SF-facing interface of `image` a counter slot, keeping the ones
    /// they have; sides that neither `image` nor the active generation uses give theirs up
    /// (their counts move to the totals).
    fn assign_member_slots(&mut self, image: &Image, active: usize) -> Result<(), DataplaneError> {
        let active_sides = self.written[active].as_ref().map(|i| &i.sides);
        let keep = |key: &u32| {
            image.sides.contains_key(key)
                || active_sides.is_some_and(|sides| sides.contains_key(key))
        };
        let released: Vec<(u32, u16)> = self
            .member_slots
            .iter()
            .filter(|(key, _)| !keep(key))
            .map(|(k, s)| (*k, *s))
            .collect();
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        for (key, slot) in released {
            let counts = self.read_member_counter(slot)?;
            let label = self.member_labels.remove(&key).unwrap_or(Side {
                pair: String::new(),
                interface: format!("ifindex {}", key & !SIDE_EGRESS),
                role: if key & SIDE_EGRESS != 0 {
                    Role::Egress
                } else {
                    Role::Ingress
                },
            });
            add_member(self.member_totals.entry(label).or_default(), &counts);
            let zero = PerCpuValues::try_from(vec![MemberCounter::default(); cpus])
                .map_err(DataplaneError::Cpus)?;
            self.member_counters
                .set(slot as u32, zero, 0)
                .map_err(map_err(MAP_MEMBER_COUNTERS))?;
            remove_ok(self.member_slot_map.remove(&key)).map_err(map_err(MAP_MEMBER_SLOTS))?;
            self.member_slots.remove(&key);
        }
        for (&key, side) in &image.sides {
            self.member_labels.insert(key, side.clone());
            if self.member_slots.contains_key(&key) {
                continue;
            }
            let used: std::collections::BTreeSet<u16> =
                self.member_slots.values().copied().collect();
            let Some(slot) = (1..MEMBER_SLOTS as u16).find(|s| !used.contains(s)) else {
                return Err(DataplaneError::MemberSlots {
                    limit: MEMBER_SLOTS - 1,
                });
            };
            self.member_slot_map
                .insert(key, slot as u32, 0)
                .map_err(map_err(MAP_MEMBER_SLOTS))?;
            self.member_slots.insert(key, slot);
        }
        Ok(())
    }

    fn read_member_counter(&self, slot: u16) -> Result<MemberCounter, DataplaneError> {
        let per_cpu = self
            .member_counters
            .get(&(slot as u32), 0)
            .map_err(map_err(MAP_MEMBER_COUNTERS))?;
        let mut sum = MemberCounter::default();
        for c in per_cpu.iter() {
            add_member(&mut sum, c);
        }
        Ok(sum)
    }

    /// Traffic into and out of each side of an SF-facing interface, by pair and interface
    /// (live slots plus what sides that went away had counted).
    pub fn member_counters(&self) -> Result<BTreeMap<Side, MemberCounter>, DataplaneError> {
        let mut out = self.member_totals.clone();
        for (key, slot) in &self.member_slots {
            let Some(label) = self.member_labels.get(key) else {
                continue;
            };
            add_member(
                out.entry(label.clone()).or_default(),
                &self.read_member_counter(*slot)?,
            );
        }
        Ok(out)
    }

    /// `member` with the counter slot of its side `key` (keeping the `SLOT_PEER` bit the
    /// compiler set).
    fn with_slot(&self, member: Member, key: u32) -> Member {
        let slot = self.member_slots.get(&key).copied().unwrap_or(0);
        Member {
            slot: (member.slot & SLOT_PEER) | slot,
            ..member
        }
    }

    /// Both sides of a group member with their counter slots: its ingress side's, and its
    /// egress side's (the ingress side's when the pair uses one interface for both).
    fn with_slots(&self, entry: &RingEntry) -> RingEntry {
        let (ingress, egress) = (entry.ingress, entry.egress);
        let role = if egress.ifindex == ingress.ifindex {
            Role::Both
        } else {
            Role::Egress
        };
        RingEntry {
            ingress: self.with_slot(ingress, Side::key(ingress.ifindex, Role::Ingress)),
            egress: self.with_slot(egress, Side::key(egress.ifindex, role)),
        }
    }

    /// The counter slots of what arrives on `ifindex` from an SF (`PortValue::slot` and
    /// `reverse_slot`): going forward it left the pair whose egress this is (the one pair of
    /// a pair using one interface for both sides), in reverse the pair whose ingress this is.
    fn arrival_slots(&self, image: &Image, ifindex: u32) -> (u16, u16) {
        let slot = |key: u32| self.member_slots.get(&key).copied().unwrap_or(0);
        let both = image
            .sides
            .get(&ifindex)
            .is_some_and(|side| side.role == Role::Both);
        let forward = if both {
            slot(ifindex)
        } else {
            slot(Side::key(ifindex, Role::Egress))
        };
        (forward, slot(Side::key(ifindex, Role::Ingress)))
    }

    /// Makes the liveness map hold exactly the interfaces either generation redirects into
    /// that are up with a carrier. The kernel takes a deleted interface out by itself; this
    /// adds the new ones (before a flip) and follows links going up and down.
    pub fn sync_live(&mut self, interfaces: &Interfaces) -> Result<(), DataplaneError> {
        let running: BTreeSet<u32> = interfaces
            .links
            .values()
            .filter(|l| l.up && l.running)
            .map(|l| l.index)
            .collect();
        let want: BTreeSet<u32> = self
            .written
            .iter()
            .flatten()
            .flat_map(redirect_targets)
            .filter(|i| running.contains(i))
            .collect();
        // The kernel may have dropped some already: read what is there.
        let have: BTreeSet<u32> = self.live.keys().filter_map(Result::ok).collect();
        for &ifindex in have.difference(&want) {
            remove_ok(self.live.remove(ifindex)).map_err(map_err(MAP_LIVE))?;
        }
        for &ifindex in want.difference(&have) {
            match self.live.insert(ifindex, ifindex, None, 0) {
                Ok(()) => {}
                // Gone between the read and now: the next netlink event tells.
                Err(XdpMapError::MapError(MapError::SyscallError(e)))
                    if e.io_error.raw_os_error() == Some(libc::ENODEV) => {}
                Err(XdpMapError::MapError(source)) => {
                    return Err(DataplaneError::Map {
                        name: MAP_LIVE,
                        source,
                    })
                }
                Err(e) => return Err(DataplaneError::Live(e)),
            }
        }
        Ok(())
    }

    /// Forgets datagrams whose fragments stopped coming (the datapath already ignores them;
    /// this frees their room in the table).
    /// The table is walked only if it may hold something: it held entries at the last sweep,
    /// or a first fragment was tracked since (there is no fragment traffic most of the time).
    pub fn sweep_fragments(&mut self) -> Result<(), DataplaneError> {
        let tracked = self.stat(stat::FRAGMENTS_TRACKED)?;
        if self.fragments_swept == Some((tracked, 0)) {
            return Ok(());
        }
        let now = monotonic_ns();
        let mut stale = Vec::new();
        let mut left = 0;
        for (key, state) in self.fragments.iter().filter_map(Result::ok) {
            if now.saturating_sub(state.first_ns) > FRAGMENT_TIMEOUT_NS {
                stale.push(key);
            } else {
                left += 1;
            }
        }
        for key in stale {
            remove_ok(self.fragments.remove(&key)).map_err(map_err(MAP_FRAGMENTS))?;
        }
        self.fragments_swept = Some((tracked, left));
        Ok(())
    }

    fn write(&mut self, gen: usize, image: &Image) -> Result<(), DataplaneError> {
        let base = gen as u32 * SLOTS_PER_GEN * RING_SIZE;
        // Taken while written: a failed write leaves the generation's tables unknown.
        let held = std::mem::take(&mut self.rings_held[gen]);
        let mut rings = Vec::with_capacity(image.rings.len().max(held.len()));
        for (slot, ring) in image.rings.iter().enumerate() {
            let entries: Vec<RingEntry> = ring.iter().map(|e| self.with_slots(e)).collect();
            let before = held.get(slot).map_or(&[][..], Vec::as_slice);
            for (i, entry) in entries.iter().enumerate() {
                if before.get(i) != Some(entry) {
                    let index = base + slot as u32 * RING_SIZE + i as u32;
                    self.ring.set(index, entry, 0).map_err(map_err(MAP_RING))?;
                }
            }
            rings.push(entries);
            // Pins are honoured only for members listed here: written with the tables,
            // before any classifier entry points at them.
            for (key, entry) in members_of(gen, slot, ring) {
                let entry = self.with_slots(&entry);
                self.members
                    .insert(key, entry, 0)
                    .map_err(map_err(MAP_MEMBERS))?;
            }
        }
        // Tables past this image's keep what they held.
        rings.extend(held.into_iter().skip(image.rings.len()));
        self.rings_held[gen] = rings;
        // Source-port ranges before the classify entries that point at them.
        let ranges_base = gen as u32 * SOURCE_PORTS_PER_GEN;
        for (i, range) in image.source_ports.iter().enumerate() {
            let range = SourcePorts {
                verdict: self.verdict_of(gen, &range.verdict),
                ..*range
            };
            self.source_ports
                .set(ranges_base + i as u32, range, 0)
                .map_err(map_err(MAP_SOURCE_PORTS))?;
        }
        for (key, entry) in &image.classify {
            let key = ClassKey {
                gen: gen as u8,
                ..*key
            };
            let entry = if entry.ranges == 0 {
                ClassEntry {
                    only: SourcePorts {
                        verdict: self.verdict_of(gen, &entry.only.verdict),
                        ..entry.only
                    },
                    ..*entry
                }
            } else {
                ClassEntry {
                    first: ranges_base + entry.first,
                    ..*entry
                }
            };
            self.insert_classify(key, entry)?;
        }
        for (&id, peer) in &image.remotes {
            let key = RemoteKey {
                gen: gen as u32,
                id,
            };
            self.remotes
                .insert(key, peer, 0)
                .map_err(map_err(MAP_REMOTES))?;
        }
        for (&id, &(member, side)) in &image.landing {
            let key = RemoteKey {
                gen: gen as u32,
                id,
            };
            let member = self.with_slot(member, side);
            self.landing
                .insert(key, member, 0)
                .map_err(map_err(MAP_LANDING))?;
        }
        for (ifindex, value) in &image.ports {
            let key = PortKey {
                ifindex: *ifindex,
                gen: gen as u32,
            };
            let (slot, reverse_slot) = self.arrival_slots(image, *ifindex);
            let value = PortValue {
                slot,
                reverse_slot,
                ..*value
            };
            self.ports
                .insert(key, value, 0)
                .map_err(map_err(MAP_PORTS))?;
        }
        // Last: from now on packets from other nodes of this revision land here.
        self.config
            .set(CONFIG_REVISION + gen as u32, u64::from(image.revision), 0)
            .map_err(map_err(MAP_CONFIG))?;
        self.written[gen] = Some(image.clone());
        Ok(())
    }

    /// Writes a classifier entry into the map of its family.
    fn insert_classify(&mut self, key: ClassKey, entry: ClassEntry) -> Result<(), DataplaneError> {
        if key.family == FAMILY_V4 {
            self.classify4
                .insert(ClassKey4::of(&key), entry, 0)
                .map_err(map_err(MAP_CLASSIFY4))
        } else {
            self.classify
                .insert(key, entry, 0)
                .map_err(map_err(MAP_CLASSIFY))
        }
    }

    /// Removes a classifier entry from the map of its family; one already gone is no error.
    fn remove_classify(&mut self, key: &ClassKey) -> Result<(), DataplaneError> {
        if key.family == FAMILY_V4 {
            remove_ok(self.classify4.remove(&ClassKey4::of(key))).map_err(map_err(MAP_CLASSIFY4))
        } else {
            remove_ok(self.classify.remove(key)).map_err(map_err(MAP_CLASSIFY))
        }
    }

    /// A verdict as generation `gen` holds it: pointing at its own group tables and counters.
    fn verdict_of(&self, gen: usize, verdict: &Verdict) -> Verdict {
        Verdict {
            slot: gen as u32 * SLOTS_PER_GEN + verdict.slot,
            counter: gen as u32 * COUNTERS_PER_GEN + verdict.counter,
            tap_slot: self
                .member_slots
                .get(&verdict.tap_ifindex)
                .copied()
                .unwrap_or(0),
            ..*verdict
        }
    }

    /// Empties one (inactive) generation: from memory when we wrote it, by walking the maps
    /// when an earlier daemon did. First it stops holding its revision, so that no packet
    /// from another node lands on it while it is half rewritten.
    fn clear(&mut self, gen: usize) -> Result<(), DataplaneError> {
        self.config
            .set(CONFIG_REVISION + gen as u32, 0, 0)
            .map_err(map_err(MAP_CONFIG))?;
        let written = self.written[gen].take();
        let member_keys: Vec<MemberKey> = match &written {
            Some(image) => image
                .rings
                .iter()
                .enumerate()
                .flat_map(|(slot, ring)| members_of(gen, slot, ring).map(|(key, _)| key))
                .collect(),
            None => self
                .members
                .keys()
                .filter_map(Result::ok)
                .filter(|k| (k.slot / SLOTS_PER_GEN) as usize == gen)
                .collect(),
        };
        for key in member_keys {
            remove_ok(self.members.remove(&key)).map_err(map_err(MAP_MEMBERS))?;
        }
        // What an earlier daemon wrote is found by walking the maps: IPv4 keys in their own.
        let (class_keys, class4_keys, port_keys): (Vec<ClassKey>, Vec<ClassKey4>, Vec<PortKey>) =
            match written {
                Some(image) => (
                    image
                        .classify
                        .keys()
                        .map(|k| ClassKey {
                            gen: gen as u8,
                            ..*k
                        })
                        .collect(),
                    Vec::new(),
                    image
                        .ports
                        .keys()
                        .map(|&ifindex| PortKey {
                            ifindex,
                            gen: gen as u32,
                        })
                        .collect(),
                ),
                None => (
                    self.classify
                        .keys()
                        .filter_map(Result::ok)
                        .filter(|k| k.gen as usize == gen)
                        .collect(),
                    self.classify4
                        .keys()
                        .filter_map(Result::ok)
                        .filter(|k| k.gen as usize == gen)
                        .collect(),
                    self.ports
                        .keys()
                        .filter_map(Result::ok)
                        .filter(|k| k.gen as usize == gen)
                        .collect(),
                ),
            };
        for key in port_keys {
            remove_ok(self.ports.remove(&key)).map_err(map_err(MAP_PORTS))?;
        }
        for key in class_keys {
            self.remove_classify(&key)?;
        }
        for key in class4_keys {
            remove_ok(self.classify4.remove(&key)).map_err(map_err(MAP_CLASSIFY4))?;
        }
        let of_gen = |key: &RemoteKey| key.gen as usize == gen;
        let remote_keys: Vec<RemoteKey> = self.remotes.keys().filter_map(Result::ok).collect();
        for key in remote_keys.into_iter().filter(of_gen) {
            remove_ok(self.remotes.remove(&key)).map_err(map_err(MAP_REMOTES))?;
        }
        let landing_keys: Vec<RemoteKey> = self.landing.keys().filter_map(Result::ok).collect();
        for key in landing_keys.into_iter().filter(of_gen) {
            remove_ok(self.landing.remove(&key)).map_err(map_err(MAP_LANDING))?;
        }
        Ok(())
    }

    /// Makes the tunnel sources exactly the nodes `image` takes tunnel packets from.
    fn sync_tunnel_peers(&mut self, image: &Image) -> Result<(), DataplaneError> {
        let have: BTreeSet<TunnelPeer> = self.tunnel_peers.keys().filter_map(Result::ok).collect();
        for peer in have.difference(&image.tunnel_peers) {
            remove_ok(self.tunnel_peers.remove(peer)).map_err(map_err(MAP_TUNNEL_PEERS))?;
        }
        for peer in image.tunnel_peers.difference(&have) {
            self.tunnel_peers
                .insert(peer, 1, 0)
                .map_err(map_err(MAP_TUNNEL_PEERS))?;
        }
        Ok(())
    }

    /// Sends packets to other nodes out of `underlay` and takes theirs from it, from and to
    /// this node's tunnel address; `None`: no tunnel (outside a cluster).
    pub fn set_tunnel(&mut self, underlay: Option<&Underlay>) -> Result<(), DataplaneError> {
        let want: BTreeMap<String, u32> = underlay
            .map(|u| (u.name.clone(), u.index))
            .into_iter()
            .collect();
        self.tunnel.attach_missing(&want, &mut self.bpf)?;
        self.tunnel.detach_stale(&want);
        // XDP strips first where it may; TC takes what it did not (or where it is refused).
        let early = if underlay.is_some_and(|u| u.xdp) {
            want
        } else {
            BTreeMap::new()
        };
        self.tunnel_xdp.attach_missing(&early, &mut self.bpf)?;
        self.tunnel_xdp.detach_stale(&early);
        // The address of one family is written, the other's slots are zeroed: the program
        // takes the underlay's family from which is set.
        let (mut v4, mut v6) = (0, [0, 0]);
        match underlay.map(|u| u.address) {
            Some(IpAddr::V4(a)) => v4 = u32::from_ne_bytes(a.octets()),
            Some(IpAddr::V6(a)) => {
                let o = a.octets();
                v6 = [0, 8].map(|at| u64::from_ne_bytes(o[at..at + 8].try_into().unwrap()));
            }
            None => {}
        }
        let (index, usable) = underlay.map_or((0, 0), |u| (u.index, u.usable_mtu()));
        let slots = [
            (CONFIG_TUNNEL_ADDRESS, u64::from(v4)),
            (CONFIG_TUNNEL_ADDRESS6, v6[0]),
            (CONFIG_TUNNEL_ADDRESS6 + 1, v6[1]),
            (CONFIG_TUNNEL_USABLE_MTU, u64::from(usable)),
            (CONFIG_TUNNEL_IFINDEX, u64::from(index)),
        ];
        for (slot, value) in slots {
            self.config
                .set(slot, value, 0)
                .map_err(map_err(MAP_CONFIG))?;
        }
        Ok(())
    }

    /// Datapath counters, summed over CPUs, in `stat::NAMES` order.
    pub fn stats(&self) -> Result<Vec<u64>, DataplaneError> {
        (0..stat::COUNT).map(|i| self.stat(i)).collect()
    }

    fn stat(&self, index: u32) -> Result<u64, DataplaneError> {
        self.stats
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .map_err(map_err(MAP_STATS))
    }
}

/// The `sfc_v12_members` entries of group table `slot` (relative) of generation `gen`.
fn members_of(
    gen: usize,
    slot: usize,
    ring: &[RingEntry],
) -> impl Iterator<Item = (MemberKey, RingEntry)> + '_ {
    let slot = gen as u32 * SLOTS_PER_GEN + slot as u32;
    let unique: BTreeMap<u32, RingEntry> = ring
        .iter()
        .filter(|e| e.ingress.ifindex != 0)
        .map(|e| (e.ingress.ifindex, *e))
        .collect();
    unique
        .into_iter()
        .map(move |(ifindex, entry)| (MemberKey { slot, ifindex }, entry))
}

/// Every interface of this node `image` redirects into: member sides, taps, logical
/// destination ports, and those other nodes send to.
fn redirect_targets(image: &Image) -> impl Iterator<Item = u32> + '_ {
    let members = image
        .rings
        .iter()
        .flatten()
        .flat_map(|e| [e.ingress.ifindex, e.egress.ifindex]);
    let verdicts = image
        .verdicts()
        .flat_map(|v| [v.deliver_ifindex, v.tap_ifindex]);
    let landing = image.landing.values().map(|(m, _)| m.ifindex);
    members
        .chain(verdicts)
        .chain(landing)
        .filter(|&i| i != 0 && i & REMOTE == 0)
}

/// A daemon killed during `sfcctl trace` leaves its filter on (the map is pinned), and the
/// datapath would go on matching packets and writing events nobody reads: that trace ended
/// with its daemon.
fn clear_trace_filter(bpf: &mut Ebpf) -> Result<(), DataplaneError> {
    // Borrowed, not taken: the programs are not loaded yet, and need the map's descriptor.
    let map = bpf
        .map_mut(MAP_TRACE_FILTER)
        .ok_or(DataplaneError::MissingMap(MAP_TRACE_FILTER))?;
    let mut filters: Array<&mut MapData, TraceFilter> =
        Array::try_from(map).map_err(map_err(MAP_TRACE_FILTER))?;
    let left = filters.get(&0, 0).map_err(map_err(MAP_TRACE_FILTER))?;
    if left.enabled != 0 {
        filters
            .set(0, TraceFilter::default(), 0)
            .map_err(map_err(MAP_TRACE_FILTER))?;
        warn!(
            "cleared the trace filter an earlier daemon left on (it ended during `sfcctl trace`)"
        );
    }
    Ok(())
}

fn add_member(total: &mut MemberCounter, c: &MemberCounter) {
    total.into_packets += c.into_packets;
    total.into_bytes += c.into_bytes;
    total.from_packets += c.from_packets;
    total.from_bytes += c.from_bytes;
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn remove_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// A fingerprint of an image's whole contents (its maps are ordered, so equal images hash
/// alike).
fn fingerprint(image: &Image) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    image.hash(&mut hasher);
    hasher.finish()
}
