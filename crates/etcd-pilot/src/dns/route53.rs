//! The Route53 [`Publisher`]: lists the hosted zone's record sets and applies a batch of
//! UPSERT/DELETE changes in one `ChangeResourceRecordSets` call (atomic in Route53).

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_route53::types::{
    Change as R53Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use etcd_pilot_core::dns::{self, Change, Kind, Record};
use tokio::sync::OnceCell;

use super::Publisher;
use crate::aws;

pub(crate) struct Route53 {
    zone_id: String,
    timeout: Duration,
    client: OnceCell<aws_sdk_route53::Client>,
}

impl Route53 {
    pub(crate) fn new(zone_id: String, timeout: Duration) -> Self {
        Self {
            zone_id,
            timeout,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_route53::Client {
        self.client
            .get_or_init(|| async {
                // Route53 is global; its API lives in us-east-1.
                aws_sdk_route53::Client::new(&aws::sdk_config("us-east-1", self.timeout).await)
            })
            .await
    }
}

fn kind(rr: &RrType) -> Option<Kind> {
    match rr {
        RrType::A => Some(Kind::A),
        RrType::Srv => Some(Kind::Srv),
        RrType::Txt => Some(Kind::Txt),
        _ => None,
    }
}

fn rr_type(kind: Kind) -> RrType {
    match kind {
        Kind::A => RrType::A,
        Kind::Srv => RrType::Srv,
        Kind::Txt => RrType::Txt,
    }
}

fn record_set(record: &Record) -> anyhow::Result<ResourceRecordSet> {
    let mut set = ResourceRecordSet::builder()
        .name(&record.name)
        .r#type(rr_type(record.kind))
        .ttl(i64::from(record.ttl));
    for value in &record.values {
        set = set.resource_records(ResourceRecord::builder().value(value).build()?);
    }
    Ok(set.build()?)
}

impl Publisher for Route53 {
    async fn records(&self, domain: &str) -> anyhow::Result<Vec<Record>> {
        let client = self.client().await;
        let domain = dns::normalize(domain);
        let suffix = format!(".{domain}");
        let mut records = Vec::new();
        let mut next: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut request = client
                .list_resource_record_sets()
                .hosted_zone_id(&self.zone_id);
            if let Some((name, rr, identifier)) = next.take() {
                request = request
                    .start_record_name(name)
                    .start_record_type(rr)
                    .set_start_record_identifier(identifier);
            }
            let page = request
                .send()
                .await
                .map_err(|err| anyhow::anyhow!(crate::error::error_chain(&err)))
                .with_context(|| format!("list the record sets of hosted zone {}", self.zone_id))?;
            for set in page.resource_record_sets() {
                let name = dns::normalize(set.name());
                // Alias and routing-policy records are never ours.
                if set.alias_target().is_some() || set.set_identifier().is_some() {
                    continue;
                }
                let Some(kind) = kind(set.r#type()) else {
                    continue;
                };
                if name != domain && !name.ends_with(&suffix) {
                    continue;
                }
                records.push(Record {
                    name,
                    kind,
                    ttl: set
                        .ttl()
                        .and_then(|t| u32::try_from(t).ok())
                        .unwrap_or_default(),
                    values: set
                        .resource_records()
                        .iter()
                        .map(|r| r.value().to_owned())
                        .collect(),
                });
            }
            if !page.is_truncated() {
                break;
            }
            match (page.next_record_name(), page.next_record_type()) {
                (Some(name), Some(rr)) => {
                    next = Some((
                        name.to_owned(),
                        rr.clone(),
                        page.next_record_identifier().map(str::to_owned),
                    ));
                }
                _ => break,
            }
        }
        Ok(records)
    }

    async fn apply(&self, changes: &[Change]) -> anyhow::Result<()> {
        let client = self.client().await;
        let mut batch = ChangeBatch::builder().comment("etcd-pilot: healthy voters");
        for change in changes {
            let (action, record) = match change {
                Change::Upsert(r) => (ChangeAction::Upsert, r),
                Change::Delete(r) => (ChangeAction::Delete, r),
            };
            batch = batch.changes(
                R53Change::builder()
                    .action(action)
                    .resource_record_set(record_set(record)?)
                    .build()?,
            );
        }
        client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch.build()?)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!(crate::error::error_chain(&err)))
            .with_context(|| format!("change the record sets of hosted zone {}", self.zone_id))?;
        Ok(())
    }
}
