//! Project tasks: `cargo xtask setup | build | demo | test | bench`.
//! Every task installs what it needs first (idempotently), so each works on a fresh machine.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sfc_lab::demo::{self, Demo, DST_V4, DST_V6};

mod bench;
mod spread_demo;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and system packages the build and the tests need.
    Setup,
    /// Set up, then build the release binaries (target/release/sfc-daemon, sfcctl).
    Build,
    /// Set up, build, and run the networking-sfc demo in network namespaces.
    Demo {
        /// Leave the topology and the daemon running until Enter is pressed.
        #[arg(long)]
        keep: bool,
        /// Requests to send over IPv4 (IPv6 gets half as many).
        #[arg(long, default_value_t = 8)]
        requests: usize,
        /// 3: the same with the VMs and SFs spread over three nodes of a cluster (etcd
        /// started by the demo), packets crossing between nodes in Geneve.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        nodes: u8,
    },
    /// Set up, build, check formatting and lints, and run every test (and the bench's smoke mode).
    Test,
    /// Set up, build, and measure sfc against its peers in network namespaces (about 10 minutes;
    /// results in bench/results/).
    Bench {
        #[command(flatten)]
        options: bench::Options,
    },
}

const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "ethtool",
    "tcpdump",
    "iperf3",
    "iputils-ping",
    "bpftool",
    "curl",
    "python3",
    // `cargo xtask bench`: the OVS userspace datapath peer, and the packet-rate plot.
    "openvswitch-switch",
    "python3-matplotlib",
    // The cluster tests start their own etcd members inside a lab's namespaces (the package
    // registers a service too, which nothing starts without systemd) and make their TLS
    // certificates with the openssl command.
    "etcd-server",
    "etcd-client",
    "openssl",
    // The dashboard test runs Prometheus against a live daemon, in a lab's namespace.
    "prometheus",
    // The etcd client crate compiles etcd's gRPC definitions when sfc-daemon is built: protoc,
    // and the well-known types they import (google/protobuf/*.proto).
    "protobuf-compiler",
    "libprotobuf-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn step(message: &str) {
    println!("==> {message}");
}

fn status(cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed ({s})");
    }
    Ok(())
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require_root() -> Result<()> {
    let uid = output_ok(Command::new("id").arg("-u")).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("this task needs root (network namespaces, bpffs and BPF programs); run it as root");
    }
    Ok(())
}

fn setup() -> Result<()> {
    require_root()?;
    step("checking system packages");
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("    all present");
    } else {
        step(&format!("installing {}", missing.join(" ")));
        status(Command::new("apt-get").args(["update", "-q"]))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    step("checking rust-src for the nightly toolchain (eBPF build-std)");
    let installed = output_ok(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("    present");
    } else {
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    step(&format!(
        "checking bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"
    ));
    let version = output_ok(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        println!("    present");
    } else {
        println!("    building it (1-4 minutes)");
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        status(
            Command::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("PATH", path)
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    status(Command::new("cargo").args(args).current_dir(root()))
}

fn build() -> Result<()> {
    setup()?;
    step("building release binaries (the eBPF object is built by aya-build and embedded)");
    cargo(&["build", "--release", "-p", "sfc-daemon", "-p", "sfcctl"])
}

fn run_demo(keep: bool, requests: usize) -> Result<()> {
    build()?;
    step("building the demo topology in network namespaces");
    let demo = Demo::build("demo")?;
    let lab = &demo.lab;
    let chain = demo::example_chain();
    step(&format!("sfcctl apply -f {chain}"));
    let out = lab
        .sfcctl(&["apply", "-f", &chain])
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    for kind in [
        "portpairs",
        "portpairgroups",
        "flowclassifiers",
        "portchains",
    ] {
        println!("\n$ sfcctl get {kind}");
        print!(
            "{}",
            lab.sfcctl(&["get", kind]).map_err(anyhow::Error::msg)?
        );
    }
    step("sending HTTP requests from the source VM; packets forwarded by each SF per request");
    let mut totals = [0u64; 3];
    let mut failures = 0;
    let plan: Vec<&str> = std::iter::repeat_n(DST_V4, requests)
        .chain(std::iter::repeat_n(DST_V6, requests.div_ceil(2)))
        .collect();
    for (i, dst) in plan.iter().enumerate() {
        let c = demo.request(dst)?;
        let path = c.crossed().join(" -> ");
        println!(
            "request {:>2}  GET http://{dst}/  status {}  SF1 {:>2}  SF2 {:>2}  SF3 {:>2}   path: {}",
            i + 1,
            c.status,
            c.forwarded[0],
            c.forwarded[1],
            c.forwarded[2],
            if path.is_empty() { "direct (no SF)".into() } else { path }
        );
        let ok =
            c.status == 200 && c.forwarded[2] > 0 && (c.forwarded[0] > 0) != (c.forwarded[1] > 0);
        if !ok {
            failures += 1;
        }
        for (total, n) in totals.iter_mut().zip(c.forwarded) {
            *total += n;
        }
    }
    println!(
        "\ntotal packets forwarded: SF1 {}  SF2 {}  SF3 {}",
        totals[0], totals[1], totals[2]
    );
    println!("\n$ sfcctl stats");
    print!("{}", lab.sfcctl(&["stats"]).map_err(anyhow::Error::msg)?);
    if keep {
        println!(
            "\nThe lab is up. Namespaces: {}-{{node,src,dst,sf1,sf2,sf3}}\n  sfcctl --socket {} get portchains\n  ip netns exec {} curl http://{DST_V4}/\nPress Enter to tear everything down.",
            lab.ns("").trim_end_matches('-'),
            lab.socket().display(),
            lab.ns("src"),
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    step("tearing down");
    drop(demo);
    if failures > 0 {
        bail!("{failures} request(s) did not cross exactly one PG1 member and then SF3");
    }
    println!("demo passed: every request crossed SF1 or SF2, then SF3");
    Ok(())
}

fn test() -> Result<()> {
    build()?;
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    step("cargo clippy -D warnings");
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    step("sfcctl alone: stable Rust, nothing of the BPF toolchain on PATH, a fresh target dir");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    status(
        Command::new(format!("{home}/.cargo/bin/cargo"))
            .args(["build", "-q", "-p", "sfcctl", "--target-dir"])
            .arg(target_dir().join("cli-only"))
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .env("RUSTUP_TOOLCHAIN", "stable")
            .current_dir(root()),
    )?;
    step("cargo test (unit, BPF_PROG_TEST_RUN and end-to-end tests in namespaces)");
    let bin_dir = root().join("target/release");
    let mut child = Command::new("cargo")
        .args(["test", "--", "--test-threads=1"])
        .env("SFC_BIN_DIR", bin_dir)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Pass the output through and add up the per-binary results into one closing line.
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match label {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let exit = child.wait()?;
    println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    if !exit.success() {
        bail!("cargo test failed ({exit})");
    }
    step("cargo xtask bench --smoke (every bench code path, briefly)");
    run_bench(bench::Options {
        smoke: true,
        ..Default::default()
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn run_bench(options: bench::Options) -> Result<()> {
    require_root()?;
    bench::run(
        options,
        &root().canonicalize()?,
        &target_dir(),
        &target_dir().join("release"),
    )
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::Setup => setup(),
        Task::Build => build(),
        Task::Demo {
            keep,
            requests,
            nodes,
        } => match nodes {
            1 => run_demo(keep, requests),
            3 => {
                build()?;
                spread_demo::run(keep, requests)
            }
            _ => bail!("--nodes {nodes}: the demo runs on 1 node or on 3"),
        },
        Task::Test => test(),
        Task::Bench { options } => {
            build()?;
            run_bench(options)
        }
    }
}
