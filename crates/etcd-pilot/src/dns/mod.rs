//! DNS records of the healthy voters, published by the coordinator.
//!
//! The core decides which records should exist and the smallest batch of changes
//! (`etcd_pilot_core::dns`); a [`Publisher`] reads and changes one zone (Route53 here);
//! [`Records`] runs one publication per reconcile step on the coordinator, and only talks to
//! the DNS service when the healthy voters changed or a minute passed (to repair drift).

mod route53;

use std::time::{Duration, SystemTime};

use etcd_pilot_core::dns::{self, Change, Published, Record};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DnsConfig;
use crate::state::PilotStatus;
pub(crate) use route53::Route53;

/// How often unchanged records are read back and repaired if someone changed them.
const RECHECK_EVERY: Duration = Duration::from_secs(60);
/// Timeout of each attempt of a DNS API call (3 attempts).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A DNS zone the pilot can read and change.
pub(crate) trait Publisher {
    /// The zone's record sets named `domain` or under it (foreign ones included).
    async fn records(&self, domain: &str) -> anyhow::Result<Vec<Record>>;
    /// Applies one batch, atomically where the service allows.
    async fn apply(&self, changes: &[Change]) -> anyhow::Result<()>;
}

/// Publication of the healthy voters, on the coordinator.
pub(crate) struct Records {
    publisher: Route53,
    config: DnsConfig,
    status: watch::Sender<PilotStatus>,
    /// The records last published, and when they were last checked.
    last: Option<(Instant, Vec<Record>)>,
}

impl Records {
    pub(crate) fn new(config: DnsConfig, status: watch::Sender<PilotStatus>) -> Self {
        Self {
            publisher: Route53::new(config.zone_id.clone(), CALL_TIMEOUT),
            config,
            status,
            last: None,
        }
    }

    /// Makes the zone publish exactly `voters` (the healthy voters). Errors are logged and
    /// shown in the status; the next step retries.
    pub(crate) async fn publish(&mut self, voters: &[Published]) {
        let desired = dns::desired(&self.config.zone, voters);
        if desired.is_empty() {
            return;
        }
        if let Some((at, last)) = &self.last
            && *last == desired
            && at.elapsed() < RECHECK_EVERY
        {
            return;
        }
        match self.sync(&desired).await {
            Ok(changed) => {
                if changed > 0 {
                    tracing::info!(
                        changes = changed,
                        domain = %self.config.zone.domain,
                        voters = ?voters.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
                        "published DNS records"
                    );
                }
                self.last = Some((Instant::now(), desired));
                let mut names: Vec<String> = voters.iter().map(|v| v.name.clone()).collect();
                names.sort();
                self.status.send_modify(|s| {
                    s.dns.published = names;
                    s.dns.at =
                        Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
                    s.dns.last_error = None;
                });
            }
            Err(err) => {
                let message = format!("{err:#}");
                tracing::warn!("cannot publish DNS records, will retry: {message}");
                self.status
                    .send_modify(|s| s.dns.last_error = Some(message));
            }
        }
    }

    async fn sync(&self, desired: &[Record]) -> anyhow::Result<usize> {
        let current = self.publisher.records(&self.config.zone.domain).await?;
        let changes = dns::changes(&self.config.zone, &current, desired);
        if !changes.is_empty() {
            self.publisher.apply(&changes).await?;
        }
        Ok(changes.len())
    }

    /// Forgets what was published: the next coordinator term reads the zone afresh.
    pub(crate) fn forget(&mut self) {
        self.last = None;
    }
}

/// The healthy voters as published: name, host and ports from their advertised URLs.
pub(crate) fn published(members: &[etcd_pilot_core::plan::ObservedMember]) -> Vec<Published> {
    members
        .iter()
        .filter(|m| m.health == etcd_pilot_core::Health::Healthy && !m.member.is_learner)
        .filter_map(|m| {
            let name = m.member.name.as_ref()?.to_string();
            let peer = url::Url::parse(m.member.peer_urls.first()?).ok()?;
            let client = url::Url::parse(m.member.client_urls.first()?).ok()?;
            Some(Published {
                name,
                host: client.host_str()?.to_owned(),
                peer_port: peer.port_or_known_default()?,
                client_port: client.port_or_known_default()?,
            })
        })
        .collect()
}
