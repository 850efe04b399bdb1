//! The `aws` provider: the running instances of autoscaling groups, in one or more regions.
//! A member's name is its instance id; its address the instance's private IP (or public IP,
//! or private DNS name). Instances on their way out of the group (`Terminating*`,
//! `Detaching`...) are not peers; while they still run (a termination held by a lifecycle
//! hook) the census lists them as leaving, because their etcd may be the cluster, and gives
//! the groups' desired capacity as the fleet's size.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use etcd_pilot_core::{MemberName, Peer};
use tokio::sync::OnceCell;

use super::{Census, Discovery, Error, Result};
use crate::aws;
use crate::config::{AddressKind, AwsDiscovery};

/// The lifecycle states of an instance that should be a member.
const MEMBER_STATES: [&str; 6] = [
    "Pending",
    "Pending:Wait",
    "Pending:Proceed",
    "InService",
    "EnteringStandby",
    "Standby",
];

/// Lifecycle states of an instance leaving the group that may still run its etcd.
const LEAVING_STATES: [&str; 4] = [
    "Terminating",
    "Terminating:Wait",
    "Terminating:Proceed",
    "Detaching",
];

/// What one region answered.
#[derive(Default)]
struct RegionAnswer {
    groups: Vec<String>,
    /// Instance id -> address, of instances that should be members.
    members: BTreeMap<String, String>,
    /// Instance id -> address, of running instances leaving the group.
    leaving: BTreeMap<String, String>,
    /// The sum of the groups' desired capacity.
    desired: usize,
}

struct RegionClients {
    region: String,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

pub(crate) struct AutoscalingGroups {
    config: AwsDiscovery,
    /// Built on first use (loading the SDK configuration is async).
    clients: OnceCell<Vec<RegionClients>>,
}

impl AutoscalingGroups {
    pub(crate) fn new(config: AwsDiscovery) -> Self {
        Self {
            config,
            clients: OnceCell::new(),
        }
    }

    async fn clients(&self) -> &[RegionClients] {
        self.clients
            .get_or_init(|| async {
                let mut clients = Vec::new();
                for region in &self.config.regions {
                    let sdk = aws::sdk_config(region, self.config.timeout).await;
                    clients.push(RegionClients {
                        region: region.clone(),
                        autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
                        ec2: aws_sdk_ec2::Client::new(&sdk),
                    });
                }
                clients
            })
            .await
    }

    /// The groups found in one region, their members-to-be and leaving instances (instance id
    /// -> address), and their desired capacity.
    async fn region(&self, clients: &RegionClients) -> Result<RegionAnswer> {
        let failed = |what: &str, err: &(dyn std::error::Error + 'static)| Error::Aws {
            region: clients.region.clone(),
            message: format!("{what}: {}", crate::error::error_chain(err)),
        };
        let mut ids = Vec::new();
        let mut leaving_ids = Vec::new();
        let mut answer = RegionAnswer::default();
        let mut pages = clients
            .autoscaling
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(self.config.groups.clone()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| failed("DescribeAutoScalingGroups", &err))?;
            for group in page.auto_scaling_groups() {
                answer.groups.push(
                    group
                        .auto_scaling_group_name()
                        .unwrap_or_default()
                        .to_owned(),
                );
                answer.desired +=
                    usize::try_from(group.desired_capacity().unwrap_or_default()).unwrap_or(0);
                for instance in group.instances() {
                    let state = instance.lifecycle_state().map(|s| s.as_str());
                    let Some(id) = instance.instance_id() else {
                        continue;
                    };
                    if state.is_some_and(|s| MEMBER_STATES.contains(&s)) {
                        ids.push(id.to_owned());
                    } else if state.is_some_and(|s| LEAVING_STATES.contains(&s)) {
                        leaving_ids.push(id.to_owned());
                    }
                }
            }
        }
        if ids.is_empty() && leaving_ids.is_empty() {
            return Ok(answer);
        }
        let mut pages = clients
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.iter().chain(&leaving_ids).cloned().collect()))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| failed("DescribeInstances", &err))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let address = instance_address(instance, self.config.address);
                if let (Some(id), Some(address)) = (instance.instance_id(), address)
                    && !address.is_empty()
                {
                    let into = if leaving_ids.iter().any(|l| l == id) {
                        &mut answer.leaving
                    } else {
                        &mut answer.members
                    };
                    into.insert(id.to_owned(), address.to_owned());
                }
            }
        }
        Ok(answer)
    }

    fn peer(&self, id: String, host: &str) -> Result<Peer> {
        let c = &self.config;
        let name = MemberName::new(id.clone()).map_err(|err| Error::Aws {
            region: c.regions.join(","),
            message: format!("instance id {id:?} is no member name: {err}"),
        })?;
        Ok(Peer {
            name,
            peer_url: format!("http://{host}:{}", c.peer_port),
            client_url: format!("http://{host}:{}", c.client_port),
            admin_url: format!("http://{host}:{}", c.admin_port),
        })
    }
}

impl Discovery for AutoscalingGroups {
    async fn peers(&self) -> Result<Vec<Peer>> {
        Ok(self.census().await?.peers)
    }

    async fn census(&self) -> Result<Census> {
        let clients = self.clients().await;
        let answers = tokio::time::timeout(
            self.config.timeout * 4,
            futures::future::join_all(clients.iter().map(|c| self.region(c))),
        )
        .await
        .map_err(|_| Error::Aws {
            region: self.config.regions.join(","),
            message: format!("no answer within {:?}", self.config.timeout * 4),
        })?;
        // Every region must answer: a partial view would look like a mass departure.
        let mut instances = BTreeMap::new();
        let mut leaving = BTreeMap::new();
        let mut found = Vec::new();
        let mut size = 0;
        for answer in answers {
            let answer = answer?;
            found.extend(answer.groups);
            instances.extend(answer.members);
            leaving.extend(answer.leaving);
            size += answer.desired;
        }
        // A group no region knows is an error (a typo, the wrong region), not an empty group.
        let missing: Vec<&String> = self
            .config
            .groups
            .iter()
            .filter(|g| !found.contains(g))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Aws {
                region: self.config.regions.join(","),
                message: format!(
                    "no autoscaling group named {missing:?} (check discovery.aws_groups and \
                     discovery.aws_regions)"
                ),
            });
        }
        if instances.is_empty() {
            return Err(Error::Empty(format!(
                "autoscaling group(s) {} in {}",
                self.config.groups.join(","),
                self.config.regions.join(",")
            )));
        }
        let peers = instances
            .into_iter()
            .map(|(id, host)| self.peer(id, &host))
            .collect::<Result<Vec<Peer>>>()?;
        let leaving = leaving
            .into_iter()
            .map(|(id, host)| self.peer(id, &host))
            .collect::<Result<Vec<Peer>>>()?;
        Ok(Census {
            size: size.max(peers.len()),
            peers,
            leaving,
        })
    }
}

/// The address of `instance` that discovery uses (`discovery.aws_address`).
pub(crate) fn instance_address(
    instance: &aws_sdk_ec2::types::Instance,
    kind: AddressKind,
) -> Option<&str> {
    match kind {
        AddressKind::PrivateIp => instance.private_ip_address(),
        AddressKind::PublicIp => instance.public_ip_address(),
        AddressKind::PrivateDns => instance.private_dns_name(),
    }
    .filter(|a| !a.is_empty())
}
