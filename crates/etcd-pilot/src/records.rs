//! Every record the pilots keep in etcd: its key and its type. Writers and readers go through
//! these types (serde), never through ad-hoc JSON; a field added later gets a default so that
//! a record written by an older pilot still reads.

use anyhow::Context as _;
use etcd_pilot_core::ClusterId;
use etcd_pilot_core::condition::Condition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Held under the coordinator's lease; its value is the coordinator's name, its create
/// revision the fencing token.
pub(crate) const COORDINATOR_KEY: &str = "/etcd-pilot/coordinator";
/// The coordinator's last plan ([`PlanRecord`]), written under the fence.
pub(crate) const PLAN_KEY: &str = "/etcd-pilot/coordinator/plan";
/// The membership change in flight, or the last one ([`Intent`]), written under the fence.
pub(crate) const INTENT_KEY: &str = "/etcd-pilot/coordinator/intent";
/// Written once, when a cluster first forms ([`Formed`]).
pub(crate) const FORMED_KEY: &str = "/etcd-pilot/cluster/formed";
/// The lineage of the data: every cluster it was restored through, oldest first, itself last
/// (a JSON list of hex ids; see [`parse_lineage`]). It travels inside snapshots, so a restored
/// cluster knows where it came from.
pub(crate) const LINEAGE_KEY: &str = "/etcd-pilot/cluster/lineage";

/// The coordinator's plan, as `etcd-pilot plan` reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PlanRecord {
    /// The coordinator that wrote it.
    pub(crate) by: String,
    pub(crate) fencing_token: i64,
    /// `converged`, `wait` or the action's kind.
    pub(crate) next: String,
    pub(crate) reason: String,
    /// When it was written (RFC 3339, seconds).
    pub(crate) at: String,
    /// What keeps the cluster from full strength, with ages as of `at`. `None` in a record
    /// of a pilot that did not write them, or one whose conditions this pilot cannot read (a
    /// newer kind): readers then probe the members themselves.
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) conditions: Option<Vec<Condition>>,
    /// A rolling upgrade of etcd, while one is asked for (some member runs another release
    /// than its pilot's `etcd.bin`) or the lock is held.
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) upgrade: Option<UpgradeSummary>,
    /// The next maintenance step (defragmentation, a space alarm), while there is one.
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) maintenance: Option<MaintenanceSummary>,
}

/// The coordinator's next maintenance step, as `plan` and `/v1/status` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaintenanceSummary {
    /// `compact`, `grant`, `defrag`, `hold`, `release`, `move_leader`, `disarm`,
    /// `too_large` or `wait`.
    pub(crate) next: String,
    /// What it does, or what blocks it, in words.
    pub(crate) reason: String,
}

/// The coordinator's view of a rolling upgrade, as `plan` and `/v1/status` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpgradeSummary {
    /// `grant`, `hold`, `release`, `move_leader`, `backup`, `wait`, `refused` or `stopped`.
    pub(crate) next: String,
    /// What it does, or what blocks the next step, in words.
    pub(crate) reason: String,
    /// The release the pilots ask for, once they agree.
    pub(crate) target: Option<String>,
    pub(crate) cluster_version: Option<String>,
    /// Who holds the lock.
    pub(crate) holder: Option<String>,
    /// Each member: `m1 runs 3.4.23, wants 3.5.16 (leader)`.
    pub(crate) members: Vec<String>,
}

/// `T`, or `None` when the value does not read as one (rather than failing the record).
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Where a membership change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IntentState {
    /// Recorded before the call: a coordinator that finds it so after taking the role knows
    /// its predecessor may have stopped midway.
    Started,
    Done,
    Failed,
}

impl IntentState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            IntentState::Started => "started",
            IntentState::Done => "done",
            IntentState::Failed => "failed",
        }
    }
}

/// A membership change, recorded before and after the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    /// The action's kind (`remove_unlisted`, `promote_learner`, ...).
    pub(crate) kind: String,
    /// The member's name, or its id before it has one.
    pub(crate) member: String,
    pub(crate) member_id: String,
    pub(crate) reason: String,
    pub(crate) by: String,
    pub(crate) fencing_token: i64,
    pub(crate) state: IntentState,
    /// When this state was recorded (RFC 3339, seconds).
    pub(crate) at: String,
}

/// The first formation of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Formed {
    pub(crate) cluster_id: String,
    pub(crate) by: String,
    pub(crate) at: String,
}

/// The last reseed after quorum loss, written by the seed's pilot once its etcd runs
/// normally again.
pub(crate) const RESEED_KEY: &str = "/etcd-pilot/cluster/reseed";

/// A reseed: who seeded, when, from which raft index, and what it may have lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reseed {
    /// The seed's member name.
    pub(crate) by: String,
    /// When the seed restarted alone (RFC 3339).
    pub(crate) at: String,
    /// The seed's applied raft index: what the new cluster starts from.
    pub(crate) raft_index: u64,
    /// Raft entries the seed lacked against the highest index its pilot had seen.
    pub(crate) behind: u64,
    /// The other survivors (they rejoin with empty disks) and the voters that were gone.
    pub(crate) survivors: Vec<String>,
    pub(crate) unreachable: Vec<String>,
    /// Where the seed's data was copied before the reseed.
    pub(crate) copy: String,
    /// The client URLs of every voter at the decision: a pilot resuming the reseed after a
    /// crash asks them whether a quorum lives after all.
    #[serde(default)]
    pub(crate) members: Vec<String>,
    /// Set just before etcd starts forced: only then is the reseed done once etcd runs, and
    /// only then is it recorded in etcd.
    #[serde(default)]
    pub(crate) forced: bool,
    /// Who ordered it: `automatic`, or the operator's `reseed` command (`by` in its order).
    #[serde(default)]
    pub(crate) ordered_by: String,
    /// The generation of the store's reseed claim this pilot holds (with a backup store),
    /// ended once the reseed is recorded.
    #[serde(default)]
    pub(crate) claim: Option<u64>,
    /// The backup id of the seed's data taken into the store before the reseed, or why
    /// there is none.
    #[serde(default)]
    pub(crate) snapshot: String,
    /// Set once the forced etcd led alone, before it restarts normally: never forced again.
    #[serde(default)]
    pub(crate) restarted: bool,
    /// Whether this record is in etcd already (the pilot's own bookkeeping, never stored).
    #[serde(skip)]
    pub(crate) written: bool,
}

/// The upgrade lock ([`UpgradeLock`]), written by the coordinator under the fence.
pub(crate) const UPGRADE_KEY: &str = "/etcd-pilot/upgrade";

/// Which member may go out of service now: restart its etcd on a new release (`kind`
/// `upgrade`), or be defragmented (`defrag`). At most one member holds it; the coordinator
/// grants and releases it (core `upgrade::next_step`, `maintenance::next_step`); for an
/// upgrade the holder's pilot acts on it, a defragmentation is the coordinator's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpgradeLock {
    /// The member granted it; `None` once released.
    pub(crate) holder: Option<String>,
    /// `upgrade` (also when absent: written before defragmentation shared the lock) or
    /// `defrag`.
    #[serde(default = "upgrade_kind")]
    pub(crate) kind: String,
    /// The release it was granted for (empty for a defragmentation).
    #[serde(default)]
    pub(crate) target: String,
    /// The coordinator that wrote it, and under which fencing token.
    pub(crate) by: String,
    pub(crate) fencing_token: i64,
    pub(crate) at: String,
    /// The member that held it last, once released.
    #[serde(default)]
    pub(crate) last: Option<String>,
}

pub(crate) const LOCK_UPGRADE: &str = "upgrade";
pub(crate) const LOCK_DEFRAG: &str = "defrag";

fn upgrade_kind() -> String {
    LOCK_UPGRADE.to_owned()
}

impl UpgradeLock {
    /// The core's view of the lock: who holds it and what for (`None`: free).
    pub(crate) fn held(&self) -> Option<etcd_pilot_core::maintenance::HeldLock> {
        use etcd_pilot_core::maintenance::{HeldLock, LockKind};
        Some(HeldLock {
            holder: etcd_pilot_core::MemberName::new(self.holder.clone()?).ok()?,
            kind: if self.kind == LOCK_DEFRAG {
                LockKind::Defrag
            } else {
                LockKind::Upgrade
            },
        })
    }
}

/// An operator's maintenance request (`etcd-pilot maintenance compact|defrag`), for the
/// coordinator to carry out through the lock.
pub(crate) const MAINTENANCE_REQUEST_KEY: &str = "/etcd-pilot/maintenance/request";
/// The coordinator's progress on, and then answer to, the last request.
pub(crate) const MAINTENANCE_DONE_KEY: &str = "/etcd-pilot/maintenance/done";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaintenanceRequest {
    pub(crate) id: String,
    /// `compact` or `defrag`.
    pub(crate) kind: String,
    /// The members to defragment (empty: every member).
    #[serde(default)]
    pub(crate) members: Vec<String>,
    pub(crate) at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaintenanceDone {
    pub(crate) id: String,
    pub(crate) kind: String,
    /// What was done, one line per member or compaction.
    pub(crate) done: Vec<String>,
    /// The members defragmented so far: a new coordinator goes on with the others.
    #[serde(default)]
    pub(crate) members: Vec<String>,
    /// Everything asked is done (otherwise this is the progress so far).
    #[serde(default)]
    pub(crate) finished: bool,
    /// Why it could not finish, if so.
    pub(crate) error: Option<String>,
    pub(crate) by: String,
    pub(crate) at: String,
}

/// The release etcd runs on this node's data, kept beside the data (`release.json`): a
/// restart keeps it until the coordinator grants the upgrade lock, whatever `etcd.bin`
/// says by then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunningRelease {
    pub(crate) bin: std::path::PathBuf,
    pub(crate) version: String,
    /// Set while the member restarts on a new release under the lock.
    #[serde(default)]
    pub(crate) upgrading: Option<UpgradeAttempt>,
    /// The last attempt that was rolled back: not tried again while `etcd.bin` is the same
    /// file.
    #[serde(default)]
    pub(crate) failed: Option<FailedUpgrade>,
}

/// A restart on a new release, under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpgradeAttempt {
    pub(crate) bin: std::path::PathBuf,
    pub(crate) version: String,
    /// When it started (RFC 3339) and by when (seconds since the epoch) the member must be
    /// healthy and caught up on it.
    pub(crate) since: String,
    pub(crate) deadline: u64,
    /// Going back to the release it ran before, after a failed attempt (the failure stays
    /// recorded once it is back).
    #[serde(default)]
    pub(crate) rollback: bool,
}

/// A new release that did not come up healthy in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailedUpgrade {
    pub(crate) bin: std::path::PathBuf,
    pub(crate) version: String,
    /// The binary's size and modification time when it failed: a replaced binary is tried
    /// again.
    pub(crate) stamp: String,
    pub(crate) reason: String,
    pub(crate) at: String,
}

/// A record as its value in etcd.
pub(crate) fn encode<T: Serialize>(record: &T) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// The record stored at `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, text: &str) -> anyhow::Result<T> {
    serde_json::from_str(text).with_context(|| format!("parse the record at {key}"))
}

/// The lineage stored at [`LINEAGE_KEY`].
pub(crate) fn parse_lineage(text: &str) -> anyhow::Result<Vec<ClusterId>> {
    let ids: Vec<String> = decode(LINEAGE_KEY, text)?;
    ids.iter()
        .map(|id| {
            u64::from_str_radix(id, 16)
                .map(ClusterId)
                .with_context(|| format!("parse {LINEAGE_KEY}: {id:?} is not a cluster id"))
        })
        .collect()
}

/// A lineage as its value at [`LINEAGE_KEY`].
pub(crate) fn format_lineage(lineage: &[ClusterId]) -> String {
    encode(&lineage.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// Now, as records write it.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_what_was_written_and_older_plan_records_still_read() {
        let intent = Intent {
            kind: "promote_learner".to_owned(),
            member: "m4".to_owned(),
            member_id: "a0".to_owned(),
            reason: "caught up".to_owned(),
            by: "m1".to_owned(),
            fencing_token: 7,
            state: IntentState::Started,
            at: "2026-11-30T05:00:00Z".to_owned(),
        };
        let text = encode(&intent);
        assert!(text.contains("\"state\":\"started\""), "{text}");
        assert_eq!(decode::<Intent>(INTENT_KEY, &text).unwrap(), intent);
        // Written before plan records carried conditions.
        let old = r#"{"by":"m1","fencing_token":3,"next":"converged","reason":"r","at":"2026-11-30T05:00:00Z"}"#;
        let plan: PlanRecord = decode(PLAN_KEY, old).unwrap();
        assert_eq!(plan.conditions, None);
        // Conditions of a kind this pilot does not know: the rest of the record still reads.
        let newer = r#"{"by":"m1","fencing_token":3,"next":"wait","reason":"r","at":"2026-11-30T05:00:00Z","conditions":[{"kind":"from_the_future"}]}"#;
        let plan: PlanRecord = decode(PLAN_KEY, newer).unwrap();
        assert_eq!((plan.next.as_str(), plan.conditions), ("wait", None));
        let lineage = [ClusterId(0xab), ClusterId(0x12)];
        assert_eq!(
            parse_lineage(&format_lineage(&lineage)).unwrap(),
            lineage.to_vec()
        );
        assert!(parse_lineage("[\"zz\"]").is_err());
    }
}
