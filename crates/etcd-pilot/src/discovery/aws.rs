//! The `aws` provider: the running instances of autoscaling groups, in one or more regions.
//! A member's name is its instance id; its address the instance's private IP (or public IP,
//! or private DNS name). Instances on their way out of the group (`Terminating*`,
//! `Detaching`...) are not listed.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use etcd_pilot_core::{MemberName, Peer};
use tokio::sync::OnceCell;

use super::{Discovery, Error, Result};
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

    /// The groups found in one region, and its members-to-be: instance id -> address.
    async fn region(
        &self,
        clients: &RegionClients,
    ) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let failed = |what: &str, err: &(dyn std::error::Error + 'static)| Error::Aws {
            region: clients.region.clone(),
            message: format!("{what}: {}", crate::error_chain(err)),
        };
        let mut ids = Vec::new();
        let mut found = Vec::new();
        let mut pages = clients
            .autoscaling
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(self.config.groups.clone()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| failed("DescribeAutoScalingGroups", &err))?;
            for group in page.auto_scaling_groups() {
                found.push(
                    group
                        .auto_scaling_group_name()
                        .unwrap_or_default()
                        .to_owned(),
                );
                for instance in group.instances() {
                    let state = instance.lifecycle_state().map(|s| s.as_str());
                    if state.is_some_and(|s| MEMBER_STATES.contains(&s))
                        && let Some(id) = instance.instance_id()
                    {
                        ids.push(id.to_owned());
                    }
                }
            }
        }
        let mut addresses = BTreeMap::new();
        if ids.is_empty() {
            return Ok((found, addresses));
        }
        let mut pages = clients
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids))
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
                let address = match self.config.address {
                    AddressKind::PrivateIp => instance.private_ip_address(),
                    AddressKind::PublicIp => instance.public_ip_address(),
                    AddressKind::PrivateDns => instance.private_dns_name(),
                };
                if let (Some(id), Some(address)) = (instance.instance_id(), address)
                    && !address.is_empty()
                {
                    addresses.insert(id.to_owned(), address.to_owned());
                }
            }
        }
        Ok((found, addresses))
    }
}

impl Discovery for AutoscalingGroups {
    async fn peers(&self) -> Result<Vec<Peer>> {
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
        let mut found = Vec::new();
        for answer in answers {
            let (groups, addresses) = answer?;
            found.extend(groups);
            instances.extend(addresses);
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
        let c = &self.config;
        instances
            .into_iter()
            .map(|(id, host)| {
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
            })
            .collect()
    }
}
