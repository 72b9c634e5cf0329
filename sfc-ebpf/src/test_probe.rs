//! A program for the tests only, built as its own object (`sfc-test-probe`) so that loading it
//! never touches the steering program's maps.
//!
//! `sfc_test_probe`: a TC classifier that counts every packet it sees, per ingress ifindex, and
//! hands it on to whatever runs after it (`TC_ACT_UNSPEC`, which is `TCX_NEXT` under TCX). The
//! coexistence test attaches it after the steering program on the same interfaces, as a CNI's
//! program would be: it must see every packet the steering program does not steer.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};

/// Packets seen, indexed by ingress ifindex (namespaces made by the tests have small ones);
/// an ifindex past the end is counted at 0.
#[map(name = "sfc_test_probe_seen")]
static SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(4096, 0);

#[classifier]
pub fn sfc_test_probe(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let index = if ifindex < 4096 { ifindex } else { 0 };
    if let Some(seen) = SEEN.get_ptr_mut(index) {
        // Per-CPU slot: a plain add.
        unsafe { *seen += 1 };
    }
    TC_ACT_UNSPEC
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
