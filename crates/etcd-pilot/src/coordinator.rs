//! The coordinator role: taking it when the local member leads, keeping it alive, giving it
//! up, and the fenced writes only its holder may make (the plan record, the intent of a
//! membership change and its outcome).
//!
//! The role is held under a lease on [`COORDINATOR_KEY`]; the key's create revision is the
//! fencing token, and every write is a txn that compares it, so a deposed coordinator's writes
//! fail and it steps down. The role is published as a [`Role`] on a `watch` channel: the
//! tasks that act only on the coordinator (backups, the lifecycle hook) subscribe to it.
//! What to change is the core's (`plan`), and how to change it the reconciler's.

use std::time::Duration;

use etcd_pilot_core::{ClusterId, MemberName};
use tokio::sync::watch;

use crate::etcd::{ClientOptions, Created, Etcd, Lease};
use crate::metrics::Metrics;
use crate::records::{
    self, COORDINATOR_KEY, INTENT_KEY, Intent, IntentState, PLAN_KEY, PlanRecord,
};

/// This pilot's part in the cluster, as the tasks that act only on the coordinator see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Another pilot coordinates, or none does yet.
    Member,
    /// This pilot holds the role; its writes are fenced with this token.
    Coordinator { fencing_token: i64 },
}

impl Role {
    pub(crate) fn is_coordinator(self) -> bool {
        matches!(self, Role::Coordinator { .. })
    }
}

/// The role, while held.
struct Held {
    lease: Lease,
    token: i64,
    client: Etcd,
    /// When the plan record was last written, and what it said (without ages).
    last_record: Option<String>,
    /// The last write of the plan record failed (and was said).
    record_failing: bool,
}

/// A fenced write's outcome.
pub(crate) enum Fenced {
    Written,
    /// Another pilot holds the role now: this one has stepped down.
    Deposed,
    /// The write did not reach etcd.
    Failed(crate::etcd::Error),
}

/// Takes, keeps and gives up the role; makes the fenced writes.
pub(crate) struct Seat {
    name: MemberName,
    options: ClientOptions,
    lease_ttl: Duration,
    metrics: Metrics,
    held: Option<Held>,
    role: watch::Sender<Role>,
}

impl Seat {
    pub(crate) fn new(
        name: MemberName,
        options: ClientOptions,
        lease_ttl: Duration,
        metrics: Metrics,
        role: watch::Sender<Role>,
    ) -> Self {
        Self {
            name,
            options,
            lease_ttl,
            metrics,
            held: None,
            role,
        }
    }

    /// The fencing token and a client on the local member, while the role is held.
    pub(crate) fn held(&self) -> Option<(i64, Etcd)> {
        self.held.as_ref().map(|h| (h.token, h.client.clone()))
    }

    /// Keeps, takes or gives up the role, writing `record` (this step's plan) while it is
    /// held. The fence is checked first: a coordinator that was paused writes its record,
    /// finds it rejected, and steps down. `shape` is what the record says without its ages:
    /// the record is rewritten when it changes, and only then.
    pub(crate) async fn maintain(
        &mut self,
        leads: bool,
        cluster_id: ClusterId,
        local: &str,
        record: impl FnOnce(i64) -> PlanRecord,
        shape: String,
    ) {
        if let Some(held) = &mut self.held {
            // Rewritten only when what it says changes: an idle cluster's revision stays
            // still (the role's lease, renewed each step, is what says the writer is alive).
            let due = held.last_record.as_ref() != Some(&shape);
            let mut keep = true;
            if due {
                let text = records::encode(&record(held.token));
                match held
                    .client
                    .put_fenced(COORDINATOR_KEY, held.token, PLAN_KEY, &text)
                    .await
                {
                    Ok(true) => {
                        held.last_record = Some(shape);
                        held.record_failing = false;
                    }
                    Ok(false) => {
                        tracing::warn!(
                            fencing_token = held.token,
                            "fenced write rejected: another pilot holds the coordinator role now; stepping down"
                        );
                        keep = false;
                    }
                    // Said once while it keeps failing (under a NOSPACE alarm etcd refuses
                    // every put until the alarm is recovered).
                    Err(err) if held.record_failing => {
                        tracing::debug!("cannot write the plan record: {err:#}");
                    }
                    Err(err) => {
                        tracing::warn!(
                            "cannot write the plan record (said once until it succeeds): {err:#}"
                        );
                        held.record_failing = true;
                    }
                }
            }
            if keep && let Err(err) = held.lease.refresh().await {
                tracing::warn!("coordinator lease lost, stepping down: {err:#}");
                keep = false;
            }
            if keep && !leads {
                tracing::info!("the local member no longer leads; giving up the coordinator role");
                if let Err(err) = held.client.revoke_lease(held.lease.id).await {
                    tracing::debug!("cannot revoke the coordinator lease, it will expire: {err:#}");
                }
                keep = false;
            }
            if !keep {
                self.step_down();
            }
            return;
        }
        if !leads {
            return;
        }
        match self.acquire(local).await {
            Ok(Some(held)) => {
                tracing::info!(fencing_token = held.token, %cluster_id, "became the coordinator");
                self.metrics.coordinator.set(1);
                self.role.send_replace(Role::Coordinator {
                    fencing_token: held.token,
                });
                self.held = Some(held);
            }
            Ok(None) => {}
            Err(err) => tracing::debug!("cannot take the coordinator role: {err:#}"),
        }
    }

    async fn acquire(&self, local: &str) -> anyhow::Result<Option<Held>> {
        let client = Etcd::connect_one(local, &self.options).await?;
        let lease = client.grant_lease(self.lease_ttl).await?;
        match client
            .create_if_absent(COORDINATOR_KEY, self.name.as_str(), lease.id)
            .await?
        {
            Created::Created { revision } => {
                if let Ok(Some(text)) = client.get(INTENT_KEY).await
                    && let Ok(intent) = records::decode::<Intent>(INTENT_KEY, &text)
                    && intent.state == IntentState::Started
                {
                    tracing::warn!(
                        kind = %intent.kind,
                        member = %intent.member,
                        by = %intent.by,
                        "the previous coordinator left a change unfinished; planning afresh from the live cluster"
                    );
                }
                Ok(Some(Held {
                    lease,
                    token: revision,
                    client,
                    last_record: None,
                    record_failing: false,
                }))
            }
            Created::Exists { value, .. } => {
                tracing::debug!(holder = %value, "the coordinator role is held by another pilot");
                let _ = client.revoke_lease(lease.id).await;
                Ok(None)
            }
        }
    }

    /// Records `intent` under the fence; steps down when another pilot holds the role.
    pub(crate) async fn write_intent(&mut self, intent: &Intent) -> Fenced {
        self.put_fenced(INTENT_KEY, &records::encode(intent)).await
    }

    /// Puts `key` under the fence, only while its mod revision is still `read` (0: absent).
    /// `Ok(false)`: `key` changed since it was read (the caller reads it again). Steps down
    /// when another pilot holds the role.
    pub(crate) async fn put_fenced_unchanged(
        &mut self,
        key: &str,
        read: i64,
        value: &str,
    ) -> Result<bool, Fenced> {
        let Some(held) = &self.held else {
            return Err(Fenced::Deposed);
        };
        let client = held.client.clone();
        let token = held.token;
        match client
            .put_fenced_unchanged(COORDINATOR_KEY, token, key, read, value)
            .await
        {
            Ok(true) => Ok(true),
            // Either the fence or the key: the fence decides whether this pilot steps down.
            Ok(false) => match client.create_revision(COORDINATOR_KEY).await {
                Ok(revision) if revision == token => Ok(false),
                Ok(_) => {
                    self.step_down();
                    Err(Fenced::Deposed)
                }
                Err(err) => Err(Fenced::Failed(err)),
            },
            Err(err) => Err(Fenced::Failed(err)),
        }
    }

    /// Puts `key` under the fence; steps down when another pilot holds the role.
    pub(crate) async fn put_fenced(&mut self, key: &str, value: &str) -> Fenced {
        let Some(held) = &self.held else {
            return Fenced::Deposed;
        };
        match held
            .client
            .put_fenced(COORDINATOR_KEY, held.token, key, value)
            .await
        {
            Ok(true) => Fenced::Written,
            Ok(false) => {
                self.step_down();
                Fenced::Deposed
            }
            Err(err) => Fenced::Failed(err),
        }
    }

    fn step_down(&mut self) {
        self.held = None;
        self.metrics.coordinator.set(0);
        self.role.send_replace(Role::Member);
    }

    /// Gives up the role (at shutdown, or when etcd stops), so the next coordinator need not
    /// wait for the lease.
    pub(crate) async fn resign(&mut self) {
        // The tasks that act on the role stop first; the lease goes after.
        self.metrics.coordinator.set(0);
        self.role.send_replace(Role::Member);
        if let Some(held) = self.held.take() {
            let _ = held.client.revoke_lease(held.lease.id).await;
            tracing::info!("gave up the coordinator role");
        }
    }
}
