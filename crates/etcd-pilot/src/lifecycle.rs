//! The termination lifecycle hook, consumed on the coordinator.
//!
//! The autoscaling group holds a terminating instance in `Terminating:Wait` and posts a
//! message to an SQS queue. The coordinator's [`Consumer`] long-polls the queue, reads each
//! message (core `lifecycle::read`), and sends the instances it holds to the reconcile step
//! ([`Terminating`]), which marks their members terminating; the plan removes each as soon as
//! the quorum allows (leadership moved first). Once the member list no longer has it, the consumer calls
//! `CompleteLifecycleAction` (CONTINUE) and deletes the message; meanwhile it sends heartbeats
//! and keeps the message hidden. A pilot that loses the coordinator role makes its messages
//! visible again at once, so the next coordinator takes them over; a message that arrives
//! twice is the same termination, and completing one the group no longer waits on counts as
//! done. The queue may be shared: only messages of the pilot's own groups are taken or
//! deleted (core `lifecycle::disposition`); every other message is left for its owner, and
//! logged in one line, never whole. An action is completed only when no member entry, named
//! or not yet started, carries the instance's name or peer URL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_sdk_autoscaling::error::ProvideErrorMetadata as _;
use etcd_pilot_core::lifecycle::{self, Disposition, Message, Step, Termination};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws;
use crate::config::LifecycleConfig;
use crate::coordinator::Role;
use crate::etcd::{ClientOptions, Etcd};
use crate::state::PilotStatus;

/// The instances whose members must go now, as the reconcile step receives them (empty
/// without a hook).
pub(crate) type Terminating = watch::Receiver<BTreeSet<String>>;

/// How long one receive waits for a message (SQS long polling)...
const WAIT: Duration = Duration::from_secs(5);
/// ... and while terminations are held: their progress is checked after each receive.
const WAIT_HOLDING: Duration = Duration::from_secs(1);

/// A termination this coordinator holds.
struct Held {
    termination: Termination,
    /// Its messages (a duplicate is a second message): id -> the latest delivery's receipt.
    receipts: BTreeMap<String, String>,
    /// The last heartbeat (or the receipt).
    heartbeat: Instant,
    /// The instance's peer URL: `None` until EC2 answered; `Some(None)` when the instance
    /// has no address any more.
    peer_url: Option<Option<String>>,
    /// EC2 lookups of it that failed in a row.
    lookups_failed: u32,
}

/// The queue consumer of one pilot; acts only while the pilot is the coordinator.
pub(crate) struct Consumer {
    pub(crate) config: LifecycleConfig,
    /// This node's etcd: its member list says whether a member is gone.
    pub(crate) client_url: String,
    pub(crate) options: ClientOptions,
    pub(crate) status: watch::Sender<PilotStatus>,
    /// Sends the instances held, for the reconcile step.
    pub(crate) terminating: watch::Sender<BTreeSet<String>>,
    /// Messages are taken only while this pilot coordinates.
    pub(crate) role: watch::Receiver<Role>,
}

struct Clients {
    sqs: aws_sdk_sqs::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

impl Consumer {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let region = &self.config.region;
        // A receive waits up to WAIT on the server: its timeout must be longer.
        let sqs = aws::sdk_config(region, self.config.timeout + WAIT).await;
        let api = aws::sdk_config(region, self.config.timeout).await;
        let clients = Clients {
            sqs: aws_sdk_sqs::Client::new(&sqs),
            autoscaling: aws_sdk_autoscaling::Client::new(&api),
            ec2: aws_sdk_ec2::Client::new(&api),
        };
        tracing::info!(queue = %self.config.queue_url, %region, "consuming the termination lifecycle hook's queue on the coordinator");
        let mut held: BTreeMap<String, Held> = BTreeMap::new();
        // Messages left for their owners, logged once each (bounded).
        let mut left: BTreeSet<String> = BTreeSet::new();
        loop {
            let coordinator = self.role.borrow().is_coordinator();
            if !coordinator {
                if !held.is_empty() {
                    self.release(&clients, &mut held).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = cancel.cancelled() => break,
                }
            }
            // Cancel-safe: messages of a receive dropped midway reappear after their visibility
            // timeout, and the next coordinator takes them.
            tokio::select! {
                received = self.receive(&clients, if held.is_empty() { WAIT } else { WAIT_HOLDING }) => {
                    self.take(&clients, received, &mut held, &mut left).await;
                }
                () = cancel.cancelled() => break,
            }
            if !held.is_empty() {
                self.progress(&clients, &mut held).await;
            }
            self.publish(&held);
        }
        if !held.is_empty() {
            self.release(&clients, &mut held).await;
        }
    }

    async fn receive(
        &self,
        clients: &Clients,
        wait: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let visibility = (self.config.heartbeat_interval * 2).max(Duration::from_secs(30));
        clients
            .sqs
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(1))
            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(60))
            .send()
            .await
            .map(|out| out.messages().to_vec())
            .map_err(|err| crate::error::error_chain(&err))
    }

    async fn take(
        &self,
        clients: &Clients,
        received: Result<Vec<aws_sdk_sqs::types::Message>, String>,
        held: &mut BTreeMap<String, Held>,
        left: &mut BTreeSet<String>,
    ) {
        let messages = match received {
            Ok(messages) => messages,
            Err(err) => {
                self.error(format!(
                    "cannot receive from {}: {err}",
                    self.config.queue_url
                ));
                // Do not spin on a broken queue.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        for message in messages {
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            let message_id = message.message_id().unwrap_or(receipt).to_owned();
            let read = lifecycle::read(message.body().unwrap_or_default());
            match (lifecycle::disposition(&read, &self.config.groups), read) {
                (Disposition::Handle, Message::Terminating(termination)) => {
                    let id = termination.instance_id.clone();
                    match held.get_mut(&id) {
                        // A redelivery (or a second message) of the same termination.
                        Some(h) => {
                            h.receipts.insert(message_id, receipt.to_owned());
                            h.termination = termination;
                        }
                        None => {
                            tracing::info!(instance = %id, group = %termination.group, "instance terminating: removing its member before the termination continues");
                            held.insert(
                                id,
                                Held {
                                    termination,
                                    receipts: BTreeMap::from([(message_id, receipt.to_owned())]),
                                    heartbeat: Instant::now(),
                                    peer_url: None,
                                    lookups_failed: 0,
                                },
                            );
                        }
                    }
                }
                (Disposition::Delete, Message::Ignored { reason, .. }) => {
                    tracing::info!("lifecycle message deleted: {reason}");
                    self.delete(clients, receipt).await;
                }
                (_, other) => {
                    // A shared queue: not the pilot's to delete. It reappears after its
                    // visibility timeout; said once per message.
                    if left.len() > 1000 {
                        left.clear();
                    }
                    if left.insert(message_id.clone()) {
                        tracing::warn!(
                            message = %message_id,
                            "a queue message that is not for this pilot's groups ({}) is left for its owner: {}",
                            self.config.groups.join(","),
                            summary(&other)
                        );
                    }
                }
            }
        }
    }

    /// Completes the terminations whose member is gone; heartbeats the others.
    async fn progress(&self, clients: &Clients, held: &mut BTreeMap<String, Held>) {
        let members = match Etcd::connect_one(&self.client_url, &self.options).await {
            Ok(etcd) => etcd.member_list().await,
            Err(err) => Err(err),
        };
        let members = match members {
            Ok(list) => list.members,
            Err(err) => {
                self.error(format!("cannot list the members: {err:#}"));
                return;
            }
        };
        let mut done = Vec::new();
        for (id, h) in held.iter_mut() {
            if h.peer_url.is_none() {
                h.peer_url = self.peer_url(clients, id).await;
                if h.peer_url.is_none() {
                    h.lookups_failed += 1;
                    // EC2 keeps failing: go by the name alone rather than hold the
                    // termination until the hook times out.
                    if h.lookups_failed >= 30 {
                        tracing::warn!(instance = %id, "cannot learn the address of the terminating instance from EC2: an unstarted entry of it would go unseen; completing by its name alone");
                        h.peer_url = Some(None);
                    }
                }
            }
            let present = match &h.peer_url {
                Some(url) => lifecycle::member_present(&members, id, url.as_deref()),
                // Its peer URL is not known yet: an unstarted entry of it could be there.
                None => true,
            };
            let step = lifecycle::next_step(
                present,
                h.heartbeat.elapsed(),
                self.config.heartbeat_interval,
            );
            match step {
                Step::Wait => {}
                Step::Heartbeat => {
                    let t = &h.termination;
                    let result = clients
                        .autoscaling
                        .record_lifecycle_action_heartbeat()
                        .auto_scaling_group_name(&t.group)
                        .lifecycle_hook_name(&t.hook)
                        .lifecycle_action_token(&t.token)
                        .instance_id(&t.instance_id)
                        .send()
                        .await;
                    match result {
                        Ok(_) => {
                            tracing::info!(instance = %id, "member not removed yet: lifecycle heartbeat sent")
                        }
                        // The group no longer waits (completed elsewhere, timed out): nothing
                        // to hold any more.
                        Err(err) if err.code() == Some("ValidationError") => {
                            tracing::info!(instance = %id, "the group no longer waits on this termination: {}", crate::error::error_chain(&err));
                            done.push(id.clone());
                            continue;
                        }
                        Err(err) => self.error(format!(
                            "heartbeat for {id} failed: {}",
                            crate::error::error_chain(&err)
                        )),
                    }
                    let visibility =
                        (self.config.heartbeat_interval * 2).max(Duration::from_secs(30));
                    for receipt in h.receipts.values() {
                        if let Err(err) = clients
                            .sqs
                            .change_message_visibility()
                            .queue_url(&self.config.queue_url)
                            .receipt_handle(receipt)
                            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(60))
                            .send()
                            .await
                        {
                            tracing::debug!(
                                "cannot extend the message's visibility: {}",
                                crate::error::error_chain(&err)
                            );
                        }
                    }
                    h.heartbeat = Instant::now();
                }
                Step::Complete => {
                    let t = &h.termination;
                    let result = clients
                        .autoscaling
                        .complete_lifecycle_action()
                        .auto_scaling_group_name(&t.group)
                        .lifecycle_hook_name(&t.hook)
                        .lifecycle_action_token(&t.token)
                        .instance_id(&t.instance_id)
                        .lifecycle_action_result("CONTINUE")
                        .send()
                        .await;
                    let finished = match result {
                        Ok(_) => {
                            tracing::info!(instance = %id, "member removed: the termination continues (CompleteLifecycleAction CONTINUE)");
                            true
                        }
                        // The group no longer waits (completed before, or timed out).
                        Err(err) if err.code() == Some("ValidationError") => {
                            tracing::info!(instance = %id, "the group no longer waits on this termination: {}", crate::error::error_chain(&err));
                            true
                        }
                        Err(err) => {
                            self.error(format!(
                                "completing the termination of {id} failed, will retry: {}",
                                crate::error::error_chain(&err)
                            ));
                            false
                        }
                    };
                    if finished {
                        done.push(id.clone());
                    }
                }
            }
        }
        for id in done {
            if let Some(h) = held.remove(&id) {
                for receipt in h.receipts.values() {
                    self.delete(clients, receipt).await;
                }
                self.status.send_modify(|s| {
                    s.lifecycle.last_completed = Some(format!(
                        "{id} at {}",
                        humantime::format_rfc3339_seconds(SystemTime::now())
                    ));
                    s.lifecycle.last_error = None;
                });
            }
        }
    }

    /// The peer URL of instance `id` as discovery would address it: `Some(None)` when EC2
    /// knows no address for it (gone), `None` when EC2 did not answer (asked again later).
    async fn peer_url(&self, clients: &Clients, id: &str) -> Option<Option<String>> {
        let result = clients
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await;
        match result {
            Ok(out) => Some(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .find_map(|i| crate::discovery::aws::instance_address(i, self.config.address))
                    .map(|host| format!("http://{host}:{}", self.config.peer_port)),
            ),
            Err(err) if err.code() == Some("InvalidInstanceID.NotFound") => Some(None),
            Err(err) => {
                self.error(format!(
                    "cannot find the address of terminating instance {id}: {}",
                    crate::error::error_chain(&err)
                ));
                None
            }
        }
    }

    /// Gives the held messages back to the queue at once (this pilot stopped coordinating).
    async fn release(&self, clients: &Clients, held: &mut BTreeMap<String, Held>) {
        for (id, h) in std::mem::take(held) {
            tracing::info!(instance = %id, "no longer the coordinator: handing the termination back to the queue");
            for receipt in h.receipts.values() {
                let _ = clients
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.config.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
        self.publish(held);
    }

    async fn delete(&self, clients: &Clients, receipt: &str) {
        if let Err(err) = clients
            .sqs
            .delete_message()
            .queue_url(&self.config.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            // It comes back after its visibility timeout and is handled again (idempotent).
            tracing::warn!(
                "cannot delete a lifecycle message: {}",
                crate::error::error_chain(&err)
            );
        }
    }

    fn publish(&self, held: &BTreeMap<String, Held>) {
        let names: BTreeSet<String> = held.keys().cloned().collect();
        self.terminating.send_replace(names.clone());
        self.status.send_if_modified(|s| {
            let pending: Vec<String> = names.into_iter().collect();
            let changed = s.lifecycle.pending != pending;
            s.lifecycle.pending = pending;
            changed
        });
    }

    fn error(&self, message: String) {
        tracing::warn!("{message}");
        self.status
            .send_modify(|s| s.lifecycle.last_error = Some(message));
    }
}

/// One line about a message the pilot leaves alone: what it is, never its body.
fn summary(message: &Message) -> String {
    match message {
        Message::Terminating(t) => format!(
            "a termination of instance {} in group {}",
            t.instance_id, t.group
        ),
        Message::Ignored { group, reason, .. } => {
            format!("group {}: {reason}", group.as_deref().unwrap_or("(none)"))
        }
        Message::Malformed { problem } => format!("not a lifecycle message ({problem})"),
    }
}
