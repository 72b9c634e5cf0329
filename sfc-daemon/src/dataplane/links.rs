//! The program's per-interface links, one set per hook, each link pinned in bpffs so that it
//! outlives the daemon (a restarted daemon adopts them and swaps its program in atomically).
//!
//! A TCX link costs its attach two RCU grace periods under RTNL (about 12 ms here, and no two
//! run at once); a tc filter on clsact costs a fraction of a millisecond. So an SF's interface
//! first gets the program as a filter (it steers at once), and the TCX link once the chain is
//! in effect ([`Links::settle`]): only TCX puts it ahead of other TCX programs, and only a link
//! can be pinned and swapped atomically by the next daemon.
//!
//! Adding or deleting a qdisc deactivates the device for a moment (the kernel does so for any
//! qdisc graft), and what the node sends into it then is dropped. So a logical port, which
//! carries its VM's traffic before any chain, gets its TCX link straight away (unless it has
//! a clsact already, which a filter can use without a graft); and the clsact qdisc added for
//! an SF interface's filter stays until that interface leaves steering, when nothing is
//! steered into it any more. Which clsacts the daemon added is kept in bpffs beside the links
//! ([`AddedClsacts`]), so that a restarted daemon still takes them off.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};
use sfc_common::{PROGRAM_TC, PROGRAM_TUNNEL, PROGRAM_TUNNEL_XDP, PROGRAM_XDP};
use tracing::{info, warn};

use crate::dataplane::{netlink, DataplaneError};

/// Where the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress: every packet, with every action.
    Tc,
    /// XDP in the driver, in front of TC: what it can finish there (see sfc-ebpf's frame.rs).
    Xdp,
    /// TC ingress of the underlay interface (the one with the tunnel address): packets other
    /// nodes send on along their chains.
    Tunnel,
    /// XDP on the underlay interface, in front of `Tunnel`: strips those packets before GRO.
    TunnelXdp,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Tc => "tc",
            Hook::Xdp => "xdp",
            Hook::Tunnel => "tunnel",
            Hook::TunnelXdp => "tunnel-xdp",
        }
    }

    /// The TC program of a TC hook (of an XDP hook, the one beside it).
    fn program(self) -> &'static str {
        match self {
            Hook::Tunnel | Hook::TunnelXdp => PROGRAM_TUNNEL,
            Hook::Tc | Hook::Xdp => PROGRAM_TC,
        }
    }

    fn is_xdp(self) -> bool {
        matches!(self, Hook::Xdp | Hook::TunnelXdp)
    }

    /// The XDP program of an XDP hook.
    fn xdp_program(self) -> &'static str {
        match self {
            Hook::TunnelXdp => PROGRAM_TUNNEL_XDP,
            _ => PROGRAM_XDP,
        }
    }
}

/// The directory of [`AddedClsacts`], beside the hooks' (one for all: a clsact qdisc is the
/// interface's, whichever hook's filter it was added for).
const ADDED_CLSACTS: &str = "added-clsacts";

pub struct Links {
    hook: Hook,
    dir: PathBuf,
    /// Interfaces with this hook's program attached: name -> ifindex.
    attached: BTreeMap<String, u32>,
    /// Interfaces where XDP could not be attached (the driver has no native XDP, say), with
    /// why: not retried until the interface changes; TC steers their packets.
    refused: BTreeMap<String, (u32, String)>,
    /// Interfaces steered by a tc filter until [`Self::settle`] gives them their TCX link.
    filters: BTreeMap<String, Filter>,
    /// Interfaces whose clsact qdisc was added for a filter: deleted when the interface loses
    /// the program (see the module doc).
    added_clsacts: AddedClsacts,
}

/// The program as a tc filter on an interface; dropping it detaches the filter.
struct Filter {
    link: SchedClassifierLink,
}

/// The interfaces whose clsact qdisc a daemon added, one empty directory `{ifindex}_{name}`
/// each in bpffs: bpffs holds only pins and directories, and it lives exactly as long as the
/// links do (a reboot empties it, and the interfaces are new then).
struct AddedClsacts {
    dir: PathBuf,
}

impl AddedClsacts {
    /// The marks under `dir`, less those of interfaces gone since (another interface may have
    /// the name now, and its clsact is not ours).
    fn open(dir: PathBuf) -> Self {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let exists = name
                .split_once('_')
                .and_then(|(index, iface)| Some((index.parse::<u32>().ok()?, iface)))
                .is_some_and(|(index, iface)| interface_name(index).as_deref() == Some(iface));
            if !exists {
                let _ = fs::remove_dir(entry.path());
            }
        }
        Self { dir }
    }

    fn path(&self, iface: &str, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{ifindex}_{iface}"))
    }

    fn insert(&self, iface: &str, ifindex: u32) {
        let made = fs::create_dir_all(&self.dir)
            .and_then(|()| fs::create_dir(self.path(iface, ifindex)))
            .or_else(|e| {
                (e.kind() == io::ErrorKind::AlreadyExists)
                    .then_some(())
                    .ok_or(e)
            });
        if let Err(e) = made {
            // A restarted daemon will leave this clsact.
            warn!(iface, error = %e, "recording the clsact qdisc added");
        }
    }

    /// Whether `iface` had its mark, which is gone now.
    fn remove(&self, iface: &str, ifindex: u32) -> bool {
        fs::remove_dir(self.path(iface, ifindex)).is_ok()
    }
}

/// The name of the interface `ifindex` in this namespace, if there is one.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE long, as if_indextoname requires.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success it holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

pub(crate) fn tc_program(bpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    classifier(bpf, PROGRAM_TC)
}

pub(crate) fn classifier<'a>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    Ok(bpf
        .program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)?
        .try_into()?)
}

pub(crate) fn xdp_program<'a>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut Xdp, DataplaneError> {
    Ok(bpf
        .program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)?
        .try_into()?)
}

impl Links {
    /// The links pinned under `dir` by an earlier daemon, moved onto `bpf`'s program.
    pub fn adopt(hook: Hook, dir: PathBuf, bpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        fs::create_dir_all(&dir).map_err(|source| DataplaneError::Bpffs {
            path: dir.clone(),
            source,
        })?;
        let mut links = Self {
            hook,
            added_clsacts: AddedClsacts::open(dir.with_file_name(ADDED_CLSACTS)),
            dir,
            attached: BTreeMap::new(),
            refused: BTreeMap::new(),
            filters: BTreeMap::new(),
        };
        let entries = fs::read_dir(&links.dir).map_err(|source| DataplaneError::Bpffs {
            path: links.dir.clone(),
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
            match links.replace_program(&path, bpf) {
                Ok(()) => {
                    if !hook.is_xdp() {
                        // A daemon that stopped between the filter and the link left both.
                        remove_filters(&iface, hook.program());
                    }
                    info!(
                        iface,
                        ifindex = index,
                        hook = hook.name(),
                        "adopted pinned link"
                    );
                    links.attached.insert(iface, index);
                }
                Err(e) => {
                    warn!(iface, hook = hook.name(), error = %e, "dropping a stale pinned link");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(links)
    }

    /// Interfaces with this hook's program attached: name -> ifindex.
    pub fn attached(&self) -> &BTreeMap<String, u32> {
        &self.attached
    }

    /// Interfaces where this hook could not be attached, with why.
    pub fn refused(&self) -> &BTreeMap<String, (u32, String)> {
        &self.refused
    }

    fn pin_path(&self, iface: &str, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{ifindex}_{iface}"))
    }

    /// bpf_link_update: atomic, no packet sees the interface without a program.
    fn replace_program(&self, pin: &Path, bpf: &mut Ebpf) -> Result<(), DataplaneError> {
        let pinned_link = |source| DataplaneError::PinnedLink {
            path: pin.to_path_buf(),
            source,
        };
        let fd = FdLink::from(PinnedLink::from_pin(pin).map_err(pinned_link)?);
        match self.hook {
            Hook::Tc | Hook::Tunnel => {
                let link = SchedClassifierLink::try_from(fd).map_err(pinned_link)?;
                let program = classifier(bpf, self.hook.program())?;
                let id = program.attach_to_link(link)?;
                // The pin keeps the link alive; our handle can go.
                drop(program.take_link(id)?);
            }
            Hook::Xdp | Hook::TunnelXdp => {
                let link = XdpLink::try_from(fd).map_err(pinned_link)?;
                let program = xdp_program(bpf, self.hook.xdp_program())?;
                let id = program.attach_to_link(link)?;
                drop(program.take_link(id)?);
            }
        }
        Ok(())
    }

    /// Attaches to every interface in `want` that does not have the program yet.
    pub fn attach_missing(
        &mut self,
        want: &BTreeMap<String, u32>,
        bpf: &mut Ebpf,
    ) -> Result<(), DataplaneError> {
        self.attach_missing_busy(want, &BTreeSet::new(), bpf)
    }

    /// The same, where those in `busy` may carry traffic already: of a TC hook, they get their
    /// TCX link at once, the others a filter first (see the module doc).
    pub fn attach_missing_busy(
        &mut self,
        want: &BTreeMap<String, u32>,
        busy: &BTreeSet<u32>,
        bpf: &mut Ebpf,
    ) -> Result<(), DataplaneError> {
        for (iface, &index) in want {
            match self.attached.get(iface) {
                Some(&old) if old == index => continue,
                // The name now belongs to a new interface; the old one is gone, and so is the
                // only thing its link and pin still hold.
                Some(&old) => self.detach(iface, old),
                None => {}
            }
            if self.refused.get(iface).is_some_and(|(i, _)| *i == index) {
                continue;
            }
            match self.hook {
                // What a chain waits for gets a filter first, unless it carries traffic
                // already (see the module doc); the underlay is attached once, when the node
                // joins.
                Hook::Tc if !busy.contains(&index) => self.attach_filter(iface, index, bpf)?,
                Hook::Tc | Hook::Tunnel => self.attach_tc(iface, index, bpf)?,
                Hook::Xdp | Hook::TunnelXdp => self.attach_xdp(iface, index, bpf)?,
            }
        }
        Ok(())
    }

    /// Gives every interface steered by a tc filter its TCX link, then takes the filter off
    /// (not a clsact qdisc added for it: the chain now sends packets into the interface).
    /// Until the filter is gone a packet the link hands on (`TCX_NEXT`) meets the program a
    /// second time, which decides it the same way again; only its counters see it twice.
    pub fn settle(&mut self, bpf: &mut Ebpf) {
        while let Some((iface, filter)) = self.filters.pop_first() {
            let Some(&index) = self.attached.get(&iface) else {
                continue;
            };
            match self.attach_tcx(&iface, index, bpf) {
                Ok(()) => drop(filter.link),
                Err(e) => {
                    // The filter stays: this kernel has no TCX, say. It outlives this process.
                    warn!(iface, error = %e, "TCX attach failed, the tc filter stays");
                    std::mem::forget(filter.link);
                }
            }
        }
    }

    /// Records that `iface` does not get this hook, and why (shown by describe).
    pub fn refuse(&mut self, iface: &str, ifindex: u32, why: &str) {
        if self.refused.get(iface).is_none_or(|(i, _)| *i != ifindex) {
            warn!(
                iface,
                ifindex, why, "no XDP here; TC alone steers this interface"
            );
            self.refused
                .insert(iface.to_string(), (ifindex, why.to_string()));
        }
    }

    /// Detaches from every interface not in `want`.
    /// Whether an interface outside `want` has the program.
    pub fn any_stale(&self, want: &BTreeMap<String, u32>) -> bool {
        self.attached
            .iter()
            .any(|(name, index)| want.get(name) != Some(index))
    }

    pub fn detach_stale(&mut self, want: &BTreeMap<String, u32>) {
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

    /// The TCX link, first on the interface, pinned; where the kernel has no TCX, a tc filter.
    fn attach_tc(
        &mut self,
        iface: &str,
        ifindex: u32,
        bpf: &mut Ebpf,
    ) -> Result<(), DataplaneError> {
        if let Err(tcx_error) = self.attach_tcx(iface, ifindex, bpf) {
            warn!(iface, error = %tcx_error, "TCX attach failed, using clsact");
            let filter = self.filter(iface, ifindex, bpf)?;
            // A tc filter outlives this process without a pin.
            std::mem::forget(filter.link);
        }
        info!(iface, ifindex, "attached");
        self.attached.insert(iface.to_string(), ifindex);
        Ok(())
    }

    /// A tc filter now, the TCX link at [`Self::settle`].
    fn attach_filter(
        &mut self,
        iface: &str,
        ifindex: u32,
        bpf: &mut Ebpf,
    ) -> Result<(), DataplaneError> {
        let filter = self.filter(iface, ifindex, bpf)?;
        info!(iface, ifindex, "attached as a tc filter");
        self.filters.insert(iface.to_string(), filter);
        self.attached.insert(iface.to_string(), ifindex);
        Ok(())
    }

    fn attach_tcx(&self, iface: &str, ifindex: u32, bpf: &mut Ebpf) -> Result<(), DataplaneError> {
        let pin = self.pin_path(iface, ifindex);
        let program = classifier(bpf, self.hook.program())?;
        let id = program.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )?;
        let link = program.take_link(id)?;
        let fd: FdLink = link
            .try_into()
            .map_err(|source: LinkError| DataplaneError::LinkFd {
                iface: iface.to_string(),
                source,
            })?;
        fd.pin(&pin).map_err(|source| DataplaneError::Pin {
            iface: iface.to_string(),
            source,
        })?;
        Ok(())
    }

    /// The program as a direct-action filter on the interface's clsact qdisc (added if
    /// missing, and then recorded as ours), in place of any an earlier daemon left there.
    fn filter(&self, iface: &str, ifindex: u32, bpf: &mut Ebpf) -> Result<Filter, DataplaneError> {
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => self.added_clsacts.insert(iface, ifindex),
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => warn!(iface, error = %e, "adding clsact"),
        }
        let name = self.hook.program();
        remove_filters(iface, name);
        let program = classifier(bpf, name)?;
        let id = program.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(Default::default()),
        )?;
        let link = program.take_link(id)?;
        Ok(Filter { link })
    }

    /// Native (driver) XDP only: generic XDP runs after the skb is built, where TC is as fast
    /// and can do more. Where the driver has none, the interface keeps TC alone.
    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        bpf: &mut Ebpf,
    ) -> Result<(), DataplaneError> {
        let pin = self.pin_path(iface, ifindex);
        let program = xdp_program(bpf, self.hook.xdp_program())?;
        let pinned = program
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .map_err(|e| e.to_string())
            .and_then(|id| program.take_link(id).map_err(|e| e.to_string()))
            .and_then(|link| FdLink::try_from(link).map_err(|e| e.to_string()))
            .and_then(|fd| fd.pin(&pin).map(drop).map_err(|e| e.to_string()));
        match pinned {
            Ok(()) => {
                info!(iface, ifindex, "attached XDP");
                self.attached.insert(iface.to_string(), ifindex);
            }
            Err(e) => self.refuse(iface, ifindex, &format!("attaching native XDP failed: {e}")),
        }
        Ok(())
    }

    fn detach(&mut self, iface: &str, ifindex: u32) {
        // Dropping the filter detaches it.
        let filtered = self.filters.remove(iface).is_some();
        let pin = self.pin_path(iface, ifindex);
        match fs::remove_file(&pin) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && filtered => {}
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.hook.is_xdp() => {
                remove_filters(iface, self.hook.program());
            }
            Err(e) => warn!(iface, error = %e, "removing link pin"),
        }
        // The program is off: the clsact added for its filter goes, unless other filters use it.
        if self.added_clsacts.remove(iface, ifindex) {
            remove_unused_clsacts(&[ifindex]);
        }
        info!(iface, ifindex, hook = self.hook.name(), "detached");
        self.attached.remove(iface);
    }

    /// Detaches from every interface (this hook is no longer wanted).
    pub fn detach_all(&mut self) {
        self.detach_stale(&BTreeMap::new());
    }
}

/// Takes off the interface's tc filters running the program `name`, if any.
fn remove_filters(iface: &str, name: &str) {
    match tc::qdisc_detach_program(iface, TcAttachType::Ingress, name) {
        Ok(()) => info!(iface, name, "removed tc filters"),
        Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(iface, error = %e, "removing tc filters"),
    }
}

fn remove_unused_clsacts(indexes: &[u32]) {
    if let Err(e) = netlink::remove_unused_clsacts(indexes) {
        warn!(?indexes, error = %e, "removing the clsact qdiscs added for tc filters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record survives a restart while its interface does, and goes with it.
    #[test]
    fn added_clsacts_keep_only_interfaces_that_still_exist() {
        let dir = std::env::temp_dir().join(format!("sfc-added-clsacts-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let lo = interface_name(1).expect("the loopback interface is ifindex 1");
        let marks = AddedClsacts::open(dir.clone());
        marks.insert(&lo, 1);
        marks.insert(&lo, 1); // Again: no error, one record.
        marks.insert("gone0", u32::MAX); // No such interface.
        marks.insert("other", 1); // The index now has another name.

        let marks = AddedClsacts::open(dir.clone());
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [format!("1_{lo}")]);
        assert!(marks.remove(&lo, 1));
        assert!(!marks.remove(&lo, 1), "removed twice");
        fs::remove_dir_all(&dir).unwrap();
    }
}
