//! `etcd-pilot reseed --from NAME`: the operator's reseed after quorum loss. It reads the
//! pilots' views of the loss (their admin APIs; etcd cannot answer for the cluster), checks
//! the choice with the core's `reseed::manual`, shows the survivors and what would be lost,
//! asks for confirmation, and leaves the order with the seed's pilot (`POST /v1/reseed`).
//! That pilot checks it again against its own view and carries out the same procedure as an
//! automatic reseed (`quorum.rs`, `pilot/`); this command follows its progress.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use etcd_pilot_core::MemberName;
use etcd_pilot_core::reseed::{self, Listing, Voter, VoterStatus};

use crate::cluster_status::{self, PilotQuorum};
use crate::etcd;
use crate::output;
use crate::peer_api::PeerApi;
use crate::quorum::ReseedOrder;
use crate::records;

/// How long the command follows the seed's pilot before it leaves it to work on.
const FOLLOW_FOR: Duration = Duration::from_secs(300);

/// What the operator asked for.
pub(crate) struct Request {
    pub(crate) from: String,
    pub(crate) force: bool,
    pub(crate) yes: bool,
    pub(crate) json: bool,
}

/// Runs the command against the cluster `endpoints` lead to; returns what to print last.
pub(crate) async fn run(endpoints: &[String], request: &Request) -> anyhow::Result<String> {
    let from = MemberName::new(request.from.clone())
        .map_err(|err| anyhow::anyhow!("--from {:?}: {err}", request.from))?;
    let pool = etcd::Pool::new(cluster_status::options());
    let list = pool.agreed_member_list(endpoints).await.with_context(|| {
        format!(
            "no member answered at {}: a reseed starts from a survivor whose etcd runs",
            endpoints.join(",")
        )
    })?;
    let Some(member) = list.members.iter().find(|m| m.name.as_ref() == Some(&from)) else {
        anyhow::bail!(
            "{from} is not a member of the cluster at {} (members: {})",
            endpoints.join(","),
            names(&list)
        );
    };
    let admin = member
        .client_urls
        .first()
        .and_then(|u| crate::peer_api::default_admin_url(u))
        .with_context(|| format!("{from} has no client URL"))?;
    // Any member this command reaches that follows a leader: the cluster is not lost (a
    // minority's pilot may not see it, but the operator's reseed would split it).
    let probes = pool.probe_members(&list).await;
    if let Some((member, _)) = list
        .members
        .iter()
        .zip(&probes)
        .find(|(_, probe)| probe.as_ref().is_ok_and(|s| s.leader.is_some()))
    {
        anyhow::bail!(
            "not reseeding: {} answers with a leader, so a quorum lives; a reseed would split \
             the cluster",
            member
                .name
                .as_ref()
                .map_or_else(|| format!("{:x}", member.id.0), ToString::to_string)
        );
    }
    let views = cluster_status::pilots_quorum(&list).await;
    let Some(view) = views.iter().find(|v| v.pilot == from.as_str()) else {
        anyhow::bail!(
            "the pilot of {from} ({admin}) does not report a lost quorum: its etcd has a \
             leader, does not answer, or its pilot is down. `etcd-pilot plan` shows what each \
             pilot sees"
        );
    };
    let observed = observed(view, &views);
    let seed = reseed::manual(&observed, &from, request.force)
        .map_err(|refusal| anyhow::anyhow!("not reseeding from {from}: {}", refusal.describe()))?;
    // With --json, stdout holds only the record at the end.
    if request.json {
        output::error(&summary(view, &seed, &views));
    } else {
        output::print(&summary(view, &seed, &views));
    }
    if !request.yes {
        confirm(&from)?;
    }
    let peers = PeerApi::new(Duration::from_secs(5))?;
    let order = ReseedOrder {
        from: from.to_string(),
        force: request.force,
        by: operator(),
        id: format!("{:08x}", rand::random::<u32>()),
    };
    match peers.order_reseed(&admin, &order).await? {
        Ok(text) => output::error(&format!("the pilot of {from} took the order: {text}")),
        Err(why) => anyhow::bail!("the pilot of {from} refused the order: {why}"),
    }
    follow(&peers, &admin, member, &order, request.json).await
}

/// The view of the seed's pilot as the core's observation (listing and pilots do not matter
/// to a manual reseed); the highest raft index any pilot has seen.
fn observed(view: &PilotQuorum, views: &[PilotQuorum]) -> reseed::Observed {
    let voter = |name: &str, status: Option<VoterStatus>| {
        MemberName::new(name.to_owned()).ok().map(|name| Voter {
            name,
            status,
            pilot_answers: true,
            listing: Listing::Listed,
        })
    };
    let voters = view
        .view
        .survivors
        .iter()
        .filter_map(|s| {
            voter(
                &s.name,
                Some(VoterStatus {
                    raft_index: s.raft_index,
                    has_leader: false,
                }),
            )
        })
        .chain(view.view.unreachable.iter().filter_map(|n| voter(n, None)))
        .collect();
    reseed::Observed {
        voters,
        discovery_ok: true,
        lost_for_secs: view.view.lost_for_secs,
        highest_seen: views.iter().map(|v| v.view.highest_seen).max().unwrap_or(0),
        strangers: Vec::new(),
    }
}

/// What the operator confirms: who survives, from which index, what is lost and given up.
fn summary(view: &PilotQuorum, seed: &reseed::Seed, views: &[PilotQuorum]) -> String {
    let mut text = format!(
        "quorum lost for {} s: {} do not answer\nsurvivors (applied raft index):\n",
        view.view.lost_for_secs,
        view.view.unreachable.join(", ")
    );
    for survivor in &view.view.survivors {
        let mark = if survivor.name == seed.name.as_str() {
            "  <- seed"
        } else {
            "  (its data is set aside; it joins the seed)"
        };
        text.push_str(&format!(
            "  {:<12} {}{mark}\n",
            survivor.name, survivor.raft_index
        ));
    }
    let best = view.view.survivors.first().map_or(0, |s| s.raft_index);
    text.push_str(&format!(
        "the cluster goes on from {}'s data at raft index {}: {} entries behind the best \
         survivor, {} behind the highest index any pilot has seen\n",
        seed.name,
        seed.raft_index,
        best.saturating_sub(seed.raft_index),
        seed.behind
    ));
    text.push_str(&format!(
        "{} are given up for good: if any is alive behind a partition, this splits the \
         cluster in two\n",
        view.view.unreachable.join(", ")
    ));
    for other in views.iter().filter(|v| v.pilot != view.pilot) {
        if other
            .view
            .seed
            .as_ref()
            .is_some_and(|s| s.name != seed.name.as_str())
        {
            text.push_str(&format!(
                "warning: the pilot of {} names another seed: the order is refused while it \
                 does\n",
                other.pilot
            ));
        }
    }
    text
}

/// On a terminal: the operator types the seed's name. Elsewhere: `--yes` is required.
fn confirm(from: &MemberName) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not reseeding: stdin is not a terminal, so nobody confirmed; pass --yes");
    }
    let answer = output::ask(&format!("type {from} to reseed from it: "))
        .context("read the confirmation")?;
    if answer != from.as_str() {
        anyhow::bail!("not confirmed: nothing was done");
    }
    Ok(())
}

/// Follows the seed's pilot until its etcd leads a cluster of its own data and the reseed
/// record of `order` is in it, the order is refused, or [`FOLLOW_FOR`] passes.
async fn follow(
    peers: &PeerApi,
    admin: &str,
    member: &etcd_pilot_core::Member,
    order: &ReseedOrder,
    json: bool,
) -> anyhow::Result<String> {
    let from = &order.from;
    let tag = format!("[order {}]", order.id);
    let client_url = member.client_urls.first().cloned().unwrap_or_default();
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < FOLLOW_FOR {
        if let Some(status) = peers.status(admin).await {
            if let Some(outcome) = status.reseed_order.as_ref()
                && outcome.contains(&tag)
                && outcome.contains("refused")
            {
                anyhow::bail!("the pilot of {from}: {outcome}");
            }
            let step = status
                .reseed
                .map(|r| format!(" (reseed: {}, {})", r.step, r.detail))
                .unwrap_or_default();
            let line = format!(
                "{}: {}{step}",
                status.phase.unwrap_or_default(),
                status.reason.unwrap_or_default()
            );
            if line != last {
                output::error(&format!("  {from} {line}"));
                last = line;
            }
        }
        if let Some(record) = recorded(&client_url, &tag).await {
            return Ok(if json {
                serde_json::to_string_pretty(&record)?
            } else {
                format!(
                    "reseeded: {from} leads the cluster from raft index {} (ordered by {}; its \
                     data before is at {}; snapshot in the store: {}). The other survivors and \
                     new nodes join it; `etcd-pilot status` shows them",
                    record.raft_index, record.ordered_by, record.copy, record.snapshot
                )
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!(
        "the reseed from {from} did not finish within {} s; its pilot goes on: follow \
         {admin}/v1/status",
        FOLLOW_FOR.as_secs()
    )
}

/// The reseed record in the seed's etcd, once it leads and has written it: the one of the
/// order tagged `tag`.
async fn recorded(client_url: &str, tag: &str) -> Option<records::Reseed> {
    let etcd = etcd::Etcd::connect_one(client_url, &cluster_status::options())
        .await
        .ok()?;
    let status = etcd.status().await.ok()?;
    if status.leader != Some(status.member_id) {
        return None;
    }
    let text = etcd.get(records::RESEED_KEY).await.ok()??;
    let record: records::Reseed = records::decode(records::RESEED_KEY, &text).ok()?;
    record.ordered_by.contains(tag).then_some(record)
}

fn names(list: &etcd::MemberList) -> String {
    list.members
        .iter()
        .filter_map(|m| m.name.as_ref().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who orders: the user and host, for the record.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_owned());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "somewhere".to_owned());
    format!("{user}@{host}")
}
