//! `etcd-pilot maintenance compact|defrag [--member NAME]`: an operator's request, written
//! for the coordinator to carry out through the lock upgrades use (one member at a time,
//! the leader last), then followed until the coordinator records it done.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cluster_status;
use crate::etcd::Etcd;
use crate::records::{
    self, MAINTENANCE_DONE_KEY, MAINTENANCE_REQUEST_KEY, MaintenanceDone, MaintenanceRequest,
};

/// What the request came to.
#[derive(Debug, Serialize)]
pub(crate) struct Answer {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) done: Vec<String>,
    pub(crate) by: String,
}

/// Asks the coordinator of the cluster at `endpoints` for a compaction (`compact`) or a
/// defragmentation of `members` (`defrag`; none: every member) and waits at most
/// `timeout` for its answer.
pub(crate) async fn ask(
    endpoints: &[String],
    kind: &str,
    members: &[String],
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let client = Etcd::connect(endpoints, &cluster_status::options()).await?;
    let list = client.member_list().await?;
    let known: Vec<String> = list
        .members
        .iter()
        .filter_map(|m| m.name.as_ref().map(ToString::to_string))
        .collect();
    if let Some(unknown) = members.iter().find(|m| !known.contains(m)) {
        anyhow::bail!(
            "{unknown} is not a member of this cluster (its members: {}): name one of them with --member",
            known.join(", ")
        );
    }
    if client
        .alarms()
        .await?
        .iter()
        .any(|(_, kind)| kind == "NOSPACE")
    {
        anyhow::bail!(
            "a NOSPACE alarm is raised: etcd takes no writes, so no request can be written; the \
             pilots recover from it on their own (compact, defragment each member, disarm): \
             follow it with `etcd-pilot plan`"
        );
    }
    let id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let request = MaintenanceRequest {
        id: id.clone(),
        kind: kind.to_owned(),
        members: members.to_vec(),
        at: records::now_rfc3339(),
    };
    client
        .put(MAINTENANCE_REQUEST_KEY, &records::encode(&request))
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(text)) = client.get(MAINTENANCE_DONE_KEY).await
            && let Ok(done) = records::decode::<MaintenanceDone>(MAINTENANCE_DONE_KEY, &text)
            && done.id == id
            && done.finished
        {
            if let Some(error) = done.error {
                anyhow::bail!("the coordinator could not finish it: {error}");
            }
            return Ok(Answer {
                id,
                kind: done.kind,
                done: done.done,
                by: done.by,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the coordinator has not finished the request within {} (it goes on: see \
                 `etcd-pilot plan`)",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn text(answer: &Answer) -> String {
    let mut out = format!("{} done by {}'s pilot:\n", answer.kind, answer.by);
    for line in &answer.done {
        out.push_str(&format!("  {line}\n"));
    }
    out
}
