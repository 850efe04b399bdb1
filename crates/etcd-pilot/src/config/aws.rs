//! The AWS parts of the configuration: the `aws` discovery provider, DNS records
//! (`[dns]`), and the termination lifecycle hook (`[lifecycle]`).

use std::time::Duration;

use super::validate::Reader;
use super::{DiscoveryConfig, Error, error};

/// Which address of an instance its peers reach it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressKind {
    PrivateIp,
    PublicIp,
    PrivateDns,
}

impl AddressKind {
    /// The instance metadata path of this address.
    pub(crate) fn metadata_path(self) -> &'static str {
        match self {
            AddressKind::PrivateIp => "/latest/meta-data/local-ipv4",
            AddressKind::PublicIp => "/latest/meta-data/public-ipv4",
            AddressKind::PrivateDns => "/latest/meta-data/local-hostname",
        }
    }
}

/// The `aws` discovery provider: the running instances of these groups, in these regions.
#[derive(Clone, Debug)]
pub(crate) struct AwsDiscovery {
    pub(crate) groups: Vec<String>,
    /// Empty until resolved: then this instance's region (see `aws::identity`).
    pub(crate) regions: Vec<String>,
    pub(crate) address: AddressKind,
    pub(crate) timeout: Duration,
    /// Every member uses this node's ports: one launch template runs them all.
    pub(crate) peer_port: u16,
    pub(crate) client_port: u16,
    pub(crate) admin_port: u16,
}

/// Route53 records of the healthy voters.
#[derive(Clone, Debug)]
pub(crate) struct DnsConfig {
    pub(crate) zone_id: String,
    pub(crate) zone: etcd_pilot_core::dns::Zone,
}

/// The SQS queue of the termination lifecycle hook.
#[derive(Clone, Debug)]
pub(crate) struct LifecycleConfig {
    pub(crate) queue_url: String,
    /// The groups of the `aws` provider: messages of other groups are not the pilot's.
    pub(crate) groups: Vec<String>,
    pub(crate) region: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) timeout: Duration,
    /// How discovery addresses an instance, and the peer port: a terminating instance's peer
    /// URL, which an unstarted member entry of it carries without a name.
    pub(crate) address: AddressKind,
    pub(crate) peer_port: u16,
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn discovery(
    r: &mut Reader,
    [peer_port, client_port]: [Option<u16>; 2],
    admin_port: u16,
) -> Result<AwsDiscovery, Error> {
    let groups = list(r.given("discovery.aws_groups"));
    if groups.is_empty() {
        return Err(error(
            "discovery.aws_groups",
            "missing: the aws provider needs the autoscaling group's name",
            "set discovery.aws_groups = \"my-etcd-group\" (comma-separated for several)",
        ));
    }
    let regions = list(r.given("discovery.aws_regions"));
    if regions.is_empty() {
        return Err(error(
            "discovery.aws_regions",
            "missing, and this instance's region was not found in its metadata",
            "set discovery.aws_regions = \"us-east-1\" (comma-separated for several)",
        ));
    }
    let address = match r.text("discovery.aws_address").unwrap_or_default().as_str() {
        "private_ip" => AddressKind::PrivateIp,
        "public_ip" => AddressKind::PublicIp,
        "private_dns" => AddressKind::PrivateDns,
        other => {
            return Err(error(
                "discovery.aws_address",
                format!("{other:?} is not an address kind"),
                "use private_ip (default), public_ip (regions without peering) or private_dns",
            ));
        }
    };
    let timeout = r.duration("discovery.aws_timeout")?;
    let (Some(peer_port), Some(client_port)) = (peer_port, client_port) else {
        return Err(error(
            "etcd.peer_url",
            "etcd.peer_url or etcd.client_url has no port",
            "give both a port, for example http://10.0.1.5:2380",
        ));
    };
    Ok(AwsDiscovery {
        groups,
        regions,
        address,
        timeout,
        peer_port,
        client_port,
        admin_port,
    })
}

pub(super) fn dns(r: &mut Reader) -> Result<Option<DnsConfig>, Error> {
    match r.text("dns.provider").unwrap_or_default().as_str() {
        "none" => return Ok(None),
        "route53" => {}
        other => {
            return Err(error(
                "dns.provider",
                format!("unknown provider {other:?}"),
                "use \"route53\", or \"none\" to publish nothing",
            ));
        }
    }
    let zone_id = r
        .given("dns.zone_id")
        .filter(|z| !z.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            error(
                "dns.zone_id",
                "missing: route53 needs the hosted zone",
                "set dns.zone_id = \"Z0123456789ABCDEFGHIJ\" (aws route53 list-hosted-zones)",
            )
        })?;
    let domain = r
        .given("dns.domain")
        .map(etcd_pilot_core::dns::normalize)
        .filter(|d| d.contains('.') && !d.contains(char::is_whitespace))
        .ok_or_else(|| {
            error(
                "dns.domain",
                "missing or not a domain name",
                "set dns.domain = \"etcd.example.com\", a name inside the zone",
            )
        })?;
    let ttl = r
        .number(
            "dns.ttl",
            |t: &u32| (1..=86_400).contains(t),
            "is not a number of seconds from 1 to 86400",
            "use 60 (the default): clients then see a replaced member within a minute",
        )?
        .unwrap_or_default();
    let legacy_srv = r.boolean("dns.legacy_srv")?;
    Ok(Some(DnsConfig {
        zone_id,
        zone: etcd_pilot_core::dns::Zone {
            domain,
            ttl,
            legacy_srv,
        },
    }))
}

pub(super) fn lifecycle(
    r: &mut Reader,
    discovery: &DiscoveryConfig,
) -> Result<Option<LifecycleConfig>, Error> {
    let heartbeat_interval = r.duration("lifecycle.heartbeat_interval")?;
    let Some(queue_url) = r.given("lifecycle.queue_url").map(str::to_owned) else {
        return Ok(None);
    };
    let DiscoveryConfig::Aws(aws) = discovery else {
        return Err(error(
            "lifecycle.queue_url",
            "lifecycle hooks need discovery.provider = \"aws\"",
            "set discovery.provider = \"aws\", or remove lifecycle.queue_url",
        ));
    };
    if url::Url::parse(&queue_url).is_err() {
        return Err(error(
            "lifecycle.queue_url",
            format!("{queue_url:?} is not a URL"),
            "use the queue's URL, https://sqs.REGION.amazonaws.com/ACCOUNT/NAME",
        ));
    }
    let region = r
        .given("lifecycle.region")
        .map(str::to_owned)
        .or_else(|| aws.regions.first().cloned())
        .unwrap_or_default();
    Ok(Some(LifecycleConfig {
        queue_url,
        groups: aws.groups.clone(),
        region,
        heartbeat_interval,
        timeout: aws.timeout,
        address: aws.address,
        peer_port: aws.peer_port,
    }))
}
