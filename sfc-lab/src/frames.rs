//! Frames byte by byte, and the contexts they run in, as the tests and the bench hand them to
//! BPF_PROG_TEST_RUN. Each builder takes what its header carries as a payload, so a frame reads
//! from the outside in: `eth(dst, src, 0x0800, &ipv4(6, from, to, &[], 0, &l4(40000, 80, 20)))`.
//! Nothing here fills in a checksum unless asked ([`ipv4_checksum`]): the programs do not check
//! them.

/// An Ethernet frame: destination and source MAC, ethertype, payload.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What follows the TPID of a VLAN tag: the TCI (VLAN `vid`, priority 0), the inner
/// ethertype, the payload. The tagged frame is [`eth`] with the TPID as its ethertype.
pub fn vlan(vid: u16, inner_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vid.to_be_bytes().to_vec();
    p.extend_from_slice(&inner_type.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv4 packet: `options` (a multiple of 4 bytes) after the fixed header, `frag` as the
/// flags and fragment offset field, TTL 64, identification 1, checksum 0.
pub fn ipv4(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let total = ihl * 4 + payload.len();
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

/// Fills in the header checksum of an IPv4 `packet` (as [`ipv4`] builds it, checksum 0).
pub fn ipv4_checksum(packet: &mut [u8]) {
    let header = (packet[0] & 0x0f) as usize * 4;
    let sum = packet[..header]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// An IPv6 packet with extension headers given as (type, bytes): each header's first byte
/// (next header) is filled in here. Hop limit 64.
pub fn ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    exts: &[(u8, Vec<u8>)],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, ext)) in exts.iter().enumerate() {
        let mut ext = ext.clone();
        ext[0] = exts.get(i + 1).map(|e| e.0).unwrap_or(proto);
        body.extend_from_slice(&ext);
    }
    body.extend_from_slice(payload);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.push(exts.first().map(|e| e.0).unwrap_or(proto));
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&body);
    h
}

/// An 8-byte IPv6 options extension header (hop-by-hop or destination options): PadN only.
pub fn opts8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// The first `len` bytes of a TCP or UDP header: the ports, and from 20 bytes on a TCP data
/// offset of 5; everything else 0.
pub fn l4(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut h = vec![0u8; len];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    if len >= 20 {
        h[12] = 0x50;
    }
    h
}

/// A UDP datagram: ports, length, no checksum, `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = l4(sport, dport, 8);
    d[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// The context of a TC program run on a frame that arrived on `ifindex`: a `struct
/// __sk_buff` with only `ifindex` (byte 40) set.
pub fn skb_ctx(ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The context of an XDP program run on a frame of `frame_len` bytes that arrived on
/// `ifindex`: a `struct xdp_md` (data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex; u32 each) with data_end and ingress_ifindex set.
pub fn xdp_ctx(frame_len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [198, 18, 0, 1];
    const B: [u8; 4] = [198, 18, 1, 2];

    #[test]
    fn an_ipv4_udp_frame_byte_by_byte() {
        let mut packet = ipv4(17, A, B, &[], 0, &udp(9, 9, &[0xaa; 2]));
        ipv4_checksum(&mut packet);
        let frame = eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 0x0800, &packet);
        #[rustfmt::skip]
        let expected = [
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00,
            0x45, 0, 0, 30, 0, 1, 0, 0, 64, 17, 0xed, 0xa6, 198, 18, 0, 1, 198, 18, 1, 2,
            0, 9, 0, 9, 0, 10, 0, 0, 0xaa, 0xaa,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn the_ipv4_checksum_sums_to_all_ones() {
        let mut packet = ipv4(6, A, B, &[1, 1, 1, 1], 0x4000, &l4(1, 2, 20));
        ipv4_checksum(&mut packet);
        let sum: u32 = packet[..24]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
        assert_eq!(packet[0], 0x46, "IHL counts the options");
        assert_eq!(packet[24 + 12], 0x50, "TCP data offset");
    }

    #[test]
    fn ipv6_chains_its_extension_headers() {
        let packet = ipv6([0; 16], [1; 16], &[(0, opts8()), (60, opts8())], 6, &[]);
        assert_eq!(packet[4..6], 16u16.to_be_bytes(), "payload length");
        assert_eq!(packet[6], 0, "next header: hop-by-hop");
        assert_eq!(packet[40], 60, "then destination options");
        assert_eq!(packet[48], 6, "then TCP");
    }

    #[test]
    fn a_vlan_tag_carries_the_inner_type() {
        let tagged = eth([0; 6], [0; 6], 0x8100, &vlan(100, 0x86dd, &[7]));
        assert_eq!(tagged[12..], [0x81, 0x00, 0x00, 0x64, 0x86, 0xdd, 7]);
    }
}
