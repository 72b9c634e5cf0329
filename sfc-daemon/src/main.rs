//! The node agent: loads and pins the steering program, keeps the desired state, serves sfcctl.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use sfc_config::nodes::valid_node_name;
use sfc_daemon::{
    agent::{cluster::ClusterLink, lock, run, store::Store as AgentStore, Agent, Paths},
    api::server,
    cluster::{
        self,
        membership::Membership,
        records::{Alive, NodeInfo, NodeStatus},
        ClusterError,
    },
    dataplane::{
        ensure_bpffs,
        netlink::{self, Netlink},
        tables::{parse_size, Tables},
        Mode, Options,
    },
    observe::{
        metrics::{self, Metrics, Status},
        snapshot::Shared,
        trace::TraceSlot,
    },
    probe,
};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "sfc-daemon",
    version,
    about = "eBPF service function chaining node agent"
)]
struct Args {
    /// Unix socket sfcctl talks to (created with mode 0600).
    #[arg(long, default_value = "/run/sfc/sfc.sock")]
    socket: PathBuf,
    /// Where the desired state is persisted.
    #[arg(long, default_value = "/var/lib/sfc")]
    state_dir: PathBuf,
    /// bpffs directory for pinned maps and links (mounted if it is not bpffs yet).
    #[arg(long, default_value = "/sys/fs/bpf/sfc")]
    bpffs: PathBuf,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: SocketAddr,
    /// Where the steering programs run. `xdp` adds an XDP program in front of TC on every
    /// steered interface whose driver has native XDP, veths excepted (see --xdp-on-veth); it
    /// finishes steering and delivery in the driver and leaves the rest (taps, handing packets
    /// back to the stack) to TC. See README, "XDP mode".
    #[arg(long, value_enum, default_value_t = ModeArg::Tc)]
    mode: ModeArg,
    /// With --mode xdp, XDP on veths too. Only correct where every sender into those veths
    /// computes its TCP/UDP checksums (`ethtool -K IFACE tx off`), and every veth a chain
    /// redirects into accepts XDP frames (GRO on, or an XDP program, at its far end).
    #[arg(long, requires = "mode")]
    xdp_on_veth: bool,
    /// Entries of each flow table (flows in a chain, one table per IP family): their
    /// generation, packets in flight and original destination MAC. LRU: when full, the least
    /// recently used flow is evicted and its next packet starts over on the active generation.
    /// 1024 to 16777216; a pinned table of another size is replaced by an empty one at start.
    #[arg(long, value_name = "ENTRIES", value_parser = parse_size,
        default_value_t = Tables::default().flows)]
    flows_table_size: u32,
    /// Entries of each flow-to-member pin table (group and flow hash): flows seen once, and
    /// flows seen again (established: a flood of new flows never evicts those). LRU: an
    /// evicted flow's member is chosen again from its group's table, and may change if the
    /// group did.
    #[arg(long, value_name = "ENTRIES", value_parser = parse_size,
        default_value_t = Tables::default().pins)]
    pins_table_size: u32,
    /// Entries of each decision table (interface and flow, one table per IP family): what was
    /// decided for a flow, so that its next packets skip classification. LRU: an evicted flow
    /// is classified again.
    #[arg(long, value_name = "ENTRIES", value_parser = parse_size,
        default_value_t = Tables::default().decisions)]
    decisions_table_size: u32,
    /// Entries of the fragment table: IP datagrams whose first fragment was seen, so that the
    /// rest take the same chain and member (each forgotten 2 s after its first fragment). Not
    /// LRU: while it is full, new datagrams are not tracked (counted as fragment_table_full)
    /// and their later fragments are unparsable where a classifier needs ports.
    #[arg(long, value_name = "ENTRIES", value_parser = parse_size,
        default_value_t = Tables::default().fragments)]
    fragments_table_size: u32,
    /// Run as one node of a cluster whose desired state lives in etcd at these endpoints
    /// (v3 API). Without it this daemon is a single node, its state in --state-dir.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd: Vec<String>,
    /// This node's name in the cluster ([a-z0-9.-], 1 to 63 characters). Default: the host
    /// name.
    #[arg(long, requires = "etcd")]
    node: Option<String>,
    /// Where other nodes send this node's cross-node traffic. Default: the source address of
    /// the route towards the first etcd endpoint.
    #[arg(long, value_name = "IP", requires = "etcd")]
    tunnel_address: Option<IpAddr>,
    /// Strip other nodes' packets in XDP on the underlay interface, before GRO (TC takes
    /// them where the driver has no native XDP): TCP across nodes is merged into large
    /// packets, which can also be sent on to a third node with segmentation offload.
    #[arg(long, requires = "etcd")]
    tunnel_xdp: bool,
    /// Seconds the node stays registered after its agent stops renewing (2 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(2..=3600))]
    node_ttl: u64,
    /// CA certificate (PEM) that signed etcd's certificate: etcd is reached over TLS.
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// This node's client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE", requires = "etcd_ca")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_ca")]
    etcd_key: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Tc,
    Xdp,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mode = match args.mode {
        ModeArg::Tc if args.xdp_on_veth => {
            error!("--xdp-on-veth needs --mode xdp");
            return ExitCode::FAILURE;
        }
        ModeArg::Tc => Mode::Tc,
        ModeArg::Xdp => Mode::Xdp {
            on_veth: args.xdp_on_veth,
        },
    };
    let options = Options {
        mode,
        tables: Tables {
            flows: args.flows_table_size,
            pins: args.pins_table_size,
            decisions: args.decisions_table_size,
            fragments: args.fragments_table_size,
        },
    };
    match start(args, options) {
        Ok(never) => match never {},
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Brings the agent up; returns only if it cannot start.
fn start(args: Args, options: Options) -> Result<std::convert::Infallible, String> {
    // One agent per node, decided before anything is touched: the maps, the links and the
    // socket of a running agent are left alone.
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.state_dir.display()))?;
    ensure_bpffs(&args.bpffs).map_err(|e| format!("cannot start: {e}"))?;
    let _lock = lock::acquire(&[&args.state_dir, &args.bpffs]).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfc-io")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let _entered = runtime.enter();
    server::refuse_if_served(&args.socket).map_err(|e| e.to_string())?;
    let status = Arc::new(Status::new());
    let observed = Shared::default();
    // In a cluster: this node's name, which labels its metrics.
    let node = (!args.etcd.is_empty())
        .then(|| node_name(&args))
        .transpose()?;
    let metrics = Arc::new(Metrics::new(
        observed.clone(),
        status.clone(),
        node.as_deref(),
    ));
    let endpoint = runtime
        .block_on(tokio::net::TcpListener::bind(args.metrics))
        .map_err(|e| {
            format!(
                "cannot serve metrics on {}: {e}; pick another --metrics address",
                args.metrics
            )
        })?;
    runtime.spawn(metrics::serve(endpoint, metrics.clone()));
    let (handle, queue) = run::queue();
    let events = handle.clone();
    netlink::watch_links(move || events.interfaces_changed())
        .map_err(|e| format!("cannot follow interface changes: {e}"))?;
    let netlink = Netlink::connect().map_err(|e| format!("cannot read interfaces: {e}"))?;
    let (link, started) = match node {
        None => (None, None),
        Some(node) => {
            let (link, started) = join_cluster(&args, node, &runtime)?;
            (Some(link), Some(started))
        }
    };
    let follow = link.as_ref().map(|l| (l.store.clone(), l.snapshot.clone()));
    let asker = link.as_ref().map(|l| cluster::ask::Asker {
        node: l.node.clone(),
        store: l.store.clone(),
    });
    let paths = Paths {
        state_dir: &args.state_dir,
        bpffs: &args.bpffs,
    };
    let mut agent = Agent::start(
        paths,
        options,
        netlink,
        observed,
        metrics,
        status.clone(),
        link,
    )
    .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(started) = started {
        let _ = started.send(());
    }
    let prober = agent.prober().map_err(|e| format!("cannot start: {e}"))?;
    let events = handle.clone();
    runtime.spawn(probe::run(prober, move |health| events.probed(health)));
    if let Some((store, known)) = follow {
        let events = handle.clone();
        runtime.spawn(cluster::follow::follow(store.clone(), known, move |s| {
            events.cluster_state(s)
        }));
        let events = handle.clone();
        runtime.spawn(cluster::follow::follow_nodes(store, move |nodes| {
            events.cluster_nodes(nodes)
        }));
    }
    // Last: clients find the socket only once there is an agent to answer them.
    let listener = server::bind(&args.socket).map_err(|e| e.to_string())?;
    let traces: Arc<TraceSlot> = Default::default();
    let context = server::Context {
        published: agent.published(),
        bpffs: args.bpffs.clone(),
        traces: traces.clone(),
        cluster: asker.clone(),
        agent: handle.clone(),
    };
    if let Some(asker) = asker {
        let host = cluster::ask::TraceHost {
            bpffs: args.bpffs.clone(),
            slot: traces,
        };
        runtime.spawn(cluster::ask::answer_questions(
            asker.store,
            asker.node,
            handle,
            host,
        ));
    }
    run::spawn(agent, queue, status).map_err(|e| format!("cannot start the agent thread: {e}"))?;
    info!(socket = %args.socket.display(), "ready");
    runtime.block_on(server::serve(listener, context));
    Err("the socket server stopped".into())
}

/// This node's name in a cluster: `--node`, or the host name.
fn node_name(args: &Args) -> Result<String, String> {
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .map_err(|e| format!("cannot read the host name: {e}; give --node"))?,
    };
    if !valid_node_name(&node) {
        return Err(format!(
            "--node {node:?} is not a node name; use 1 to 63 characters a-z, 0-9, '.' and '-'"
        ));
    }
    Ok(node)
}

/// Connects to etcd, takes the node's name (refused if another live agent holds it; put off
/// if etcd cannot be reached now), keeps its lease alive from then on, and prepares what the
/// agent needs in a cluster: its link, and the signal that lets the node's info be written
/// once the agent runs.
fn join_cluster(
    args: &Args,
    node: String,
    runtime: &tokio::runtime::Runtime,
) -> Result<(ClusterLink, oneshot::Sender<()>), String> {
    let tls = args.etcd_ca.as_ref().map(|ca| cluster::Tls {
        ca: ca.clone(),
        cert: args.etcd_cert.clone().expect("clap requires it"),
        key: args.etcd_key.clone().expect("clap requires it"),
    });
    let options = cluster::Options {
        endpoints: args.etcd.clone(),
        tunnel_address: args.tunnel_address,
        ttl: Duration::from_secs(args.node_ttl),
        tls,
    };
    let store = runtime
        .block_on(cluster::connect(&options))
        .map_err(|e| e.to_string())?;
    let tunnel_address = match options.tunnel_address {
        Some(a) => a,
        None => cluster::default_tunnel_address(&options.endpoints).map_err(|e| e.to_string())?,
    };
    let membership = Membership {
        store: store.clone(),
        node: node.clone(),
        ttl: options.ttl,
        alive: Alive {
            instance: cluster::instance(&args.state_dir),
            pid: std::process::id(),
        },
    };
    let lease = match runtime.block_on(membership.register()) {
        Ok(lease) => Some(lease),
        Err(e @ ClusterError::NodeTaken { .. }) => return Err(e.to_string()),
        Err(e) => {
            warn!("{e}; this node steers what it last had and registers once etcd answers");
            None
        }
    };
    let known = AgentStore::new(&args.state_dir)
        .and_then(|s| s.load_cluster())
        .map_err(|e| e.to_string())?;
    let (status, status_rx) = watch::channel(NodeStatus {
        revision: known.revision,
        ..NodeStatus::default()
    });
    let (info, info_rx) = watch::channel(NodeInfo {
        tunnel_address: tunnel_address.to_string(),
        interfaces: Vec::new(),
        usable_mtu: 0,
        down: Default::default(),
    });
    info!(node, %tunnel_address, endpoints = %options.endpoints.join(","), "cluster mode");
    let nodes = AgentStore::new(&args.state_dir)
        .and_then(|s| s.load_nodes())
        .map_err(|e| e.to_string())?;
    let link = ClusterLink {
        node,
        store,
        runtime: runtime.handle().clone(),
        snapshot: Arc::new(known),
        nodes,
        tunnel_address,
        tunnel_xdp: args.tunnel_xdp,
        status,
        info,
    };
    let (started, started_rx) = oneshot::channel();
    runtime.spawn(membership.keep(lease, info_rx, status_rx, started_rx));
    Ok((link, started))
}
