//! A writer and a watcher for fault tests: the writer puts unique keys through every client
//! URL in turn and records which puts etcd acknowledged; the watcher asks every client URL for
//! its cluster id every 100 ms and records each answer that is not the cluster's.
//! At the end, [`Workload::finish`] stops both and checks that every acknowledged write is
//! readable through the cluster and that no client URL ever answered as another cluster.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::connect;

/// What the writer and the watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Keys whose put etcd acknowledged, with the endpoint that acknowledged it.
    pub acked: Vec<(String, String)>,
    /// Puts that failed or timed out (allowed: they were never acknowledged); for a
    /// [`Workload::start_retrying`] writer, those that failed on every endpoint.
    pub failed: usize,
    /// Puts a retrying writer got acknowledged only through another endpoint.
    pub retried: usize,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
    /// Status samples taken.
    pub samples: usize,
    /// Samples in which a client URL answered as another cluster: (endpoint, cluster id, when).
    pub foreign: Vec<(String, u64, Duration)>,
}

pub struct Workload {
    cancel: CancellationToken,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
    /// Written through in turn, watched, and read back at the end; [`Workload::watch`] adds.
    endpoints: Arc<Mutex<Vec<String>>>,
    cluster_id: u64,
    started: Instant,
}

impl Workload {
    /// Starts writing through `endpoints` (keys under `prefix`) and watching them, for the
    /// cluster `cluster_id`.
    pub fn start(endpoints: Vec<String>, cluster_id: u64, prefix: &str) -> Self {
        Self::start_with(endpoints, cluster_id, prefix, false)
    }

    /// [`Workload::start`], with a writer that retries a put that fails (or takes over 3 s)
    /// through the next endpoints, round after round for up to 10 s, before counting it
    /// failed, as a client given every member's URL does.
    pub fn start_retrying(endpoints: Vec<String>, cluster_id: u64, prefix: &str) -> Self {
        Self::start_with(endpoints, cluster_id, prefix, true)
    }

    fn start_with(endpoints: Vec<String>, cluster_id: u64, prefix: &str, retry: bool) -> Self {
        let cancel = CancellationToken::new();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let started = Instant::now();
        let shared = Arc::new(Mutex::new(endpoints.clone()));
        let writer = {
            let (cancel, seen, endpoints, prefix) = (
                cancel.clone(),
                seen.clone(),
                shared.clone(),
                prefix.to_owned(),
            );
            tokio::spawn(async move {
                let mut n: u64 = 0;
                let mut last_ack = Instant::now();
                while !cancel.is_cancelled() {
                    let all = endpoints.lock().unwrap().clone();
                    let key = format!("{prefix}/{n:08}");
                    // A retrying writer goes on through the next endpoints for up to 10 s
                    // (an election, a member restarting), as etcd's own client does.
                    let tries = if retry { all.len() * 20 } else { 1 };
                    let give_up = Instant::now() + Duration::from_secs(10);
                    let mut acked = None;
                    for k in 0..tries {
                        if k > 0 && Instant::now() > give_up {
                            break;
                        }
                        if k > 0 && k % all.len() == 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        let endpoint = all[(n as usize + k) % all.len()].clone();
                        let put = async {
                            let mut client = connect(std::slice::from_ref(&endpoint)).await?;
                            client.put(key.as_str(), endpoint.as_str(), None).await
                        };
                        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), put).await {
                            acked = Some((endpoint, k > 0));
                            break;
                        }
                    }
                    {
                        let mut seen = seen.lock().unwrap();
                        match acked {
                            Some((endpoint, retried)) => {
                                seen.longest_gap = seen.longest_gap.max(last_ack.elapsed());
                                last_ack = Instant::now();
                                seen.retried += usize::from(retried);
                                seen.acked.push((key, endpoint));
                            }
                            None => seen.failed += 1,
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let mut workload = Self {
            cancel,
            seen,
            tasks: vec![writer],
            endpoints: shared,
            cluster_id,
            started,
        };
        for endpoint in endpoints {
            workload.spawn_watcher(endpoint);
        }
        workload
    }

    /// Also writes through, watches and reads back `endpoint` (a member that joined).
    pub fn watch(&mut self, endpoint: String) {
        self.endpoints.lock().unwrap().push(endpoint.clone());
        self.spawn_watcher(endpoint);
    }

    fn spawn_watcher(&mut self, endpoint: String) {
        let (cancel, seen, cluster_id, started) = (
            self.cancel.clone(),
            self.seen.clone(),
            self.cluster_id,
            self.started,
        );
        self.tasks.push(tokio::spawn(async move {
            let mut client = None;
            while !cancel.is_cancelled() {
                if client.is_none() {
                    client = tokio::time::timeout(
                        Duration::from_millis(500),
                        connect(std::slice::from_ref(&endpoint)),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok);
                }
                if let Some(c) = client.as_mut() {
                    match tokio::time::timeout(Duration::from_millis(500), c.status()).await {
                        Ok(Ok(status)) => {
                            let id = status.header().map_or(0, |h| h.cluster_id());
                            let mut seen = seen.lock().unwrap();
                            seen.samples += 1;
                            if id != cluster_id {
                                seen.foreign.push((endpoint.clone(), id, started.elapsed()));
                            }
                        }
                        _ => client = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.seen.lock().unwrap().acked.len()
    }

    /// Stops writing and watching; checks every acknowledged key through the cluster (a
    /// linearizable read from the endpoints, one at a time) and that no endpoint ever answered
    /// as another cluster. Returns what was seen.
    pub async fn finish(self) -> Seen {
        self.cancel.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(
            seen.foreign.is_empty(),
            "client URLs answered as another cluster: {:?}",
            &seen.foreign[..seen.foreign.len().min(10)]
        );
        assert!(
            !seen.acked.is_empty(),
            "the writer got no write acknowledged"
        );
        // One range read per endpoint that answers; every acked key must be in the first
        // endpoint that answers (a linearizable read sees every acknowledged write).
        let prefix = seen.acked[0].0.rsplit_once('/').unwrap().0.to_owned() + "/";
        let mut found = None;
        let endpoints = self.endpoints.lock().unwrap().clone();
        for endpoint in &endpoints {
            let read = async {
                let mut client = connect(std::slice::from_ref(endpoint)).await?;
                client
                    .get(
                        prefix.as_str(),
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only(),
                        ),
                    )
                    .await
            };
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), read).await {
                found = Some(
                    response
                        .kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                        .collect::<std::collections::HashSet<String>>(),
                );
                break;
            }
        }
        let found = found.expect("no endpoint answered the final read");
        let lost: Vec<&(String, String)> = seen
            .acked
            .iter()
            .filter(|(key, _)| !found.contains(key))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes are lost, first: {:?}",
            lost.len(),
            seen.acked.len(),
            &lost[..lost.len().min(5)]
        );
        eprintln!(
            "workload: {} writes acknowledged ({} through another endpoint), {} failed, longest gap {:?}, {} status samples over {:?}, none foreign",
            seen.acked.len(),
            seen.retried,
            seen.failed,
            seen.longest_gap,
            seen.samples,
            self.started.elapsed()
        );
        seen
    }
}
