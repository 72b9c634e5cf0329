//! The kernel side: bpffs, the pinned maps, the program and its per-interface links.
//!
//! Updates are make-before-break: an image is written into the inactive generation (group
//! tables first, then classifier entries, then the per-interface roots), and one write of the
//! epoch flips every interface to it at once. The old generation stays intact until the next
//! update, so packets already in flight finish on it.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use sfc_common::{
    stat, ClassKey, Member, PortKey, PortValue, Verdict, CONFIG_EPOCH, MAP_CLASSIFY, MAP_CONFIG,
    MAP_PORTS, MAP_RING, MAP_STATS, PROGRAM_TC, RING_SIZE, SLOTS_PER_GEN,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::compile::Image;

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
    #[error("program {PROGRAM_TC}: {0}")]
    Program(#[from] ProgramError),
    #[error("link for interface {iface}: {message}")]
    Link { iface: String, message: String },
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

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

pub struct Dataplane {
    bpf: Ebpf,
    links_dir: PathBuf,
    config: Array<MapData, u64>,
    ports: HashMap<MapData, PortKey, PortValue>,
    classify: HashMap<MapData, ClassKey, Verdict>,
    ring: Array<MapData, Member>,
    stats: PerCpuArray<MapData, u64>,
    /// What each generation holds, when known (unknown after a restart).
    written: [Option<Image>; 2],
    /// Interfaces with our program attached: name -> ifindex.
    attached: BTreeMap<String, u32>,
}

impl Dataplane {
    /// Loads the program and opens (or creates) the pinned maps under `bpffs`. Links pinned by
    /// an earlier daemon are adopted, and moved atomically onto this daemon's program.
    pub fn open(bpffs: &Path) -> Result<Self, DataplaneError> {
        ensure_bpffs(bpffs)?;
        let maps_dir = bpffs.join("maps");
        let links_dir = bpffs.join("links");
        for dir in [&maps_dir, &links_dir] {
            fs::create_dir_all(dir).map_err(|source| DataplaneError::Bpffs {
                path: dir.clone(),
                source,
            })?;
        }
        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(crate::EBPF_OBJECT)?;
        let program: &mut SchedClassifier = bpf
            .program_mut(PROGRAM_TC)
            .ok_or(ProgramError::UnexpectedProgramType)?
            .try_into()?;
        program.load()?;
        let mut dp = Self {
            config: take(&mut bpf, MAP_CONFIG)?,
            ports: take(&mut bpf, MAP_PORTS)?,
            classify: take(&mut bpf, MAP_CLASSIFY)?,
            ring: take(&mut bpf, MAP_RING)?,
            stats: take(&mut bpf, MAP_STATS)?,
            bpf,
            links_dir,
            written: [None, None],
            attached: BTreeMap::new(),
        };
        dp.adopt_links()?;
        Ok(dp)
    }

    pub fn program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        Ok(self
            .bpf
            .program_mut(PROGRAM_TC)
            .ok_or(ProgramError::UnexpectedProgramType)?
            .try_into()?)
    }

    pub fn epoch(&self) -> Result<u64, DataplaneError> {
        self.config
            .get(&CONFIG_EPOCH, 0)
            .map_err(map_err(MAP_CONFIG))
    }

    /// Makes `image` the active generation. A no-op when it already is.
    pub fn apply(&mut self, image: &Image) -> Result<(), DataplaneError> {
        // Make before break for interfaces too: those the new generation steers from get the
        // program before the flip (until then it finds no entry for them and passes their
        // packets), and those it no longer needs lose it only after. Attaching after the flip
        // would let packets leave a newly used SF unsteered, skipping the next hops.
        self.attach_missing(&image.attach)?;
        let epoch = self.epoch()?;
        let active = (epoch & 1) as usize;
        if self.written[active].as_ref() != Some(image) {
            let target = 1 - active;
            self.clear(target)?;
            self.write(target, image)?;
            // The flip: one 8-byte write, seen by the next packet on every CPU.
            self.config
                .set(CONFIG_EPOCH, epoch + 1, 0)
                .map_err(map_err(MAP_CONFIG))?;
            info!(
                epoch = epoch + 1,
                ports = image.ports.len(),
                classifier_entries = image.classify.len(),
                groups = image.rings.len(),
                "dataplane updated"
            );
        }
        self.detach_stale(&image.attach);
        Ok(())
    }

    fn write(&mut self, gen: usize, image: &Image) -> Result<(), DataplaneError> {
        let base = gen as u32 * SLOTS_PER_GEN * RING_SIZE;
        for (slot, ring) in image.rings.iter().enumerate() {
            for (i, member) in ring.iter().enumerate() {
                let index = base + slot as u32 * RING_SIZE + i as u32;
                self.ring.set(index, member, 0).map_err(map_err(MAP_RING))?;
            }
        }
        for (key, verdict) in &image.classify {
            let key = ClassKey {
                gen: gen as u8,
                ..*key
            };
            // Verdicts point at this generation's own group tables.
            let verdict = Verdict {
                slot: gen as u32 * SLOTS_PER_GEN + verdict.slot,
                ..*verdict
            };
            self.classify
                .insert(key, verdict, 0)
                .map_err(map_err(MAP_CLASSIFY))?;
        }
        for (ifindex, value) in &image.ports {
            let key = PortKey {
                ifindex: *ifindex,
                gen: gen as u32,
            };
            self.ports
                .insert(key, value, 0)
                .map_err(map_err(MAP_PORTS))?;
        }
        self.written[gen] = Some(image.clone());
        Ok(())
    }

    /// Empties one (inactive) generation: from memory when we wrote it, by walking the maps
    /// when an earlier daemon did.
    fn clear(&mut self, gen: usize) -> Result<(), DataplaneError> {
        let (class_keys, port_keys): (Vec<ClassKey>, Vec<PortKey>) = match self.written[gen].take()
        {
            Some(image) => (
                image
                    .classify
                    .keys()
                    .map(|k| ClassKey {
                        gen: gen as u8,
                        ..*k
                    })
                    .collect(),
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
            remove_ok(self.classify.remove(&key)).map_err(map_err(MAP_CLASSIFY))?;
        }
        Ok(())
    }

    /// Datapath counters, summed over CPUs, in `stat::NAMES` order.
    pub fn stats(&self) -> Result<Vec<u64>, DataplaneError> {
        read_stats(&self.stats)
    }

    fn pin_path(&self, iface: &str, ifindex: u32) -> PathBuf {
        self.links_dir.join(format!("{ifindex}_{iface}"))
    }

    /// Takes over the links an earlier daemon pinned, replacing their program with ours
    /// (bpf_link_update: atomic, no packet sees an interface without a program).
    fn adopt_links(&mut self) -> Result<(), DataplaneError> {
        let entries = fs::read_dir(&self.links_dir).map_err(|source| DataplaneError::Bpffs {
            path: self.links_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().to_string();
            let Some((index, iface)) = file
                .split_once('_')
                .and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.to_string())))
            else {
                continue;
            };
            match self.replace_program(&path) {
                Ok(()) => {
                    info!(iface, ifindex = index, "adopted pinned link");
                    self.attached.insert(iface, index);
                }
                Err(e) => {
                    warn!(iface, error = %e, "dropping a stale pinned link");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    fn replace_program(&mut self, pin: &Path) -> Result<(), String> {
        let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
        let link =
            SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
        let program = self.program().map_err(|e| e.to_string())?;
        let id = program.attach_to_link(link).map_err(|e| e.to_string())?;
        // The pin keeps the link alive; our handle can go.
        drop(program.take_link(id).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Attaches to every interface in `want` that does not have the program yet.
    fn attach_missing(&mut self, want: &BTreeMap<String, u32>) -> Result<(), DataplaneError> {
        for (iface, &index) in want {
            match self.attached.get(iface) {
                Some(&old) if old == index => continue,
                // The name now belongs to a new interface; the old one is gone, and so is the
                // only thing its link and pin still hold.
                Some(&old) => self.detach(iface, old),
                None => {}
            }
            self.attach(iface, index)?;
        }
        Ok(())
    }

    /// Detaches from every interface not in `want`.
    fn detach_stale(&mut self, want: &BTreeMap<String, u32>) {
        let stale: Vec<(String, u32)> = self
            .attached
            .iter()
            .filter(|(name, index)| want.get(*name) != Some(index))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        for (iface, index) in stale {
            self.detach(&iface, index);
        }
    }

    fn attach(&mut self, iface: &str, ifindex: u32) -> Result<(), DataplaneError> {
        let pin = self.pin_path(iface, ifindex);
        let link_err = |message: String| DataplaneError::Link {
            iface: iface.to_string(),
            message,
        };
        let program = self.program()?;
        // TCX (a bpf_link, pinnable) where the kernel has it; classic clsact otherwise.
        match program.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        ) {
            Ok(id) => {
                let link = program.take_link(id)?;
                let fd: FdLink = link
                    .try_into()
                    .map_err(|e: LinkError| link_err(e.to_string()))?;
                fd.pin(&pin).map_err(|e| link_err(e.to_string()))?;
            }
            Err(tcx_error) => {
                warn!(iface, error = %tcx_error, "TCX attach failed, using clsact");
                if let Err(e) = tc::qdisc_add_clsact(iface) {
                    if !matches!(&e, tc::TcError::IoError(io) if io.kind() == io::ErrorKind::AlreadyExists)
                    {
                        warn!(iface, error = %e, "adding clsact");
                    }
                }
                let _ = tc::qdisc_detach_program(iface, TcAttachType::Ingress, PROGRAM_TC);
                let id = program.attach_with_options(
                    iface,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(Default::default()),
                )?;
                // A tc filter outlives this process without a pin.
                std::mem::forget(program.take_link(id)?);
            }
        }
        info!(iface, ifindex, "attached");
        self.attached.insert(iface.to_string(), ifindex);
        Ok(())
    }

    fn detach(&mut self, iface: &str, ifindex: u32) {
        let pin = self.pin_path(iface, ifindex);
        match fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = tc::qdisc_detach_program(iface, TcAttachType::Ingress, PROGRAM_TC);
            }
            Err(e) => warn!(iface, error = %e, "removing link pin"),
        }
        info!(iface, ifindex, "detached");
        self.attached.remove(iface);
    }
}

fn remove_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

pub fn read_stats(stats: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>, DataplaneError> {
    (0..stat::COUNT)
        .map(|i| {
            stats
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .map_err(map_err(MAP_STATS))
        })
        .collect()
}

/// Opens the pinned counters without loading anything (for readers other than the daemon).
pub fn open_stats(bpffs: &Path) -> Result<PerCpuArray<MapData, u64>, DataplaneError> {
    let data = MapData::from_pin(bpffs.join("maps").join(MAP_STATS)).map_err(map_err(MAP_STATS))?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(map_err(MAP_STATS))
}
