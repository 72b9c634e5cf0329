//! What the steering code needs from a packet, for the two hooks it runs at: TC (an skb) and
//! XDP (a frame in the driver). One implementation of the steering logic serves both.
//!
//! The XDP program carries out only what it can finish there (steering into a member,
//! delivering after the last hop, dropping for want of a member). Everything else (taps, handing
//! a packet back to the stack, fragments, what it cannot parse) it passes untouched, with no
//! counter or flow state changed, to the TC program attached to the same interface, which does
//! it all.

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_INGRESS, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{
        bpf_clone_redirect, bpf_redirect, bpf_redirect_peer, bpf_skb_change_type,
        bpf_xdp_load_bytes,
    },
    programs::{TcContext, XdpContext},
};

use crate::tunnel::Headers;

const PACKET_HOST: u32 = 0;

pub trait Frame {
    /// Leave the packet to whatever comes next: the next TC program on the interface (TCX or
    /// clsact; the stack when there is none) for TC, the TC program for XDP.
    const PASS: i32;
    const DROP: i32;
    const REDIRECTED: i32;
    /// Whether this hook leaves what it cannot finish to the TC program.
    const DEFERS: bool;

    /// Start and end of the linear packet data.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    fn len(&self) -> u32;
    fn ifindex(&self) -> u32;
    /// The VLAN id of a tag the kernel already took out of the frame (0: none).
    fn vlan(&self) -> u16;
    /// That tag as it goes on the wire (TPID, TCI), priority tags included; `None`: none.
    fn vlan_tag(&self) -> Option<[u8; 4]>;
    /// `size_of::<T>()` bytes at `offset`, wherever they are (linear data or not).
    fn load<T>(&self, offset: usize) -> Result<T, ()>;
    fn set_destination_mac(&self, mac: &[u8; 6]) -> Result<(), ()>;
    /// A copy into `ifindex` (the original continues); whether it was sent.
    fn clone_into(&self, ifindex: u32) -> bool;
    /// A copy, carrying `mark`, into the ingress of `ifindex` (the original continues with
    /// its own mark); whether it was sent.
    fn clone_marked_into_ingress(&self, ifindex: u32, mark: u32) -> bool;
    /// Into `ifindex`, or with `peer` straight into the ingress of its veth peer where the
    /// hook can (TC); returns the program's verdict.
    fn redirect(&self, ifindex: u32, peer: bool) -> i32;
    /// Pushes the outer headers of a packet for another node in front of its IP header
    /// (IPv4 or, not `inner_v4`, IPv6), a `tagged` packet's tag (from [`Frame::vlan_tag`],
    /// already in `headers`) moved from the skb into the inner Ethernet header, and a second
    /// tag still in the frame after it; whether that worked.
    fn encapsulate(&self, headers: Headers<'_>, inner_v4: bool, tagged: bool) -> bool;
    /// Whether the packet fits the underlay once encapsulated, `usable_mtu` being the largest
    /// IP packet that does.
    fn fits(&self, usable_mtu: u32) -> bool;
    /// Out of `ifindex` to the next hop of its (outer) destination address.
    fn redirect_neigh(&self, ifindex: u32) -> i32;
    /// The packet does not fit the underlay on the way to another node: answered with ICMP
    /// where it may be; returns the program's verdict.
    fn too_big(&self) -> i32;
}

impl Frame for TcContext {
    /// TCX_NEXT on TCX, "continue" on clsact: other programs on the interface (Cilium,
    /// Calico, ...) still see what we do not steer.
    const PASS: i32 = TC_ACT_UNSPEC;
    const DROP: i32 = TC_ACT_SHOT;
    const REDIRECTED: i32 = TC_ACT_REDIRECT;
    const DEFERS: bool = false;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.skb.skb).ifindex }
    }

    /// At TC ingress the stack has already moved the outermost tag into the skb.
    #[inline(always)]
    fn vlan(&self) -> u16 {
        let skb = unsafe { &*self.skb.skb };
        if skb.vlan_present != 0 {
            (skb.vlan_tci & 0x0fff) as u16
        } else {
            0
        }
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<[u8; 4]> {
        let skb = unsafe { &*self.skb.skb };
        if skb.vlan_present == 0 {
            return None;
        }
        // The TPID is kept in network byte order, the TCI in host order.
        let (tpid, tci) = (
            (skb.vlan_proto as u16).to_ne_bytes(),
            (skb.vlan_tci as u16).to_be_bytes(),
        );
        Some([tpid[0], tpid[1], tci[0], tci[1]])
    }

    #[inline(always)]
    fn load<T>(&self, offset: usize) -> Result<T, ()> {
        TcContext::load::<T>(self, offset).map_err(|_| ())
    }

    /// Straight into packet memory (the verifier unclones a cloned skb first); the store
    /// helper only if the header is not in the linear part.
    #[inline(always)]
    fn set_destination_mac(&self, mac: &[u8; 6]) -> Result<(), ()> {
        let start = TcContext::data(self);
        if start + 6 <= TcContext::data_end(self) {
            // SAFETY: the verifier-checked bound above covers these 6 bytes.
            unsafe { *(start as *mut [u8; 6]) = *mac };
            return Ok(());
        }
        self.store(0, mac, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn clone_into(&self, ifindex: u32) -> bool {
        unsafe { bpf_clone_redirect(self.skb.skb, ifindex, 0) == 0 }
    }

    #[inline(always)]
    fn clone_marked_into_ingress(&self, ifindex: u32, mark: u32) -> bool {
        let skb = self.skb.skb;
        unsafe {
            let kept = (*skb).mark;
            (*skb).mark = mark;
            let sent = bpf_clone_redirect(skb, ifindex, BPF_F_INGRESS as u64) == 0;
            (*skb).mark = kept;
            sent
        }
    }

    /// The peer path skips `eth_type_trans`, so the packet is first marked as addressed to that
    /// host (it arrived addressed to someone else, before its MAC was rewritten).
    #[inline(always)]
    fn redirect(&self, ifindex: u32, peer: bool) -> i32 {
        (if peer {
            unsafe {
                bpf_skb_change_type(self.skb.skb, PACKET_HOST);
                bpf_redirect_peer(ifindex, 0)
            }
        } else {
            unsafe { bpf_redirect(ifindex, 0) }
        }) as i32
    }

    #[inline(always)]
    fn encapsulate(&self, headers: Headers<'_>, inner_v4: bool, tagged: bool) -> bool {
        crate::tunnel::encapsulate(self, headers, inner_v4, tagged)
    }

    #[inline(always)]
    fn fits(&self, usable_mtu: u32) -> bool {
        crate::tunnel::fits(self, usable_mtu)
    }

    #[inline(always)]
    fn redirect_neigh(&self, ifindex: u32) -> i32 {
        crate::tunnel::redirect_neigh(ifindex)
    }

    #[inline(always)]
    fn too_big(&self) -> i32 {
        crate::too_big::answer(self)
    }
}

impl Frame for XdpContext {
    const PASS: i32 = xdp_action::XDP_PASS as i32;
    const DROP: i32 = xdp_action::XDP_DROP as i32;
    const REDIRECTED: i32 = xdp_action::XDP_REDIRECT as i32;
    const DEFERS: bool = true;

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    /// Frames here are single-buffer (the program is not loaded for fragments), so the
    /// linear data is the whole frame.
    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.ctx).ingress_ifindex }
    }

    /// In the driver every tag is still in the frame.
    #[inline(always)]
    fn vlan(&self) -> u16 {
        0
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<[u8; 4]> {
        None
    }

    #[inline(always)]
    fn load<T>(&self, offset: usize) -> Result<T, ()> {
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        let rc = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                offset as u32,
                value.as_mut_ptr() as *mut _,
                core::mem::size_of::<T>() as u32,
            )
        };
        if rc == 0 {
            Ok(unsafe { value.assume_init() })
        } else {
            Err(())
        }
    }

    #[inline(always)]
    fn set_destination_mac(&self, mac: &[u8; 6]) -> Result<(), ()> {
        let start = XdpContext::data(self);
        if start + 6 > XdpContext::data_end(self) {
            return Err(());
        }
        // SAFETY: the verifier-checked bound above covers these 6 bytes.
        unsafe { *(start as *mut [u8; 6]) = *mac };
        Ok(())
    }

    /// Never asked for: taps are left to TC.
    #[inline(always)]
    fn clone_into(&self, _ifindex: u32) -> bool {
        false
    }

    /// Never asked for: taps are left to TC.
    #[inline(always)]
    fn clone_marked_into_ingress(&self, _ifindex: u32, _mark: u32) -> bool {
        false
    }

    /// XDP has no peer shortcut: the frame is sent through `ifindex` into its peer.
    #[inline(always)]
    fn redirect(&self, ifindex: u32, _peer: bool) -> i32 {
        unsafe { bpf_redirect(ifindex, 0) as i32 }
    }

    /// Never asked for: packets for other nodes are left to TC.
    #[inline(always)]
    fn encapsulate(&self, _headers: Headers<'_>, _inner_v4: bool, _tagged: bool) -> bool {
        false
    }

    #[inline(always)]
    fn fits(&self, _usable_mtu: u32) -> bool {
        false
    }

    #[inline(always)]
    fn redirect_neigh(&self, _ifindex: u32) -> i32 {
        Self::DROP
    }

    #[inline(always)]
    fn too_big(&self) -> i32 {
        Self::DROP
    }
}
