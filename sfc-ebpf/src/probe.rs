//! Health probes. The agent sends a probe into an SF's ingress; when the SF forwards it, it
//! comes back out of the SF's egress, into this program, which records its sequence number
//! under the interface it came out of, for the agent to read, and drops it: a probe never
//! goes on along a chain and is never counted as traffic. A packet is a probe only if it
//! carries the agent's token; anything else to the probe port is steered as usual.

use aya_ebpf::{macros::map, maps::HashMap};
use sfc_common::{
    ProbePayload, CONFIG_PROBE_TOKEN, FAMILY_V4, PROBES_CAPACITY, PROBE_PAYLOAD_OFFSET,
    PROBE_PAYLOAD_OFFSET_V6,
};

use crate::{frame::Frame, CONFIG};

#[map(name = "sfc_v12_probes")]
static PROBES: HashMap<u32, u64> = HashMap::pinned(PROBES_CAPACITY, 0);

/// Whether the packet (UDP to the probe port of IP `family`, parsed already) is one of the
/// agent's probes; if so it has been recorded as come out of `ifindex`, and the caller drops
/// it.
#[inline(never)]
pub fn came_out<C: Frame>(ctx: &C, ifindex: u32, family: u8) -> bool {
    let token = CONFIG.get(CONFIG_PROBE_TOKEN).copied().unwrap_or(0);
    if token == 0 {
        return false;
    }
    let offset = if family == FAMILY_V4 {
        PROBE_PAYLOAD_OFFSET
    } else {
        PROBE_PAYLOAD_OFFSET_V6
    };
    let Ok(payload) = ctx.load::<ProbePayload>(offset) else {
        return false;
    };
    if payload.token != token {
        return false;
    }
    let _ = PROBES.insert(&ifindex, &payload.seq, 0);
    true
}
