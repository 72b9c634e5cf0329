//! Clusters of node agents sharing a real etcd, for the tests of the distributed control plane.
//!
//! - [`Pki`]: a throwaway certificate authority and the certificates etcd and its clients use,
//!   made with the `openssl` command;
//! - [`Etcd`]: one etcd cluster of one or more members, all inside one namespace of a [`Lab`];
//! - [`ClusterLab`]: an underlay bridge in namespace `u` (where etcd listens) and one namespace
//!   per node, each with its own sfc-daemon ([`Agent`]).
//!
//! Like a [`Lab`], each owns what it starts and ends it when dropped, also when a test fails.
//! An [`Etcd`] borrows nothing from its lab but runs in its namespaces and writes in its
//! directory, so drop it first: declare it after the lab (locals drop in reverse order).

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::lab::{run, sfcctl_at, spawn_daemon_at, wait_for, Lab, Stats};

/// The underlay address of namespace `u`, on its bridge: where [`ClusterLab::start_etcd`]
/// listens.
pub const ETCD_ADDR: &str = "10.99.0.1";

/// Members of an [`Etcd`] serve clients on `CLIENT_PORT + i` and peers on `PEER_PORT + i`
/// (member `i` counts from 0).
pub const CLIENT_PORT: u16 = 23790;
pub const PEER_PORT: u16 = 23800;

/// Members (and nodes) stay below 10 so that ports and addresses stay apart.
const MAX_MEMBERS: usize = 9;

/// How long a start, a restart with quorum or [`Etcd::restart_all`] waits for health.
const HEALTH_LIMIT: Duration = Duration::from_secs(20);

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `child` has ended, without reaping it (so that a `&self` can look): its /proc
/// entry is gone or a zombie.
fn has_exited(child: &Child) -> bool {
    match fs::read_to_string(format!("/proc/{}/stat", child.id())) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn kill_and_wait(child: &mut Child) -> Result<()> {
    // An already ended child cannot be signalled; waiting still reaps it.
    let _ = child.kill();
    child.wait().context("waiting for a killed process")?;
    Ok(())
}

/// A throwaway PKI: a CA, a server certificate for etcd, a client certificate for the nodes,
/// and a client certificate from another CA ("a stranger"), which etcd must refuse. EC P-256
/// keys, valid for 2 days, in PEM files.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (`ca.pem`; its key is `ca-key.pem`), which etcd and the clients trust.
    pub ca: PathBuf,
    /// `server.pem`, `server-key.pem`: etcd's, for the addresses given and 127.0.0.1. Usable
    /// as a client certificate too, as etcd 3.4's own gateway connects with it.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `client.pem`, `client-key.pem`: CN "sfc-node", signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// `stranger.pem`, `stranger-key.pem`: CN "sfc-node" too, but signed by another CA
    /// (`stranger-ca.pem`).
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

/// The extensions of each kind of certificate, as sections of an openssl configuration.
fn openssl_config(server_ips: &[&str]) -> String {
    let sans: Vec<String> = server_ips.iter().map(|ip| format!("IP:{ip}")).collect();
    format!(
        "[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
",
        sans.join(", ")
    )
}

impl Pki {
    /// Generates everything into `dir` (made if missing), the server certificate valid for
    /// the IP addresses `server_ips` and 127.0.0.1.
    pub fn generate(dir: &Path, server_ips: &[&str]) -> Result<Pki> {
        let mut ips: Vec<&str> = vec!["127.0.0.1"];
        for ip in server_ips {
            ip.parse::<IpAddr>()
                .with_context(|| format!("server address {ip:?} is not an IP address"))?;
            if !ips.contains(ip) {
                ips.push(ip);
            }
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("openssl.cnf");
        fs::write(&config, openssl_config(&ips))?;
        let file = |name: &str| dir.join(name);

        let key = |path: &Path| -> Result<()> {
            run(Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                .arg(path))
            .map(|_| ())
            .context("making a key")
        };
        let ca = |name: &str, cn: &str| -> Result<()> {
            key(&file(&format!("{name}-key.pem")))?;
            run(Command::new("openssl")
                .args(["req", "-x509", "-new", "-sha256", "-days", "2"])
                .arg("-config")
                .arg(&config)
                .args(["-extensions", "ca", "-subj", &format!("/CN={cn}")])
                .arg("-key")
                .arg(file(&format!("{name}-key.pem")))
                .arg("-out")
                .arg(file(&format!("{name}.pem"))))
            .map(|_| ())
            .with_context(|| format!("making CA {cn}"))
        };
        // A leaf `name`.pem with key `name`-key.pem, signed by CA `ca_name`.
        let leaf = |name: &str, cn: &str, ca_name: &str, extensions: &str, serial: u32| {
            key(&file(&format!("{name}-key.pem")))?;
            let csr = file(&format!("{name}.csr"));
            run(Command::new("openssl")
                .args(["req", "-new", "-sha256"])
                .arg("-config")
                .arg(&config)
                .args(["-subj", &format!("/CN={cn}")])
                .arg("-key")
                .arg(file(&format!("{name}-key.pem")))
                .arg("-out")
                .arg(&csr))
            .with_context(|| format!("making the request of {name}"))?;
            run(Command::new("openssl")
                .args(["x509", "-req", "-sha256", "-days", "2"])
                .args(["-set_serial", &serial.to_string()])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(file(&format!("{ca_name}.pem")))
                .arg("-CAkey")
                .arg(file(&format!("{ca_name}-key.pem")))
                .arg("-extfile")
                .arg(&config)
                .args(["-extensions", extensions])
                .arg("-out")
                .arg(file(&format!("{name}.pem"))))
            .with_context(|| format!("signing {name}"))?;
            let _ = fs::remove_file(&csr);
            anyhow::Ok(())
        };

        ca("ca", "sfc-test-ca")?;
        leaf("server", "sfc-etcd", "ca", "server", 2)?;
        leaf("client", "sfc-node", "ca", "client", 3)?;
        ca("stranger-ca", "sfc-stranger-ca")?;
        leaf("stranger", "sfc-node", "stranger-ca", "client", 4)?;
        Ok(Pki {
            ca: file("ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server-key.pem"),
            client_cert: file("client.pem"),
            client_key: file("client-key.pem"),
            stranger_cert: file("stranger.pem"),
            stranger_key: file("stranger-key.pem"),
        })
    }
}

/// One member of an [`Etcd`].
struct Member {
    name: String,
    client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// One etcd cluster, its members all in one namespace of a lab, on one address with ports of
/// their own. Clients use TLS with client certificates when it has a [`Pki`]; peers talk plain
/// HTTP (on the lab's private address, nothing else reaches them). Dropping it kills them all.
pub struct Etcd {
    /// The full name of the namespace.
    netns: String,
    members: Vec<Member>,
    /// Flags every member starts with, bar its own and `--initial-cluster-state`.
    common_args: Vec<String>,
    pki: Option<Pki>,
}

impl Etcd {
    /// Starts `members` (1 to 9) members in namespace `ns_short` of `lab`, listening on `addr`
    /// (an address that namespace has; with a `pki`, one its server certificate names), and
    /// waits until all are healthy (at most 20 s). Data directories and logs
    /// (`etcd-NS-mI/`, `etcd-NS-mI.log`) are in the lab's directory.
    pub fn start(
        lab: &Lab,
        ns_short: &str,
        addr: &str,
        members: usize,
        pki: Option<&Pki>,
    ) -> Result<Etcd> {
        if members == 0 || members > MAX_MEMBERS {
            bail!("an etcd cluster of {members} members: 1 to {MAX_MEMBERS}");
        }
        let netns = lab.ns(ns_short);
        let scheme = if pki.is_some() { "https" } else { "http" };
        let peer_url = |i: usize| format!("http://{addr}:{}", PEER_PORT + i as u16);
        let initial_cluster: Vec<String> = (0..members)
            .map(|i| format!("m{i}={}", peer_url(i)))
            .collect();
        let mut common_args: Vec<String> = [
            "--initial-cluster",
            &initial_cluster.join(","),
            // Unique per lab: members of another lab's cluster (or of an earlier run, with
            // data directories left behind) can never be mistaken for ours.
            "--initial-cluster-token",
            &format!("{netns}-etcd"),
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            // etcd 3.4's default logger (capnslog) is deprecated and says so at every start.
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(pki) = pki {
            for (flag, path) in [
                ("--cert-file", &pki.server_cert),
                ("--key-file", &pki.server_key),
                ("--trusted-ca-file", &pki.ca),
            ] {
                common_args.push(flag.to_string());
                common_args.push(path.to_string_lossy().into_owned());
            }
            common_args.push("--client-cert-auth".to_string());
        }
        let mut etcd = Etcd {
            netns,
            members: (0..members)
                .map(|i| {
                    let name = format!("m{i}");
                    let client_url = format!("{scheme}://{addr}:{}", CLIENT_PORT + i as u16);
                    let base = format!("etcd-{ns_short}-{name}");
                    Member {
                        name,
                        client_url,
                        data_dir: lab.dir.join(&base),
                        log: lab.dir.join(format!("{base}.log")),
                        child: None,
                    }
                })
                .collect(),
            common_args,
            pki: pki.cloned(),
        };
        for m in &etcd.members {
            // A member started on an old data directory ignores the flags above and joins (or
            // is) the old cluster, which may still look healthy: a mix-up to refuse, not heal.
            if m.data_dir.exists() {
                bail!(
                    "{} exists: an earlier etcd of this namespace; one a lab",
                    m.data_dir.display()
                );
            }
        }
        for i in 0..members {
            etcd.spawn(i, "new", peer_url(i))?;
        }
        etcd.wait_healthy(HEALTH_LIMIT)?;
        Ok(etcd)
    }

    /// Starts member `i`; the caller checked that it is not running.
    fn spawn(&mut self, i: usize, state: &str, peer_url: String) -> Result<()> {
        let member = &self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("opening {}", member.log.display()))?;
        // etcd makes its data directory itself, with the mode (0700) it insists on.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcd"])
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster-state", state])
            .args(&self.common_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting etcd member {}", member.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn peer_url(&self, i: usize) -> String {
        // The client URL has the address; only the scheme and the port differ.
        let client = &self.members[i].client_url;
        let host = client
            .rsplit_once("://")
            .and_then(|(_, rest)| rest.rsplit_once(':'))
            .map(|(host, _)| host)
            .unwrap_or_default();
        format!("http://{host}:{}", PEER_PORT + i as u16)
    }

    fn member(&self, i: usize) -> Result<&Member> {
        self.members
            .get(i)
            .ok_or_else(|| anyhow!("no etcd member {i} (of {})", self.members.len()))
    }

    /// The client URLs of all members, running or not, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// [`Self::endpoints`] joined by commas, as `--etcd` and `--endpoints` take them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The client URLs of the members running now.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// How many members must run for the cluster to serve.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// SIGKILLs member `i` (a crash: nothing of it runs afterwards) and reaps it. Killing a
    /// member that is not running does nothing.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.member(i)?;
        if let Some(mut child) = self.members[i].child.take() {
            kill_and_wait(&mut child)?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data directory. Waits until the running members are
    /// healthy (at most 20 s) only if they now make a quorum: the first member back after
    /// [`Self::kill_all`] cannot serve alone.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.member(i)?.child.is_some() {
            bail!("etcd member {i} is running");
        }
        self.spawn(i, "existing", self.peer_url(i))?;
        if self.live_endpoints().len() >= self.quorum() {
            self.wait_healthy(HEALTH_LIMIT)?;
        }
        Ok(())
    }

    /// SIGKILLs every member.
    pub fn kill_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.kill(i)?;
        }
        Ok(())
    }

    /// Starts every member that is not running and waits until all are healthy (at most 20 s).
    pub fn restart_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i, "existing", self.peer_url(i))?;
            }
        }
        self.wait_healthy(HEALTH_LIMIT)
    }

    /// Waits at most `limit` until every running member answers `etcdctl endpoint health`
    /// (which reads through the raft log, so it needs a leader); fails early, with its log,
    /// if one of them exits.
    pub fn wait_healthy(&self, limit: Duration) -> Result<()> {
        let live = self.live_endpoints();
        if live.is_empty() {
            bail!("no etcd member is running");
        }
        let mut last = String::new();
        let outcome = wait_for(limit, || {
            if let Some(m) = self
                .members
                .iter()
                .find(|m| m.child.as_ref().is_some_and(has_exited))
            {
                return Some(Err(format!(
                    "etcd member {} exited:\n{}",
                    m.name,
                    log_tail(&m.log, 30)
                )));
            }
            // Each try is bounded by etcdctl's own timeouts.
            match self.etcdctl_cmd(&live, self.client_identity(), &["endpoint", "health"], "1s") {
                Ok(_) => Some(Ok(())),
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => bail!(e),
            None => {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .filter(|m| m.child.is_some())
                    .map(|m| format!("--- {}:\n{}", m.name, log_tail(&m.log, 20)))
                    .collect();
                bail!("etcd not healthy in {limit:?}: {last}\n{}", logs.join("\n"))
            }
        }
    }

    /// The node client certificate and key, when clients need one.
    fn client_identity(&self) -> Option<(&Path, &Path)> {
        self.pki
            .as_ref()
            .map(|p| (p.client_cert.as_path(), p.client_key.as_path()))
    }

    /// Runs `etcdctl args` (API v3) inside the namespace against all endpoints, as a node
    /// (with the client certificate when there is a PKI); Ok(stdout), or the error with stderr.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcdctl_with(&self.endpoints(), self.client_identity(), args)
    }

    /// Runs `etcdctl args` inside the namespace against `endpoints`. With a PKI, etcdctl
    /// trusts its CA and shows `client` (certificate, key) if given, or no certificate at all;
    /// without one, `client` is ignored. Bounded by etcdctl's timeouts (2 s to connect, 5 s a
    /// command).
    pub fn etcdctl_with(
        &self,
        endpoints: &[String],
        client: Option<(&Path, &Path)>,
        args: &[&str],
    ) -> Result<String> {
        self.etcdctl_cmd(endpoints, client, args, "2s")
    }

    fn etcdctl_cmd(
        &self,
        endpoints: &[String],
        client: Option<(&Path, &Path)>,
        args: &[&str],
        dial_timeout: &str,
    ) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "etcdctl"])
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--dial-timeout={dial_timeout}"))
            .arg("--command-timeout=5s");
        if let Some(pki) = &self.pki {
            cmd.arg(format!("--cacert={}", pki.ca.display()));
            if let Some((cert, key)) = client {
                cmd.arg(format!("--cert={}", cert.display()))
                    .arg(format!("--key={}", key.display()));
            }
        }
        run(cmd.args(args))
    }

    /// The log of member `i` (empty if there is none).
    pub fn log(&self, i: usize) -> String {
        self.members
            .get(i)
            .and_then(|m| fs::read_to_string(&m.log).ok())
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = kill_and_wait(&mut child);
            }
        }
    }
}

/// One node's sfc-daemon in a [`ClusterLab`].
pub struct Agent {
    /// The node's name, `n1`, `n2`, ...: its namespace's short name.
    pub node: String,
    /// The short name of its namespace (the same as `node`).
    pub ns: String,
    /// Where its socket (`sfc.sock`), state (`state/`), bpffs (`bpffs/`) and log
    /// (`daemon.log`) are.
    pub dir: PathBuf,
    child: Option<Child>,
    /// The arguments of the last start, for [`ClusterLab::restart_agent`].
    args: Vec<String>,
    bpffs_mounted: bool,
}

impl Agent {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("sfc.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Whether it was started and not killed since (it may have exited by itself).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child)?;
        }
        Ok(())
    }
}

/// Several nodes on one underlay: namespace `u` holds bridge `br0` with [`ETCD_ADDR`]/24; node
/// `i` (from 1) is namespace `n<i>`, joined to the bridge by a veth (`uplink` there, `u-n<i>`
/// in `u`) with addresses 10.99.0.1`<i>`/24 and fd99::1`<i>`/64. Each node may run an
/// [`Agent`].
pub struct ClusterLab {
    /// Agents go before the lab (see the Drop below); the lab is free for more namespaces.
    agents: Vec<Agent>,
    pub lab: Lab,
}

impl ClusterLab {
    /// The topology for `nodes` (1 to 9) nodes; `tag` (a few letters) goes into the names.
    pub fn new(tag: &str, nodes: usize) -> Result<Self> {
        if nodes == 0 || nodes > MAX_MEMBERS {
            bail!("a cluster lab of {nodes} nodes: 1 to {MAX_MEMBERS}");
        }
        let mut lab = Lab::new(tag)?;
        lab.add_ns("u")?;
        lab.sh(
            "u",
            &format!(
                "ip link add br0 type bridge && ip addr add {ETCD_ADDR}/24 dev br0 \
                 && ip link set br0 up"
            ),
        )?;
        let mut agents = Vec::new();
        for i in 1..=nodes {
            let node = format!("n{i}");
            lab.add_ns(&node)?;
            lab.veth(&node, "uplink", "u", &format!("u-{node}"))?;
            lab.sh("u", &format!("ip link set u-{node} master br0"))?;
            lab.sh(
                &node,
                &format!(
                    "ip addr add {}/24 dev uplink && ip addr add {}/64 dev uplink nodad",
                    Self::node_addr(i),
                    Self::node_addr6(i)
                ),
            )?;
            agents.push(Agent {
                dir: lab.dir.join(format!("agent-{node}")),
                ns: node.clone(),
                node,
                child: None,
                args: Vec::new(),
                bpffs_mounted: false,
            });
        }
        Ok(Self { agents, lab })
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.agents.len()
    }

    /// The short namespace name of node `i` (from 1): `n<i>`.
    pub fn node_ns(&self, i: usize) -> String {
        format!("n{i}")
    }

    /// The underlay address of node `i` (from 1): 10.99.0.1`<i>`.
    pub fn node_addr(i: usize) -> String {
        format!("10.99.0.1{i}")
    }

    /// Node `i`'s IPv6 address on the same underlay: fd99::1`<i>`.
    pub fn node_addr6(i: usize) -> String {
        format!("fd99::1{i}")
    }

    /// Starts an etcd of `members` members in `u`, on [`ETCD_ADDR`]. It must be dropped
    /// before this lab (declare it after).
    pub fn start_etcd(&self, members: usize, pki: Option<&Pki>) -> Result<Etcd> {
        Etcd::start(&self.lab, "u", ETCD_ADDR, members, pki)
    }

    /// Makes a [`Pki`] in the lab's directory (`pki/`) whose server certificate names
    /// [`ETCD_ADDR`].
    pub fn pki(&self) -> Result<Pki> {
        Pki::generate(&self.lab.dir.join("pki"), &[ETCD_ADDR])
    }

    /// Node `i`'s agent (`i` from 1).
    pub fn agent(&self, i: usize) -> &Agent {
        self.try_agent(i).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_agent(&self, i: usize) -> Result<&Agent> {
        i.checked_sub(1)
            .and_then(|k| self.agents.get(k))
            .ok_or_else(|| anyhow!("no node {i} (nodes are 1 to {})", self.agents.len()))
    }

    fn agent_mut(&mut self, i: usize) -> Result<&mut Agent> {
        let n = self.agents.len();
        i.checked_sub(1)
            .and_then(|k| self.agents.get_mut(k))
            .ok_or_else(|| anyhow!("no node {i} (nodes are 1 to {n})"))
    }

    /// Starts sfc-daemon in node `i`'s namespace (`i` from 1) with its own socket, state
    /// directory, bpffs and metrics port, then `args` (`--etcd`, `--node`, ...), and waits
    /// until it serves its socket (at most 20 s; the error carries its log).
    pub fn start_agent(&mut self, i: usize, args: &[String]) -> Result<()> {
        let netns = self.lab.ns(&self.node_ns(i));
        let bin_dir = self.lab.bin_dir.clone();
        let agent = self.agent_mut(i)?;
        if agent.child.is_some() {
            bail!("the agent of {} is running", agent.node);
        }
        let bpffs = agent.dir.join("bpffs");
        if !agent.bpffs_mounted {
            // Outside /sys, which `ip netns exec` remounts; kept across restarts, as a node's
            // bpffs would be.
            fs::create_dir_all(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
            run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
            agent.bpffs_mounted = true;
        }
        agent.args = args.to_vec();
        let child = spawn_daemon_at(&netns, &bin_dir, &agent.dir, &bpffs, args, "info")
            .with_context(|| format!("the agent of {}", agent.node))?;
        agent.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`'s agent (a crash or an OOM kill) and reaps it; nothing if it is not
    /// running.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        self.agent_mut(i)?.kill()
    }

    /// Starts node `i`'s agent again with the arguments of its last start (SIGKILLing it first
    /// if it still runs), on the same state directory and bpffs.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.agent_mut(i)?;
        agent.kill()?;
        let args = agent.args.clone();
        self.start_agent(i, &args)
    }

    /// Node `i`'s daemon.log (every start appends to it).
    pub fn agent_log(&self, i: usize) -> String {
        self.try_agent(i).map(Agent::log).unwrap_or_default()
    }

    /// Runs sfcctl against node `i`'s agent; Ok(stdout) on success, Err(stderr) otherwise.
    pub fn sfcctl(&self, i: usize, args: &[&str]) -> std::result::Result<String, String> {
        self.sfcctl_stdin(i, args, None)
    }

    pub fn sfcctl_stdin(
        &self,
        i: usize,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::result::Result<String, String> {
        let agent = self.try_agent(i).map_err(|e| e.to_string())?;
        sfcctl_at(&self.lab.bin_dir, &agent.socket(), args, stdin)
    }

    /// `sfcctl apply -f -` of `yaml` on node `i`; the revision it committed.
    pub fn apply(&self, i: usize, yaml: &str) -> Result<i64> {
        let out = self
            .sfcctl_stdin(i, &["apply", "-f", "-"], Some(yaml))
            .map_err(|e| anyhow!("apply on n{i}: {e}"))?;
        committed(&out).ok_or_else(|| anyhow!("no revision in the apply's answer: {out}"))
    }

    /// `sfcctl stats` of node `i`.
    pub fn stats(&self, i: usize) -> Result<Stats> {
        let text = self
            .sfcctl(i, &["stats", "--node", &format!("n{i}"), "-o", "json"])
            .map_err(|e| anyhow!("stats on n{i}: {e}"))?;
        Stats::parse(&text)
    }

    /// `sfcctl get nodes -o json` on node `i`, row by row.
    pub fn node_rows(&self, i: usize) -> Result<Vec<serde_json::Value>> {
        let out = self
            .sfcctl(i, &["get", "nodes", "-o", "json"])
            .map_err(|e| anyhow!("get nodes on n{i}: {e}"))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Waits (at most 20 s) until every node in `which` reports `revision` applied without
    /// error.
    pub fn wait_applied(&self, which: &[usize], revision: i64) -> Result<()> {
        let done = wait_for(Duration::from_secs(20), || {
            let rows = self.node_rows(1).ok()?;
            which
                .iter()
                .all(|n| {
                    rows.iter().any(|r| {
                        r["name"] == format!("n{n}")
                            && r["appliedRevision"] == revision
                            && r["error"] == ""
                    })
                })
                .then_some(())
        });
        match done {
            Some(()) => Ok(()),
            None => bail!(
                "not every node of {which:?} applied revision {revision}: {:#?}",
                self.node_rows(1)
            ),
        }
    }
}

/// The revision an apply's answer says it committed.
pub fn committed(out: &str) -> Option<i64> {
    out.split("committed as revision ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        // Before the lab deletes the namespaces and the directory the bpffs mounts are in.
        for agent in &mut self.agents {
            let _ = agent.kill();
            if agent.bpffs_mounted {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(agent.dir.join("bpffs"))
                    .output();
            }
        }
    }
}
