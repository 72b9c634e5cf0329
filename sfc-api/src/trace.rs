//! `sfcctl trace`: what to trace (sent to the daemon, which turns it into the datapath's
//! filter) and what comes back, one record per step of a matching packet.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sfc_common::{
    trace_field, TraceFilter, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

/// A trace filter field that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--{field} {value:?}: {message}")]
pub struct FilterError {
    pub field: &'static str,
    pub value: String,
    pub message: String,
}

/// What to trace, as sfcctl takes it and sends it (any subset).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TraceSpec {
    #[cfg_attr(feature = "clap", arg(long))]
    pub src: Option<String>,
    #[cfg_attr(feature = "clap", arg(long))]
    pub dst: Option<String>,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[cfg_attr(feature = "clap", arg(long))]
    pub proto: Option<String>,
    #[cfg_attr(feature = "clap", arg(long))]
    pub sport: Option<u16>,
    #[cfg_attr(feature = "clap", arg(long))]
    pub dport: Option<u16>,
    /// A tracking id (hex, as printed) to follow one flow.
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_id))]
    pub id: Option<u32>,
}

#[cfg(feature = "clap")]
fn parse_id(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a tracking id (8 hex digits, as trace prints)"))
}

/// The longest a trace may run (its lease); `--duration` asks for less. A trace also ends when
/// its client hangs up or stops reading, or on `sfcctl trace --stop`.
pub const MAX_LEASE_SECONDS: u64 = 3600;

/// One step of one packet, as sfcctl prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Tracking id: the same for both directions of a flow.
    pub id: u32,
    pub interface: String,
    pub chain: Option<String>,
    pub hop: Option<u8>,
    pub direction: Option<String>,
    /// True where the packet entered its chain.
    pub entry: bool,
    pub verdict: String,
    /// The port pair the packet was sent into, or the logical destination port.
    pub target: Option<String>,
    pub target_interface: Option<String>,
    pub target_mac: Option<String>,
    pub tapped: bool,
    /// True where the packet skipped a hop (or several) whose group has no live member and
    /// fails open: `hop` is the one it went to instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub generation: u8,
    pub flow: String,
    /// In a cluster: the node the step was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn address(field: &'static str, text: &str) -> Result<(u8, [u32; 4]), FilterError> {
    let ip: IpAddr = text.parse().map_err(|_| FilterError {
        field,
        value: text.into(),
        message: "not an IPv4 or IPv6 address".into(),
    })?;
    Ok(match ip {
        IpAddr::V4(v4) => (FAMILY_V4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (FAMILY_V6, [w(0), w(4), w(8), w(12)])
        }
    })
}

fn protocol(text: &str) -> Result<u8, FilterError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        "icmpv6" => PROTO_ICMPV6,
        other => other.parse().map_err(|_| FilterError {
            field: "proto",
            value: text.into(),
            message: "use tcp, udp, icmp, icmpv6 or a number 0..255".into(),
        })?,
    })
}

impl TraceSpec {
    /// The datapath filter, checked (addresses of one family, a known protocol).
    pub fn filter(&self) -> Result<TraceFilter, FilterError> {
        let mut f = TraceFilter {
            enabled: 1,
            ..Default::default()
        };
        for (field, text, bit) in [
            ("src", &self.src, trace_field::SRC),
            ("dst", &self.dst, trace_field::DST),
        ] {
            let Some(text) = text else { continue };
            let (family, addr) = address(field, text)?;
            if f.family != 0 && f.family != family {
                return Err(FilterError {
                    field,
                    value: text.clone(),
                    message: "--src and --dst must be of one family".into(),
                });
            }
            f.family = family;
            f.fields |= bit;
            if bit == trace_field::SRC {
                f.src = addr;
            } else {
                f.dst = addr;
            }
        }
        if let Some(p) = &self.proto {
            f.proto = protocol(p)?;
            f.fields |= trace_field::PROTO;
        }
        if let Some(p) = self.sport {
            f.sport = p;
            f.fields |= trace_field::SPORT;
        }
        if let Some(p) = self.dport {
            f.dport = p;
            f.fields |= trace_field::DPORT;
        }
        if let Some(id) = self.id {
            f.id = id;
            f.fields |= trace_field::ID;
        }
        Ok(f)
    }
}
