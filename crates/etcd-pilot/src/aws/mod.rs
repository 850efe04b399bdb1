//! AWS: the SDK's shared configuration (region, timeouts, retries), and this instance's
//! identity from its metadata (IMDSv2). The `aws` discovery provider, the Route53
//! publisher and the lifecycle-hook consumer build their clients here.
//!
//! Endpoints and credentials come from the SDK's usual chain (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`..., the instance profile); the metadata endpoint from
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set.

use std::sync::OnceLock;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::{self, AddressKind, Sources};

/// One HTTPS client (connection pools, TLS configuration) for every AWS client of the process:
/// each SDK configuration would otherwise build its own.
static HTTP: OnceLock<aws_sdk_sqs::config::SharedHttpClient> = OnceLock::new();

/// The SDK configuration for `region`: every attempt times out after `timeout`, at most 3
/// attempts with backoff.
pub(crate) async fn sdk_config(region: &str, timeout: Duration) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(http) = HTTP.get() {
        loader = loader.http_client(http.clone());
    }
    let sdk = loader
        .region(Region::new(region.to_owned()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .read_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout * 3)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await;
    if let Some(http) = sdk.http_client() {
        let _ = HTTP.set(http);
    }
    sdk
}

/// The keys the instance metadata can fill in for the `aws` provider.
const FOUND_KEYS: [&str; 4] = [
    "name",
    "etcd.peer_url",
    "etcd.client_url",
    "discovery.aws_regions",
];

/// With `discovery.provider = "aws"`, fills in what the operator left unset among the member
/// name (the instance id), the peer and client URLs (this instance's address with the
/// configured or default ports) and the region, from the instance metadata. Asks nothing
/// when all are set (or for any other provider).
pub(crate) async fn find_identity(sources: &mut Sources) -> Result<(), config::Error> {
    if sources.peek("discovery.provider").as_deref() != Some("aws") {
        return Ok(());
    }
    let missing: Vec<&str> = FOUND_KEYS
        .into_iter()
        .filter(|key| sources.peek(key).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let address = match sources.peek("discovery.aws_address").as_deref() {
        Some("public_ip") => AddressKind::PublicIp,
        Some("private_dns") => AddressKind::PrivateDns,
        _ => AddressKind::PrivateIp,
    };
    let metadata = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(3))
        .max_attempts(3)
        .build();
    let keys = missing.join(", ");
    let get = |path: &'static str| {
        let (metadata, keys) = (metadata.clone(), keys.clone());
        async move {
            metadata
                .get(path)
                .await
                .map(String::from)
                .map_err(|err| config::Error {
                    key: keys,
                    problem: format!(
                        "unset, and the instance metadata does not answer {path}: {}",
                        crate::error::error_chain(&err)
                    ),
                    fix: "run on an EC2 instance that allows IMDSv2 (hop limit 2 inside a \
                          container), or set name, etcd.peer_url, etcd.client_url and \
                          discovery.aws_regions"
                        .to_owned(),
                })
        }
    };
    let instance_id = get("/latest/meta-data/instance-id").await?;
    let host = get(address.metadata_path()).await?;
    let region = get("/latest/meta-data/placement/region").await?;
    tracing::info!(%instance_id, %host, %region, "this instance, from its metadata");
    let url = |port: u16| format!("http://{host}:{port}");
    // A public IP (or a DNS name) is not an address of this host's own interfaces: listen on
    // all of them unless told otherwise.
    if address != AddressKind::PrivateIp {
        for (key, value) in [
            ("etcd.listen_peer_url", "http://0.0.0.0:2380"),
            ("etcd.listen_client_url", "http://0.0.0.0:2379"),
            ("admin.listen", "0.0.0.0:2378"),
        ] {
            if sources.peek(key).is_none() {
                sources.found.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    for key in missing {
        let value = match key {
            "name" => instance_id.clone(),
            "etcd.peer_url" => url(2380),
            "etcd.client_url" => url(2379),
            _ => region.clone(),
        };
        sources.found.insert(key.to_owned(), value);
    }
    Ok(())
}
