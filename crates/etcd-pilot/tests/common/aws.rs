//! AWS on loopback for the AWS tests: a moto server (EC2, Auto Scaling, Route53, SQS) started
//! by `tests/aws/moto_server.py` (which adds the two lifecycle calls moto lacks), driven with
//! the Rust SDK; and a tiny instance metadata server (IMDSv2) per node, so each pilot finds
//! its own identity the way it does on EC2. Autoscaling groups live in a VPC `127.0.0.0/16`
//! with one subnet `127.0.S.0/24` per region, so instances get loopback addresses.
//! Everything started here is stopped on drop: moto by PID, metadata servers by their flag.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{Filter, RequestLaunchTemplateData};

use super::{Cluster, signal, wait_child};

const VENV: &str = "/opt/etcd-pilot-venv";
pub const GROUP: &str = "etcd";
pub const HOOK: &str = "etcd-terminate";
pub const DOMAIN: &str = "etcd.pilot.test";

/// A running moto server.
pub struct Moto {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Terminations are held in `Terminating:Wait` until CompleteLifecycleAction.
    hold: bool,
}

impl Moto {
    /// Starts moto on `port`, logging under `dir`. `None` when the venv is missing outside CI.
    pub async fn start(port: u16, dir: &Path) -> Option<Self> {
        Self::start_with(port, dir, false).await
    }

    /// [`Moto::start`]; with `hold`, a terminated instance stays running in
    /// `Terminating:Wait` (a replacement is launched at once) until its lifecycle action is
    /// completed, as with a real group's termination hook.
    pub async fn start_with(port: u16, dir: &Path, hold: bool) -> Option<Self> {
        super::required(&Path::new(VENV).join("bin/python"))?;
        std::fs::create_dir_all(dir).unwrap();
        let mut moto = Self {
            port,
            dir: dir.to_owned(),
            child: None,
            hold,
        };
        moto.spawn();
        moto.wait_up().await;
        Some(moto)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("moto.log"))
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/moto_server.py");
        let child = Command::new(Path::new(VENV).join("bin/python"))
            .arg(script)
            .arg(self.port.to_string())
            .env("LIFECYCLE_LOG", self.lifecycle_log())
            .env("LIFECYCLE_ETCD_ENDPOINTS", self.dir.join("etcd-endpoints"))
            .env("HOLD_TERMINATIONS", if self.hold { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn wait_up(&self) {
        super::wait_http(&self.endpoint(), &self.dir.join("moto.log")).await;
    }

    /// Stops moto (SIGKILL: an outage, state lost with it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn lifecycle_log(&self) -> PathBuf {
        self.dir.join("lifecycle.jsonl")
    }

    /// The lifecycle calls moto received, oldest first.
    pub fn lifecycle_calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.lifecycle_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Tells the lifecycle recorder which etcd to ask for the member list.
    pub fn watch_members(&self, endpoints: &[String]) {
        std::fs::write(self.dir.join("etcd-endpoints"), endpoints.join("\n")).unwrap();
    }

    /// The environment every pilot needs to use this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            // Never the real metadata address: each node sets its own.
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                "http://127.0.0.1:9".into(),
            ),
        ]
    }

    pub async fn sdk(&self, region: &str) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new(region.to_owned()))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    /// Creates, in `region`, the VPC, the subnet `127.0.<subnet>.0/24`, a launch template and
    /// the autoscaling group [`GROUP`] of `size` instances.
    pub async fn group(&self, region: &str, subnet: u8, size: i32) {
        let sdk = self.sdk(region).await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let vpc = ec2
            .create_vpc()
            .cidr_block("127.0.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
        let sub = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("127.0.{subnet}.0/24"))
            .send()
            .await
            .unwrap();
        let subnet_id = sub.subnet().unwrap().subnet_id().unwrap().to_owned();
        let images = ec2.describe_images().send().await.unwrap();
        let image = images.images()[0].image_id().unwrap().to_owned();
        ec2.create_launch_template()
            .launch_template_name("etcd")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        aws_sdk_autoscaling::Client::new(&sdk)
            .create_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name("etcd")
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(9)
            .desired_capacity(size)
            .vpc_zone_identifier(subnet_id)
            .send()
            .await
            .unwrap();
    }

    /// The group's running instances in `region`: (instance id, private IP), by IP.
    pub async fn instances(&self, region: &str) -> Vec<(String, String)> {
        let sdk = self.sdk(region).await;
        let ids: Vec<String> = self.lifecycle_states(region).await.into_keys().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let out = aws_sdk_ec2::Client::new(&sdk)
            .describe_instances()
            .set_instance_ids(Some(ids))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let mut found: Vec<(String, String)> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.private_ip_address().unwrap().to_owned(),
                )
            })
            .collect();
        found.sort_by_key(|(_, ip)| ip.rsplit('.').next().unwrap().parse::<u8>().unwrap());
        found
    }

    /// Every instance of the group in `region` with its lifecycle state.
    pub async fn lifecycle_states(&self, region: &str) -> BTreeMap<String, String> {
        let sdk = self.sdk(region).await;
        let groups = aws_sdk_autoscaling::Client::new(&sdk)
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(GROUP)
            .send()
            .await
            .unwrap();
        groups.auto_scaling_groups()[0]
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.lifecycle_state().unwrap().as_str().to_owned(),
                )
            })
            .collect()
    }

    pub async fn set_desired(&self, region: &str, n: i32) {
        aws_sdk_autoscaling::Client::new(&self.sdk(region).await)
            .set_desired_capacity()
            .auto_scaling_group_name(GROUP)
            .desired_capacity(n)
            .send()
            .await
            .unwrap();
    }

    /// Terminates `instance` as the group would (a replacement is launched at once).
    pub async fn terminate(&self, region: &str, instance: &str) {
        aws_sdk_autoscaling::Client::new(&self.sdk(region).await)
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .unwrap();
    }

    /// A queue and the group's termination hook notifying it; returns the queue's URL.
    pub async fn lifecycle_queue(&self, region: &str) -> String {
        let sdk = self.sdk(region).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let url = sqs
            .create_queue()
            .queue_name("etcd-lifecycle")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        aws_sdk_autoscaling::Client::new(&sdk)
            .put_lifecycle_hook()
            .auto_scaling_group_name(GROUP)
            .lifecycle_hook_name(HOOK)
            .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
            .notification_target_arn(format!("arn:aws:sqs:{region}:123456789012:etcd-lifecycle"))
            .role_arn("arn:aws:iam::123456789012:role/etcd-lifecycle")
            .heartbeat_timeout(300)
            .send()
            .await
            .unwrap();
        url
    }

    /// Sends `body` to the queue, as the group (or anyone) would.
    pub async fn send(&self, region: &str, queue: &str, body: &str) {
        aws_sdk_sqs::Client::new(&self.sdk(region).await)
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Deletes every message of the queue, in flight or not.
    pub async fn purge(&self, region: &str, queue: &str) {
        aws_sdk_sqs::Client::new(&self.sdk(region).await)
            .purge_queue()
            .queue_url(queue)
            .send()
            .await
            .unwrap();
    }

    /// How many messages the queue still holds (visible or in flight).
    pub async fn queue_depth(&self, region: &str, queue: &str) -> usize {
        let out = aws_sdk_sqs::Client::new(&self.sdk(region).await)
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().unwrap();
        let n = |k: aws_sdk_sqs::types::QueueAttributeName| -> usize {
            attrs.get(&k).map_or(0, |v| v.parse().unwrap())
        };
        n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }

    /// A hosted zone for [`DOMAIN`]'s parent; returns its id.
    pub async fn zone(&self) -> String {
        let out = aws_sdk_route53::Client::new(&self.sdk("us-east-1").await)
            .create_hosted_zone()
            .name("pilot.test.")
            .caller_reference("etcd-pilot-test")
            .send()
            .await
            .unwrap();
        out.hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_owned()
    }

    /// The zone's records: `name type` -> sorted values.
    pub async fn records(&self, zone: &str) -> BTreeMap<String, Vec<String>> {
        let out = aws_sdk_route53::Client::new(&self.sdk("us-east-1").await)
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap();
        out.resource_record_sets()
            .iter()
            .filter(|r| !matches!(r.r#type().as_str(), "NS" | "SOA"))
            .map(|r| {
                let mut values: Vec<String> = r
                    .resource_records()
                    .iter()
                    .map(|v| v.value().to_owned())
                    .collect();
                values.sort();
                (
                    format!("{} {}", r.name().trim_end_matches('.'), r.r#type().as_str()),
                    values,
                )
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

/// The records the pilots should publish for `members`: (instance id, IP).
pub fn expected_records(members: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let srv = |port: u16| -> Vec<String> {
        let mut v: Vec<String> = sorted
            .iter()
            .map(|(id, _)| format!("0 0 {port} {id}.{DOMAIN}"))
            .collect();
        v.sort();
        v
    };
    let mut ips: Vec<String> = sorted.iter().map(|(_, ip)| ip.clone()).collect();
    ips.sort();
    let mut out = BTreeMap::new();
    out.insert(format!("{DOMAIN} A"), ips);
    out.insert(format!("_etcd-server._tcp.{DOMAIN} SRV"), srv(2380));
    out.insert(format!("_etcd-client._tcp.{DOMAIN} SRV"), srv(2379));
    out.insert(
        format!("_etcd-pilot.{DOMAIN} TXT"),
        sorted.iter().map(|(id, _)| format!("\"{id}\"")).collect(),
    );
    for (id, ip) in &sorted {
        out.insert(format!("{id}.{DOMAIN} A"), vec![ip.clone()]);
    }
    out
}

/// A fake instance metadata service (IMDSv2) for one instance, on `ip:2377`.
pub struct Metadata {
    stop: Arc<AtomicBool>,
    addr: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Metadata {
    pub fn start(ip: &str, instance_id: &str, region: &str) -> Self {
        let addr = format!("{ip}:2377");
        let listener = TcpListener::bind(&addr).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answers: BTreeMap<String, String> = [
            ("/latest/meta-data/instance-id", instance_id.to_owned()),
            ("/latest/meta-data/local-ipv4", ip.to_owned()),
            (
                "/latest/meta-data/local-hostname",
                format!("ip-{}.ec2.internal", ip.replace('.', "-")),
            ),
            ("/latest/meta-data/placement/region", region.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &answers);
                }
            }
        });
        Self {
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// The environment variable that points a pilot here.
    pub fn env(&self) -> (String, String) {
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
            format!("http://{}", self.addr),
        )
    }
}

fn serve(stream: TcpStream, answers: &BTreeMap<String, String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut token = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        token |= header
            .to_ascii_lowercase()
            .starts_with("x-aws-ec2-metadata-token:");
    }
    let (status, extra, body) = match (method, path) {
        ("PUT", "/latest/api/token") => (
            "200 OK",
            "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
            "pilot-test-token".to_owned(),
        ),
        // IMDSv2 only: a request without a token is refused, as on an instance that requires it.
        ("GET", _) if !token => ("401 Unauthorized", "", String::new()),
        ("GET", p) => match answers.get(p) {
            Some(v) => ("200 OK", "", v.clone()),
            None => ("404 Not Found", "", String::new()),
        },
        _ => ("405 Method Not Allowed", "", String::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{extra}content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

impl Drop for Metadata {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A pilot config for an instance of the group: identity from its metadata, peers from the
/// groups in `regions`; `extra` appended (`[dns]`, `[lifecycle]`, timers).
pub fn pilot_config(etcd: &Path, regions: &str, extra: &str) -> String {
    format!(
        "cluster_name = \"test\"\ndata_dir = {{data_dir}}\n\n[etcd]\nbin = {:?}\n\n\
         [discovery]\nprovider = \"aws\"\naws_groups = \"{GROUP}\"\naws_regions = \"{regions}\"\naws_timeout = \"2s\"\n\n{extra}",
        etcd.display().to_string()
    )
}

/// The AWS nodes of a test: one pilot per instance, each with its metadata server.
pub struct AwsNodes {
    pub metadata: BTreeMap<String, Metadata>,
}

impl AwsNodes {
    pub fn new() -> Self {
        Self {
            metadata: BTreeMap::new(),
        }
    }

    /// Adds instance `id` at `ip` in `region` to `cluster` (with its own metadata server)
    /// and starts its pilot; returns its index.
    pub fn add(
        &mut self,
        cluster: &mut Cluster,
        id: &str,
        ip: &str,
        region: &str,
        config: &str,
    ) -> usize {
        let metadata = Metadata::start(ip, id, region);
        let env = vec![metadata.env()];
        self.metadata.insert(id.to_owned(), metadata);
        let i = cluster.push_node(id, ip, config, &env);
        cluster.start(i);
        i
    }
}

/// The index of the node named `name`.
pub fn index(cluster: &Cluster, name: &str) -> usize {
    cluster.nodes.iter().position(|n| n.name == name).unwrap()
}
