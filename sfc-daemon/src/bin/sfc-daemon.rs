//! The node agent: loads and pins the steering program, keeps the desired state, serves sfcctl.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use clap::Parser;
use sfc_daemon::{agent::Agent, dataplane::Mode, metrics, observe::Shared, server};
use tracing::{error, info};

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
    let ready = Arc::new(AtomicBool::new(false));
    let observed = Shared::default();
    if let Err(e) = metrics::spawn(args.metrics, observed.clone(), ready.clone()) {
        error!(
            "cannot serve metrics on {}: {e}; pick another --metrics address",
            args.metrics
        );
        return ExitCode::FAILURE;
    }
    let mut agent = match Agent::start(&args.state_dir, &args.bpffs, mode, observed) {
        Ok(a) => a,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", args.socket.display());
            return ExitCode::FAILURE;
        }
    };
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    info!(socket = %args.socket.display(), "ready");
    server::serve(listener, &mut agent)
}
