//! `etcd-pilot upgrade check --to RELEASE|PATH`: whether moving the cluster to a release is
//! allowed, before anything moves. It reads each member's release (its status) and the
//! cluster version (etcd's `/version`), asks each member's pilot which releases its node has
//! (`/v1/status` `release.available`), and checks the path with the core's
//! `upgrade::check_path`; it names the flags of the target and the order the members would
//! take (followers by name, the leader last).
//!
//! `etcd-pilot upgrade --to RELEASE|PATH`: the same check, then (for a `local up` cluster)
//! `etcd.bin` rewritten in every member's config, then the rolling upgrade followed until
//! every member runs the target. The pilots do the upgrade (`rolling.rs`,
//! `pilot/upgrade.rs`); this command only changes what they are asked for and watches.

use std::time::Duration;

use anyhow::Context as _;
use etcd_pilot_core::upgrade::{self, Minor, Path, Version};
use serde::Serialize;

use crate::cluster_status;
use crate::etcd;
use crate::output;
use crate::peer_api::PeerApi;

/// What the check found.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) target: String,
    /// The cluster version, when a member said.
    pub(crate) cluster_version: Option<String>,
    pub(crate) members: Vec<MemberCheck>,
    /// `done`, `patch`, `minor upgrade`, `rollback`, or why it is refused.
    pub(crate) path: String,
    pub(crate) allowed: bool,
    /// What the minor upgrade asks first (`etcdutl check v2store`), if anything.
    pub(crate) precondition: Option<String>,
    /// The target's flags (not for production, out of support, below a security floor).
    pub(crate) target_flags: Vec<String>,
    /// The order the members would take: followers by name, the leader last.
    pub(crate) order: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct MemberCheck {
    pub(crate) name: String,
    pub(crate) running: Option<String>,
    pub(crate) leader: bool,
    /// Where its node has the target release, or `None` when its pilot does not list it.
    pub(crate) target_bin: Option<String>,
    /// Why its pilot could not be asked, if so.
    pub(crate) pilot_error: Option<String>,
    /// Why its etcd's release is unknown, if so.
    pub(crate) etcd_error: Option<String>,
}

/// The target: a release (`3.5.16`), or a binary whose `--version` names one.
pub(crate) async fn target(to: &str) -> anyhow::Result<Version> {
    if let Ok(version) = to.parse::<Version>() {
        return Ok(version);
    }
    let path = std::path::Path::new(to);
    if path.is_file() {
        return crate::supervisor::release_of(path).await;
    }
    anyhow::bail!("--to {to:?} is neither an etcd release such as 3.5.16 nor an etcd binary")
}

/// Checks moving the cluster `endpoints` lead to onto `to`.
pub(crate) async fn check(endpoints: &[String], to: Version) -> anyhow::Result<Check> {
    let pool = etcd::Pool::new(cluster_status::options());
    let (list, probes) = cluster_status::probed_members(&pool, endpoints).await?;
    let peers = PeerApi::new(Duration::from_secs(3))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("build the HTTP client")?;
    // The leader any member follows: known even when the leader's own probe fails.
    let leader = probes.iter().flatten().find_map(|status| status.leader);
    let mut cluster_version = None;
    let mut members = Vec::new();
    for (member, probe) in list.members.iter().zip(&probes) {
        let name = member
            .name
            .as_ref()
            .map_or_else(|| format!("{:x}", member.id.0), ToString::to_string);
        let client_url = member.client_urls.first();
        if cluster_version.is_none()
            && let Some(url) = client_url
        {
            cluster_version = cluster_version_at(&http, url).await;
        }
        let (target_bin, pilot_error) =
            match client_url.and_then(|u| crate::peer_api::default_admin_url(u)) {
                Some(admin) => match peers.status(&admin).await {
                    Some(status) => (
                        status.release.and_then(|r| {
                            r.available.iter().find_map(|line| {
                                let (version, path) = line.split_once(' ')?;
                                (version.parse::<Version>().ok()? == to).then(|| path.to_owned())
                            })
                        }),
                        None,
                    ),
                    None => (None, Some(format!("its pilot does not answer at {admin}"))),
                },
                None => (None, Some("no client URL to find its pilot".to_owned())),
            };
        let status = probe.as_ref().ok();
        members.push(MemberCheck {
            name,
            running: status.map(|s| s.version.clone()),
            leader: leader == Some(member.id),
            target_bin,
            pilot_error,
            etcd_error: probe.as_ref().err().map(ToString::to_string),
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let running: Vec<Version> = members
        .iter()
        .filter_map(|m| m.running.as_deref()?.parse().ok())
        .collect();
    let cluster: Option<Minor> = cluster_version.as_deref().and_then(|c| c.parse().ok());
    let unknown: Vec<&str> = members
        .iter()
        .filter(|m| {
            m.running
                .as_deref()
                .and_then(|r| r.parse::<Version>().ok())
                .is_none()
        })
        .map(|m| m.name.as_str())
        .collect();
    let (path, allowed, precondition) = if unknown.is_empty() {
        verdict(upgrade::check_path(&running, cluster, to))
    } else {
        (
            format!(
                "unknown: the release of {} cannot be read, and every member's counts",
                unknown.join(", ")
            ),
            false,
            None,
        )
    };
    let mut order: Vec<String> = members
        .iter()
        .filter(|m| !m.leader && m.running.as_deref() != Some(to.to_string().as_str()))
        .map(|m| m.name.clone())
        .collect();
    order.extend(
        members
            .iter()
            .filter(|m| m.leader && m.running.as_deref() != Some(to.to_string().as_str()))
            .map(|m| format!("{} (the leader, after leadership moves away)", m.name)),
    );
    Ok(Check {
        target: to.to_string(),
        cluster_version,
        members,
        path,
        allowed,
        precondition,
        target_flags: crate::state::ReleaseStatus::flags_of(&to.to_string()),
        order,
    })
}

/// The path's verdict for people: what it is, whether it is allowed, what it asks first.
fn verdict(checked: Result<Path, upgrade::Refusal>) -> (String, bool, Option<String>) {
    match checked {
        Ok(Path::Done) => ("done: every member runs it".to_owned(), true, None),
        Ok(Path::Patch) => ("patch releases of one minor".to_owned(), true, None),
        Ok(Path::MinorUp { upgrade }) => (
            format!(
                "minor upgrade {} -> {} ({})",
                upgrade.from, upgrade.to, upgrade.source
            ),
            true,
            upgrade
                .v2store_check
                .then(|| "`etcdutl check v2store` must pass on every member's data first".into()),
        ),
        Ok(Path::Rollback) => (
            "rollback: the cluster version has not moved, so the members that went up may come \
                 back"
                .to_owned(),
            true,
            None,
        ),
        Err(refusal) => (format!("refused: {}", refusal.describe()), false, None),
    }
}

/// Whether the check allows the upgrade and every member's node has the target.
pub(crate) fn ready(check: &Check) -> bool {
    check.allowed && check.members.iter().all(|m| m.target_bin.is_some())
}

/// The check for people.
pub(crate) fn text(check: &Check) -> String {
    let mut out = format!(
        "target:   etcd {} (cluster version {})\n",
        check.target,
        check.cluster_version.as_deref().unwrap_or("unknown")
    );
    for m in &check.members {
        out.push_str(&format!(
            "member:   {:<10} runs {:<8}{} target: {}\n",
            m.name,
            m.running.as_deref().map_or_else(
                || format!("? ({})", m.etcd_error.as_deref().unwrap_or("no answer")),
                ToOwned::to_owned
            ),
            if m.leader { " (leader)" } else { "" },
            match (&m.target_bin, &m.pilot_error) {
                (Some(bin), _) => bin.clone(),
                (None, Some(err)) => format!("unknown: {err}"),
                (None, None) => "MISSING: add its binary to etcd.versions on this node".to_owned(),
            }
        ));
    }
    out.push_str(&format!("path:     {}\n", check.path));
    if let Some(pre) = &check.precondition {
        out.push_str(&format!("first:    {pre}\n"));
    }
    for flag in &check.target_flags {
        out.push_str(&format!("warning:  etcd {}: {flag}\n", check.target));
    }
    if check.allowed && !check.order.is_empty() {
        out.push_str(&format!("order:    {}\n", check.order.join(", ")));
    }
    out.push_str(if ready(check) {
        "verdict:  allowed\n"
    } else if check.allowed {
        "verdict:  allowed once every node has the target release\n"
    } else {
        "verdict:  refused\n"
    });
    out
}

/// The cluster version, from the first of `client_urls` whose etcd says (3 s each).
pub(crate) async fn cluster_version(client_urls: &[String]) -> Option<Minor> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    for url in client_urls {
        if let Some(version) = cluster_version_at(&http, url).await {
            return version.parse().ok();
        }
    }
    None
}

/// `/version` of the etcd at `client_url`: its `etcdcluster` (the cluster version).
async fn cluster_version_at(http: &reqwest::Client, client_url: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Versions {
        etcdcluster: String,
    }
    let url = format!("{}/version", client_url.trim_end_matches('/'));
    let versions: Versions = http.get(url).send().await.ok()?.json().await.ok()?;
    // "not_decided" before the cluster settles on one.
    versions
        .etcdcluster
        .parse::<Minor>()
        .ok()
        .map(|m| m.to_string())
}

/// How `upgrade --to` ended.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) target: String,
    pub(crate) seconds: f64,
    pub(crate) cluster_version: Option<String>,
    /// Each member and the release it runs at the end.
    pub(crate) members: Vec<(String, Option<String>)>,
}

/// `upgrade --to`: checks the path, points every `local up` member's `etcd.bin` at the
/// target when `dir` is given (otherwise the operator changes it on each node), and follows
/// the upgrade for at most `timeout`.
pub(crate) async fn start(
    endpoints: &[String],
    to: &str,
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let target = target(to).await?;
    let check = check(endpoints, target).await?;
    if !check.allowed {
        anyhow::bail!(
            "{}the upgrade to etcd {target} is refused; nothing was changed",
            text(&check)
        );
    }
    if let Some(dir) = dir {
        let path = std::path::Path::new(to);
        let bin = if path.is_file() {
            std::path::absolute(path).with_context(|| format!("resolve {to}"))?
        } else {
            check
                .members
                .iter()
                .find_map(|m| m.target_bin.clone())
                .map(std::path::PathBuf::from)
                .with_context(|| {
                    format!(
                        "no member's node lists etcd {target} (etcd.versions): pass --to with \
                         the path of its binary"
                    )
                })?
        };
        let changed = crate::local::set_etcd_bin(dir, &bin)?;
        output::print(&format!(
            "etcd.bin = {} in {} member configs; the pilots read it within a second",
            bin.display(),
            changed.len()
        ));
    } else {
        output::print(&format!(
            "following the upgrade to etcd {target}: point etcd.bin at it on every node (each \
             pilot reads its config file again within a second)"
        ));
    }
    follow(endpoints, target, timeout).await
}

/// How long after the change a coordinator's verdict (refused, stopped) is believed: one
/// written earlier may predate the pilots reading it.
const SETTLE: Duration = Duration::from_secs(3);

/// Follows the upgrade to `target` until every member runs it, healthy, and the coordinator
/// says it is done; fails when the coordinator refuses or stops it, or after `timeout`.
pub(crate) async fn follow(
    endpoints: &[String],
    target: Version,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let started = tokio::time::Instant::now();
    let wall_start = std::time::SystemTime::now();
    let want = target.to_string();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut last_line = String::new();
    let mut last_versions: Vec<(String, Option<String>)> = Vec::new();
    loop {
        let rows = cluster_status::collect(endpoints).await.unwrap_or_default();
        let versions: Vec<(String, Option<String>)> = rows
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let on_target = rows
            .iter()
            .filter(|r| r.version.as_deref() == Some(want.as_str()))
            .count();
        let all_healthy = !rows.is_empty() && rows.iter().all(|r| r.health == "healthy");
        let record = cluster_status::plan(endpoints)
            .await
            .ok()
            .and_then(|p| p.plan);
        // Written after the pilots had time to read the change (each reads its config every
        // observe interval, 1 s by default, and the coordinator plans the next one).
        let fresh = record
            .as_ref()
            .and_then(|r| humantime::parse_rfc3339(&r.at).ok())
            .is_some_and(|at| at >= wall_start + SETTLE)
            // By then a record the change made stale has been rewritten.
            || started.elapsed() >= 2 * SETTLE;
        let summary = record.and_then(|p| p.upgrade);
        bar.set_length(u64::try_from(rows.len()).unwrap_or_default());
        bar.set_position(u64::try_from(on_target).unwrap_or_default());
        let elapsed = started.elapsed().as_secs_f64();
        for (name, version) in &versions {
            let before = last_versions
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v);
            if version.is_some() && before.is_some_and(|b| b != version) {
                bar.suspend(|| {
                    output::print(&format!(
                        "{elapsed:>6.1}s  {name} runs etcd {}",
                        version.as_deref().unwrap_or("?")
                    ));
                });
            }
        }
        last_versions = versions.clone();
        if let Some(summary) = &summary {
            let line = format!("{}: {}", summary.next, summary.reason);
            if line != last_line {
                bar.set_message(summary.reason.clone());
                bar.suspend(|| output::print(&format!("{elapsed:>6.1}s  {line}")));
                last_line = line;
            }
            // A record about another target is from before the pilots read the change.
            let about_this = summary.target.as_deref() == Some(want.as_str());
            if fresh && about_this && (summary.next == "refused" || summary.next == "stopped") {
                bar.abandon();
                anyhow::bail!(
                    "the upgrade to etcd {target} {}:\n{}",
                    if summary.next == "refused" {
                        "is refused"
                    } else {
                        "stopped"
                    },
                    cluster_status::upgrade_text(summary, "  ", "  ")
                );
            }
        }
        // Done once etcd moved the cluster version too (within seconds of the last member).
        if summary.is_none() && all_healthy && on_target == rows.len() {
            let cluster = cluster_version(endpoints).await;
            if cluster == Some(target.line()) {
                bar.finish_and_clear();
                return Ok(Outcome {
                    target: want,
                    seconds: elapsed,
                    cluster_version: cluster.map(|c| c.to_string()),
                    members: versions,
                });
            }
            bar.set_message(format!(
                "every member runs {want}; waiting for etcd to move the cluster version from {}",
                cluster.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
            ));
        }
        if started.elapsed() > timeout {
            bar.abandon();
            anyhow::bail!(
                "the upgrade to etcd {target} is not done after {} s ({on_target} of {} members \
                 run it); the pilots go on: `etcd-pilot plan` follows it",
                timeout.as_secs(),
                rows.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The outcome for people.
pub(crate) fn outcome_text(outcome: &Outcome) -> String {
    format!(
        "upgraded to etcd {} in {:.1} s: {}; cluster version {}",
        outcome.target,
        outcome.seconds,
        outcome
            .members
            .iter()
            .map(|(n, v)| format!("{n} {}", v.as_deref().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
        outcome.cluster_version.as_deref().unwrap_or("unknown")
    )
}
