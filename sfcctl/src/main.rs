//! Command-line client of sfc-daemon.

mod client;
mod stats_view;
mod trace;

use std::{io::Read, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use sfc_api::{
    protocol::{Node, Request, Response},
    trace::TraceSpec,
};
use sfc_config::{
    compile::Interfaces,
    document::{to_json, to_yaml},
    model::{Kind, Object, PortRange, Spec, State},
    plan::{parse_files, plan, validate_objects},
    validate::Origins,
};
use trace::Format;

#[derive(Parser)]
#[command(
    name = "sfcctl",
    version,
    about = "Manage service function chains on this node"
)]
struct Args {
    /// The daemon's socket.
    #[arg(long, global = true, default_value = "/run/sfc/sfc.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update the objects in FILE (`-` for stdin); others are left alone.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Show what would be created, changed and left unchanged, and what the dataplane
        /// would do; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the objects named in FILE, or one object by KIND and NAME; in a cluster,
    /// `delete node NAME` forgets a node that is gone for good (lost, and no object on it).
    Delete {
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
        file: Option<String>,
        kind: Option<String>,
        name: Option<String>,
        /// Show what would be deleted, and refuse as a real delete would; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List objects of one kind (portpairs, portpairgroups, flowclassifiers, portchains), or
    /// the nodes of the cluster (nodes).
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Check FILE offline with the same rules as apply.
    Validate {
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Check it as for a cluster: interfaces may be written NODE/IFNAME (which node has
        /// which interface is not known offline; `apply --dry-run` on a node checks that).
        #[arg(long)]
        cluster: bool,
    },
    /// Follow packets through this node live: every step of each packet matching the filter
    /// (any subset; a flow matches in both directions). Stops after --count records or
    /// --duration seconds, or on Ctrl-C. One trace runs at a time on a node; `--stop` ends it.
    Trace {
        #[command(flatten)]
        spec: TraceSpec,
        /// End the trace running on this node (someone else's, or one whose client hung).
        #[arg(long, conflicts_with_all = ["src", "dst", "proto", "sport", "dport", "id", "count", "duration"])]
        stop: bool,
        #[arg(long)]
        count: Option<u64>,
        /// Seconds.
        #[arg(long)]
        duration: Option<f64>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Counters: datapath outcomes, and per chain, hop and SF with rates and health.
    Stats {
        /// Only this chain (its hops and the SFs of its groups).
        chain: Option<String>,
        /// In a cluster: only this node (by default every node, side by side and summed).
        #[arg(long)]
        node: Option<String>,
        /// Print again every --interval seconds until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "1")]
        interval: f64,
        /// `json` adds each recent generation's per-chain counters.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// One object in context: references, interfaces and their state, counters, health.
    Describe { kind: String, name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{}", message.trim_end());
            ExitCode::FAILURE
        }
    }
}

fn read_file(file: &str) -> Result<(String, String), String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{file}: {e}; check the path given to -f"))?;
    Ok((file.to_string(), text))
}

fn kind(text: &str) -> Result<Kind, String> {
    text.parse()
}

fn run(args: Args) -> Result<(), String> {
    let call = |request: Request| client::call(&args.socket, &request);
    match args.command {
        Command::Apply { file, dry_run } => {
            let (file, content) = read_file(&file)?;
            print_outcome(call(Request::Apply {
                file,
                content,
                dry_run,
            })?)
        }
        Command::Delete {
            file,
            kind: k,
            name,
            dry_run,
        } => {
            let request = match (file, k, name) {
                (Some(file), None, None) => {
                    let (file, content) = read_file(&file)?;
                    Request::DeleteFile {
                        file,
                        content,
                        dry_run,
                    }
                }
                (None, Some(k), Some(name))
                    if matches!(k.to_ascii_lowercase().as_str(), "node" | "nodes") =>
                {
                    Request::DeleteNode { name }
                }
                (None, Some(k), Some(name)) => Request::Delete {
                    kind: kind(&k)?,
                    name,
                    dry_run,
                },
                _ => return Err("use `sfcctl delete -f FILE` or `sfcctl delete KIND NAME`".into()),
            };
            print_outcome(call(request)?)
        }
        Command::Get {
            kind: k,
            name,
            output,
        } => {
            if matches!(k.to_ascii_lowercase().as_str(), "nodes" | "node") {
                let response = call(Request::GetNodes)?;
                if !response.ok {
                    return Err(response.message);
                }
                let mut nodes = response.nodes;
                if let Some(name) = name {
                    nodes.retain(|n| n.name == name);
                    if nodes.is_empty() {
                        return Err(format!(
                            "node {name:?} not found; `sfcctl get nodes` lists them"
                        ));
                    }
                }
                print!("{}", render_nodes(&nodes, output));
                return Ok(());
            }
            let kind = kind(&k)?;
            let response = call(Request::Get { kind, name })?;
            if !response.ok {
                return Err(response.message);
            }
            print!("{}", render(kind, &response.objects, output));
            Ok(())
        }
        Command::Validate { file, cluster } => {
            let (file, content) = read_file(&file)?;
            let files = [(file.clone(), content)];
            let checked = if cluster {
                parse_files(&files).and_then(|objects| {
                    validate_objects(
                        &State::default(),
                        objects,
                        Origins::in_cluster(),
                        &Default::default(),
                    )
                })
            } else {
                plan(&State::default(), &files, &Interfaces::default())
                    .map(|(next, lines, _)| (next, lines))
            };
            match checked {
                Ok((_, lines)) => {
                    println!("{file}: valid ({} objects)", lines.len());
                    Ok(())
                }
                Err(e) => Err(format!("{e}\nnothing was changed")),
            }
        }
        Command::Trace { stop: true, .. } => print_outcome(call(Request::TraceStop)?),
        Command::Trace {
            spec,
            count,
            duration,
            output,
            stop: false,
        } => {
            let format = match output {
                Output::Table => Format::Table,
                _ => Format::Json,
            };
            let duration = duration.map(Duration::from_secs_f64);
            trace::follow(&args.socket, spec, count, duration, format)
        }
        Command::Stats {
            chain,
            node,
            watch,
            interval,
            output,
        } => loop {
            let response = call(Request::Stats {
                chain: chain.clone(),
                node: node.clone(),
            })?;
            if !response.ok {
                return Err(response.message);
            }
            match output {
                Output::Table => print!("{}", stats_view::table(&response, chain.is_none())),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&stats_view::json(&response))
                        .map_err(|e| e.to_string())?
                ),
                Output::Yaml => print!(
                    "{}",
                    serde_yaml_ng::to_string(&stats_view::json(&response))
                        .map_err(|e| e.to_string())?
                ),
            }
            if !watch {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs_f64(interval.max(0.1)));
            println!();
        },
        Command::Describe { kind, name } => {
            let kind = kind.parse::<Kind>()?;
            let response = call(Request::Describe { kind, name })?;
            if !response.ok {
                return Err(response.message);
            }
            print!("{}", response.message);
            Ok(())
        }
    }
}

fn print_outcome(response: Response) -> Result<(), String> {
    if response.ok {
        if !response.message.is_empty() {
            println!("{}", response.message);
        }
        return Ok(());
    }
    let mut out = String::new();
    for e in &response.errors {
        out.push_str(&format!("{e}\n"));
    }
    out.push_str(&response.message);
    Err(out)
}

fn render(kind: Kind, objects: &[Object], output: Output) -> String {
    match output {
        Output::Yaml => to_yaml(objects),
        Output::Json => to_json(objects),
        Output::Table => table(kind, objects),
    }
}

fn table(kind: Kind, objects: &[Object]) -> String {
    let header: &[&str] = match kind {
        Kind::PortPair => &["NAME", "INGRESS", "EGRESS", "INGRESS-MAC", "WEIGHT"],
        Kind::PortPairGroup => &["NAME", "PORT-PAIRS", "LB-FIELDS", "TAP"],
        Kind::FlowClassifier => &[
            "NAME",
            "ETHERTYPE",
            "PROTOCOL",
            "SOURCE",
            "DESTINATION",
            "LOGICAL-SOURCE",
            "LOGICAL-DESTINATION",
        ],
        Kind::PortChain => &["NAME", "CHAIN-ID", "GROUPS", "CLASSIFIERS", "SYMMETRIC"],
    };
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for o in objects {
        rows.push(match &o.spec {
            Spec::PortPair(p) => vec![
                o.name.clone(),
                p.ingress.clone(),
                p.egress.clone(),
                or(&p.ingress_mac, "discovered"),
                p.weight.to_string(),
            ],
            Spec::PortPairGroup(g) => vec![
                o.name.clone(),
                g.port_pairs.join(","),
                if g.lb_fields.is_empty() {
                    "5-tuple".into()
                } else {
                    serde_json::to_string(&g.lb_fields)
                        .unwrap_or_default()
                        .trim_matches(['[', ']'])
                        .replace('"', "")
                },
                g.tap_enabled.to_string(),
            ],
            Spec::FlowClassifier(f) => {
                let proto = f.protocol.as_ref().map(|p| {
                    serde_json::to_string(p)
                        .unwrap_or_default()
                        .replace('"', "")
                });
                let range = |r: &Option<PortRange>| {
                    r.as_ref().map(|r| {
                        serde_json::to_string(r)
                            .unwrap_or_default()
                            .replace('"', "")
                    })
                };
                let end = |ip: &Option<String>, port: Option<String>| match (ip, port) {
                    (None, None) => "any".to_string(),
                    (ip, port) => format!(
                        "{}{}",
                        ip.clone().unwrap_or_else(|| "*".into()),
                        port.map(|p| format!(":{p}")).unwrap_or_default()
                    ),
                };
                vec![
                    o.name.clone(),
                    format!("{:?}", f.ethertype),
                    or(&proto, "any"),
                    end(&f.source_ip_prefix, range(&f.source_port_range)),
                    end(&f.destination_ip_prefix, range(&f.destination_port_range)),
                    f.logical_source_port.clone(),
                    or(&f.logical_destination_port, "-"),
                ]
            }
            Spec::PortChain(c) => vec![
                o.name.clone(),
                c.chain_id.map(|i| i.to_string()).unwrap_or_default(),
                c.port_pair_groups.join(","),
                if c.flow_classifiers.is_empty() {
                    "-".into()
                } else {
                    c.flow_classifiers.join(",")
                },
                c.chain_parameters.symmetric.to_string(),
            ],
        });
    }
    columns(rows)
}

/// `sfcctl get nodes`, sorted by name (as the daemon sends them).
fn render_nodes(nodes: &[Node], output: Output) -> String {
    match output {
        Output::Yaml => serde_yaml_ng::to_string(nodes).expect("nodes serialise"),
        Output::Json => serde_json::to_string_pretty(nodes).expect("nodes serialise") + "\n",
        Output::Table => {
            let header = [
                "NAME",
                "TUNNEL ADDRESS",
                "STATE",
                "INTERFACES",
                "APPLIED REVISION",
                "ERROR",
            ];
            let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
            for n in nodes {
                rows.push(vec![
                    n.name.clone(),
                    n.tunnel_address.clone(),
                    n.state.clone(),
                    n.interfaces.len().to_string(),
                    n.applied_revision.to_string(),
                    n.error.clone(),
                ]);
            }
            columns(rows)
        }
    }
}

/// Rows as left-aligned columns, the first row being the header.
fn columns(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
