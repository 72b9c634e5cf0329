//! Cluster mode (`--etcd`): the desired state of every node lives in etcd. The agent follows
//! it ([`follow`]), programs its own part of it, holds its node's name under a lease and
//! writes back what it applied ([`membership`]); applies and deletes from any node are
//! validated against the whole cluster's state and committed atomically ([`store`]).

use std::{
    net::{IpAddr, ToSocketAddrs, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use thiserror::Error;

pub mod ask;
pub mod follow;
pub mod handover;
pub mod membership;
pub mod records;
pub mod snapshot;
pub mod store;

use store::{Store, REQUEST_TIMEOUT};

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("the cluster store (etcd at {endpoints}) is unreachable: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error("the cluster store holds an unreadable value at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("node {node:?} is alive and held by another agent: {holder}; give this agent another --node, or stop that one")]
    NodeTaken { node: String, holder: String },
    #[error("the cluster's state changed while this request was being validated")]
    Conflict,
    #[error("node {node:?} is alive (its agent holds its lease); stop its agent, or wait until `sfcctl get nodes` shows it lost")]
    NodeAlive { node: String },
    #[error(
        "{what} is {size} bytes once serialised, more than etcd takes in one request (1.5 MiB)"
    )]
    TooLarge { what: String, size: usize },
    #[error("{0}")]
    Setup(String),
}

/// The TLS files for a certificate-protected etcd.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Options {
    pub endpoints: Vec<String>,
    pub tunnel_address: Option<IpAddr>,
    pub ttl: Duration,
    pub tls: Option<Tls>,
}

/// A client for the endpoints. Connections are made lazily: an etcd that is down now makes
/// the first requests fail, not the agent's start.
pub async fn connect(options: &Options) -> Result<Store, ClusterError> {
    let setup = |m: String| ClusterError::Setup(m);
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(tls) = &options.tls {
        if let Some(plain) = options.endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(setup(format!(
                "--etcd {plain}: with --etcd-ca/--etcd-cert/--etcd-key the endpoints are https:// URLs"
            )));
        }
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| setup(format!("cannot read {}: {e}", p.display())))
        };
        connect = connect.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?)),
        );
    }
    let client = Client::connect(&options.endpoints, Some(connect))
        .await
        .map_err(|e| setup(format!("--etcd {}: {e}", options.endpoints.join(","))))?;
    Ok(Store::new(client, options.endpoints.join(",")))
}

/// The address other nodes reach this one at by default: the source address of the route
/// towards the first etcd endpoint (no packet is sent: connecting a UDP socket only picks
/// the route).
pub fn default_tunnel_address(endpoints: &[String]) -> Result<IpAddr, ClusterError> {
    let first = endpoints.first().map(String::as_str).unwrap_or_default();
    let authority = first
        .split_once("://")
        .map_or(first, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let fail = |why: String| {
        ClusterError::Setup(format!(
            "cannot tell this node's tunnel address from the route to {first}: {why}; give --tunnel-address"
        ))
    };
    let target = authority
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("the name resolves to nothing".into()))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).map_err(|e| fail(e.to_string()))?;
    socket.connect(target).map_err(|e| fail(e.to_string()))?;
    Ok(socket.local_addr().map_err(|e| fail(e.to_string()))?.ip())
}

/// Who this agent is, for telling itself restarted from another agent claiming its name:
/// host, boot and state directory.
pub fn instance(state_dir: &Path) -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    format!(
        "{}:{}:{}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
        dir.display()
    )
}
