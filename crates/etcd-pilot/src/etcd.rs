//! The only module that speaks the etcd API.
//!
//! Wraps `etcd-client` so that every call has a timeout, answers in the core's vocabulary
//! (`MemberId`, `Member`, ...) and fails with an [`Error`] that says whether to retry.
//! It does not decide anything; callers pass what they learn to the core.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    MemberAddOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use etcd_pilot_core::{ClusterId, Health, Member, MemberId, MemberName};
use serde::Serialize;

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No answer within the timeout. Retryable; proves nothing about the member.
    #[error("{op}: no answer within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    /// The call reached etcd, or tried to, and failed (unavailable, refused, rejected).
    #[error("{op} failed")]
    Call {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    /// Nothing accepts connections at the endpoint (refused, or no answer to the TCP handshake).
    /// Found in milliseconds, where a gRPC call would wait for its whole timeout.
    #[error("cannot connect to {endpoint}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// The endpoint answered, but as another member or another cluster than the member list
    /// it was asked for says: an etcd that bootstrapped a cluster of its own, or a URL that now
    /// belongs to someone else. Never healthy; shown as such.
    #[error(
        "{endpoint} answers as member {member_id} of cluster {cluster_id}, not as member {expected_member} of cluster {expected_cluster}"
    )]
    WrongIdentity {
        endpoint: String,
        cluster_id: ClusterId,
        member_id: MemberId,
        expected_cluster: ClusterId,
        expected_member: MemberId,
    },
    /// etcd answered with something we cannot use (such as a response without a header).
    #[error("{op}: unexpected answer: {what}")]
    Unexpected {
        op: &'static str,
        what: &'static str,
    },
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach etcd: the timeout of every call, and credentials if auth is on.
#[derive(Clone, Debug)]
pub(crate) struct ClientOptions {
    pub(crate) timeout: Duration,
    pub(crate) credentials: Option<(String, String)>,
}

/// A connection to one or more etcd endpoints.
#[derive(Clone)]
pub(crate) struct Etcd {
    client: Client,
    timeout: Duration,
}

/// One member's view of itself and the cluster, from its Status API.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EndpointStatus {
    pub(crate) cluster_id: ClusterId,
    pub(crate) member_id: MemberId,
    /// The leader this member follows; `None` if it has none.
    pub(crate) leader: Option<MemberId>,
    pub(crate) raft_term: u64,
    pub(crate) raft_index: u64,
    pub(crate) raft_applied_index: u64,
    pub(crate) revision: i64,
    pub(crate) db_size: i64,
    /// The part of the file holding live data (`dbSize - dbSizeInUse` is what a defrag
    /// would give back).
    pub(crate) db_size_in_use: i64,
    pub(crate) version: String,
    pub(crate) is_learner: bool,
    pub(crate) errors: Vec<String>,
}

impl EndpointStatus {
    /// Healthy: it follows a leader and reports no errors (such as an alarm).
    pub(crate) fn health(&self) -> Health {
        if self.leader.is_some() && self.errors.is_empty() {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    }
}

/// The member list and the id of the cluster that answered.
#[derive(Clone, Debug)]
pub(crate) struct MemberList {
    pub(crate) cluster_id: ClusterId,
    pub(crate) members: Vec<Member>,
}

async fn with_timeout<T>(
    op: &'static str,
    timeout: Duration,
    call: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Call { op, source }),
        Err(_) => Err(Error::Timeout { op, timeout }),
    }
}

/// Whether etcd refused to authenticate because it cannot (a learner) or need not (auth off).
fn needs_no_credentials(err: &etcd_client::Error) -> bool {
    let text = err.to_string();
    text.contains("rpc not supported for learner") || text.contains("authentication is not enabled")
}

fn member_from(member: &etcd_client::Member) -> Member {
    Member {
        id: MemberId(member.id()),
        name: MemberName::new(member.name()).ok(),
        peer_urls: member.peer_urls().to_vec(),
        client_urls: member.client_urls().to_vec(),
        is_learner: member.is_learner(),
    }
}

impl Etcd {
    /// Connects to `endpoints` (client URLs). Connecting is lazy: errors surface on the first call.
    pub(crate) async fn connect(endpoints: &[String], options: &ClientOptions) -> Result<Self> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_timeout(options.timeout);
        let plain = connect.clone();
        if let Some((user, password)) = &options.credentials {
            // A token is known only to the members that applied its Authenticate: one that
            // joined later (or a token that expired) answers "invalid auth token"; then the
            // client authenticates again and retries once.
            connect = connect
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        let connected = with_timeout(
            "connect",
            options.timeout,
            Client::connect(endpoints, Some(connect)),
        )
        .await;
        let client = match connected {
            // A learner refuses to authenticate, and an etcd without auth refuses too: both
            // still answer what needs no credentials (status, member list), so ask that.
            Err(Error::Call { source, .. })
                if options.credentials.is_some() && needs_no_credentials(&source) =>
            {
                if source.to_string().contains("authentication is not enabled") {
                    tracing::warn!(
                        endpoints = ?endpoints,
                        "etcd.username is set but etcd has auth off: connecting without credentials (turn auth on, or unset etcd.username)"
                    );
                }
                with_timeout(
                    "connect",
                    options.timeout,
                    Client::connect(endpoints, Some(plain)),
                )
                .await?
            }
            other => other?,
        };
        Ok(Self {
            client,
            timeout: options.timeout,
        })
    }

    /// Connects to a single endpoint, for calls that must reach one member (status, move leader).
    /// Checks first that the endpoint accepts TCP connections: a member that is down is then
    /// known at once instead of after the call timeout.
    pub(crate) async fn connect_one(endpoint: &str, options: &ClientOptions) -> Result<Self> {
        let address = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let unreachable = |source| Error::Unreachable {
            endpoint: endpoint.to_owned(),
            source,
        };
        match tokio::time::timeout(options.timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(unreachable(err)),
            Err(_) => return Err(unreachable(std::io::ErrorKind::TimedOut.into())),
        }
        Self::connect(&[endpoint.to_owned()], options).await
    }

    pub(crate) async fn member_list(&self) -> Result<MemberList> {
        let mut client = self.client.clone();
        let response = with_timeout("member list", self.timeout, client.member_list()).await?;
        let header = response.header().ok_or(Error::Unexpected {
            op: "member list",
            what: "no response header",
        })?;
        Ok(MemberList {
            cluster_id: ClusterId(header.cluster_id()),
            members: response.members().iter().map(member_from).collect(),
        })
    }

    /// Status of the member this client is connected to (use [`Etcd::connect_one`]).
    pub(crate) async fn status(&self) -> Result<EndpointStatus> {
        let mut client = self.client.clone();
        let response = with_timeout("status", self.timeout, client.status()).await?;
        let header = response.header().ok_or(Error::Unexpected {
            op: "status",
            what: "no response header",
        })?;
        Ok(EndpointStatus {
            cluster_id: ClusterId(header.cluster_id()),
            member_id: MemberId(header.member_id()),
            leader: (response.leader() != 0).then(|| MemberId(response.leader())),
            raft_term: response.raft_term(),
            raft_index: response.raft_index(),
            raft_applied_index: response.raft_applied_index(),
            revision: header.revision(),
            db_size: response.db_size(),
            db_size_in_use: response.raft_used_db_size(),
            version: response.version().to_owned(),
            is_learner: response.is_learner(),
            errors: response.errors().to_vec(),
        })
    }

    /// Adds a learner with `peer_url`; returns its id.
    pub(crate) async fn add_learner(&self, peer_url: &str) -> Result<MemberId> {
        let mut client = self.client.clone();
        let response = with_timeout(
            "member add",
            self.timeout,
            client.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())),
        )
        .await?;
        let member = response.member().ok_or(Error::Unexpected {
            op: "member add",
            what: "no member in the response",
        })?;
        Ok(MemberId(member.id()))
    }

    pub(crate) async fn remove_member(&self, id: MemberId) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("member remove", self.timeout, client.member_remove(id.0)).await?;
        Ok(())
    }

    pub(crate) async fn promote_member(&self, id: MemberId) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("member promote", self.timeout, client.member_promote(id.0)).await?;
        Ok(())
    }

    /// Moves leadership to `target`. Must be sent to the current leader.
    pub(crate) async fn move_leader(&self, target: MemberId) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("move leader", self.timeout, client.move_leader(target.0)).await?;
        Ok(())
    }

    pub(crate) async fn put(&self, key: &str, value: &str) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("put", self.timeout, client.put(key, value, None)).await?;
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get_versioned(key).await?.0)
    }

    /// Compacts the history below `revision`. `Ok(false)`: it was compacted that far already.
    pub(crate) async fn compact(&self, revision: i64) -> Result<bool> {
        let mut client = self.client.clone();
        match with_timeout("compact", self.timeout, client.compact(revision, None)).await {
            Ok(_) => Ok(true),
            Err(Error::Call { source, .. })
                if source
                    .to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Defragments the member this client is connected to (use [`Etcd::connect_one`]),
    /// waiting at most `timeout`: the member serves nothing else meanwhile.
    pub(crate) async fn defragment(&self, timeout: Duration) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("defragment", timeout, client.defragment()).await?;
        Ok(())
    }

    /// The raised alarms: (member, kind), kind as etcd names it (`NOSPACE`, `CORRUPT`).
    pub(crate) async fn alarms(&self) -> Result<Vec<(MemberId, String)>> {
        let mut client = self.client.clone();
        let response = with_timeout(
            "alarm list",
            self.timeout,
            client.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            ),
        )
        .await?;
        Ok(response
            .alarms()
            .iter()
            .map(|a| (MemberId(a.member_id()), a.alarm().as_str_name().to_owned()))
            .collect())
    }

    /// Disarms the NOSPACE alarm raised for `member`.
    pub(crate) async fn disarm_nospace(&self, member: MemberId) -> Result<()> {
        let mut client = self.client.clone();
        let mut options = etcd_client::AlarmOptions::new();
        options.with_member(member.0);
        with_timeout(
            "alarm disarm",
            self.timeout,
            client.alarm(
                etcd_client::AlarmAction::Deactivate,
                etcd_client::AlarmType::Nospace,
                Some(options),
            ),
        )
        .await?;
        Ok(())
    }

    /// The create revision of `key` (0 when absent): a fencing token.
    pub(crate) async fn create_revision(&self, key: &str) -> Result<i64> {
        let mut client = self.client.clone();
        let response =
            with_timeout("get", self.timeout, client.get(key, None::<GetOptions>)).await?;
        Ok(response
            .kvs()
            .first()
            .map_or(0, etcd_client::KeyValue::create_revision))
    }

    /// The value of `key` and its mod revision (0 when absent), for a write that must find
    /// it unchanged ([`Etcd::put_fenced_unchanged`]).
    pub(crate) async fn get_versioned(&self, key: &str) -> Result<(Option<String>, i64)> {
        let mut client = self.client.clone();
        let response =
            with_timeout("get", self.timeout, client.get(key, None::<GetOptions>)).await?;
        Ok(response.kvs().first().map_or((None, 0), |kv| {
            (
                Some(String::from_utf8_lossy(kv.value()).into_owned()),
                kv.mod_revision(),
            )
        }))
    }
}

impl Etcd {
    /// The lease that keeps `key` alive, as (seconds left, seconds granted); `None` when the
    /// key is absent or has no lease.
    pub(crate) async fn key_lease(&self, key: &str) -> Result<Option<(i64, i64)>> {
        let mut client = self.client.clone();
        let response =
            with_timeout("get", self.timeout, client.get(key, None::<GetOptions>)).await?;
        let Some(lease) = response.kvs().first().map(etcd_client::KeyValue::lease) else {
            return Ok(None);
        };
        if lease == 0 {
            return Ok(None);
        }
        let ttl = with_timeout(
            "lease time to live",
            self.timeout,
            client.lease_time_to_live(lease, None),
        )
        .await?;
        Ok((ttl.ttl() >= 0).then(|| (ttl.ttl(), ttl.granted_ttl())))
    }
}

/// The consistent hash of the key space at a revision, as `HashKV` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvHash {
    pub(crate) hash: u32,
    pub(crate) compact_revision: i64,
}

/// A snapshot streaming from one member. Each chunk must arrive within the call timeout.
pub(crate) struct SnapshotStream {
    inner: etcd_client::SnapshotStreaming,
    timeout: Duration,
}

impl SnapshotStream {
    /// The next chunk of the database, or `None` at its end.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let message = with_timeout("snapshot", self.timeout, self.inner.message()).await?;
        Ok(message.map(|m| bytes::Bytes::copy_from_slice(m.blob())))
    }
}

impl Etcd {
    /// Starts streaming a snapshot of the member's database (the last 32 bytes are etcd's own
    /// sha256 of the rest, which `snapshot restore` checks).
    pub(crate) async fn snapshot(&self) -> Result<SnapshotStream> {
        let mut client = self.client.clone();
        let inner = with_timeout("snapshot", self.timeout, client.snapshot()).await?;
        Ok(SnapshotStream {
            inner,
            timeout: self.timeout,
        })
    }

    /// `HashKV` at `revision` on the member this client is connected to.
    pub(crate) async fn hash_kv(&self, revision: i64) -> Result<KvHash> {
        let mut client = self.client.clone();
        let response = with_timeout("hash_kv", self.timeout, client.hash_kv(revision)).await?;
        Ok(KvHash {
            hash: response.hash(),
            compact_revision: response.compact_version(),
        })
    }

    /// The number of keys at `revision`.
    pub(crate) async fn count_keys(&self, revision: i64) -> Result<i64> {
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_all_keys()
            .with_count_only()
            .with_revision(revision)
            .with_serializable();
        let response =
            with_timeout("count keys", self.timeout, client.get("", Some(options))).await?;
        Ok(response.count())
    }
}

/// A lease kept alive on demand (one keep-alive per [`Lease::refresh`]).
pub(crate) struct Lease {
    pub(crate) id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    timeout: Duration,
}

impl Lease {
    /// Sends one keep-alive; fails if the lease has expired or etcd does not answer.
    pub(crate) async fn refresh(&mut self) -> Result<()> {
        let op = "lease keep-alive";
        let answer = with_timeout(op, self.timeout, async {
            self.keeper.keep_alive().await?;
            self.stream.message().await
        })
        .await?;
        match answer {
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => Err(Error::Unexpected {
                op,
                what: "the lease has expired",
            }),
        }
    }
}

/// The outcome of [`Etcd::create_if_absent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// We created the key, at this revision (its create revision: the fencing token).
    Created { revision: i64 },
    /// The key exists: its value and create revision.
    Exists { value: String, revision: i64 },
}

impl Etcd {
    pub(crate) async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let mut client = self.client.clone();
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted = with_timeout(
            "lease grant",
            self.timeout,
            client.lease_grant(ttl_secs, None),
        )
        .await?;
        let (keeper, stream) = with_timeout(
            "lease keep-alive",
            self.timeout,
            client.lease_keep_alive(granted.id()),
        )
        .await?;
        Ok(Lease {
            id: granted.id(),
            keeper,
            stream,
            timeout: self.timeout,
        })
    }

    pub(crate) async fn revoke_lease(&self, id: i64) -> Result<()> {
        let mut client = self.client.clone();
        with_timeout("lease revoke", self.timeout, client.lease_revoke(id)).await?;
        Ok(())
    }

    /// Creates `key` bound to `lease` unless it exists (one txn).
    pub(crate) async fn create_if_absent(
        &self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<Created> {
        let mut client = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = with_timeout("create if absent", self.timeout, client.txn(txn)).await?;
        if response.succeeded() {
            let revision = response
                .header()
                .map(|h| h.revision())
                .ok_or(Error::Unexpected {
                    op: "create if absent",
                    what: "no response header",
                })?;
            return Ok(Created::Created { revision });
        }
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(Created::Exists {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    revision: kv.create_revision(),
                });
            }
        }
        // Deleted between the compare and the get (its lease expired): report it as free.
        Ok(Created::Exists {
            value: String::new(),
            revision: 0,
        })
    }

    /// [`Etcd::put_fenced`], and only while `key`'s mod revision is still `read` (0: absent):
    /// `false` when the fence rejects it or `key` changed since it was read.
    pub(crate) async fn put_fenced_unchanged(
        &self,
        fence_key: &str,
        token: i64,
        key: &str,
        read: i64,
        value: &str,
    ) -> Result<bool> {
        let mut client = self.client.clone();
        let txn = Txn::new()
            .when([
                Compare::create_revision(fence_key, CompareOp::Equal, token),
                Compare::mod_revision(key, CompareOp::Equal, read),
            ])
            .and_then([TxnOp::put(key, value, None)]);
        let response = with_timeout("fenced put", self.timeout, client.txn(txn)).await?;
        Ok(response.succeeded())
    }

    /// Puts `key` only while `fence_key` still has create revision `token`; `false` when the
    /// fence rejects the write (another coordinator holds the key now, or nobody does).
    pub(crate) async fn put_fenced(
        &self,
        fence_key: &str,
        token: i64,
        key: &str,
        value: &str,
    ) -> Result<bool> {
        let mut client = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(fence_key, CompareOp::Equal, token)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = with_timeout("fenced put", self.timeout, client.txn(txn)).await?;
        Ok(response.succeeded())
    }
}

/// Asks one member for its status; the caller's view of its health.
pub(crate) async fn probe(endpoint: &str, options: &ClientOptions) -> Result<EndpointStatus> {
    Etcd::connect_one(endpoint, options).await?.status().await
}

/// Connections kept per endpoint, so a loop that asks every member each second does not
/// reconnect each time. A connection is dropped after a failed call and made again on the
/// next one. The lock is never held across an await.
#[derive(Clone)]
pub(crate) struct Pool {
    options: ClientOptions,
    clients: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Etcd>>>,
}

impl Pool {
    pub(crate) fn new(options: ClientOptions) -> Self {
        Self {
            options,
            clients: std::sync::Arc::default(),
        }
    }

    fn cached(&self, endpoint: &str) -> Option<Etcd> {
        self.clients.lock().ok()?.get(endpoint).cloned()
    }

    fn forget(&self, endpoint: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(endpoint);
        }
    }

    /// A client for `endpoint`, connected on first use.
    pub(crate) async fn client(&self, endpoint: &str) -> Result<Etcd> {
        if let Some(client) = self.cached(endpoint) {
            return Ok(client);
        }
        let client = Etcd::connect_one(endpoint, &self.options).await?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(endpoint.to_owned(), client.clone());
        }
        Ok(client)
    }

    /// Runs `call` on `endpoint`'s client; forgets the connection if it fails.
    async fn with<T, F, Fut>(&self, endpoint: &str, call: F) -> Result<T>
    where
        F: FnOnce(Etcd) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let result = call(self.client(endpoint).await?).await;
        if result.is_err() {
            self.forget(endpoint);
        }
        result
    }

    /// The value of `key`, read through `endpoint`.
    pub(crate) async fn get(&self, endpoint: &str, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.with(endpoint, |client| async move { client.get(&key).await })
            .await
    }

    pub(crate) async fn status(&self, endpoint: &str) -> Result<EndpointStatus> {
        self.with(endpoint, |client| async move { client.status().await })
            .await
    }

    /// The member list of the cluster most of `endpoints` answer for; `None` if none answers.
    ///
    /// Every endpoint is asked (concurrently, each call under the timeout), not just the
    /// first to answer: an etcd that bootstrapped a one-member cluster of its own answers as
    /// fast as a real member, and taking its list for the cluster's would make a starting
    /// node quarantine good data, or `status` present the wrong cluster. The cluster reported
    /// by the most endpoints wins; a tie goes to the larger member list.
    pub(crate) async fn agreed_member_list(&self, endpoints: &[String]) -> Option<MemberList> {
        let mut set = tokio::task::JoinSet::new();
        for endpoint in endpoints {
            let (pool, endpoint) = (self.clone(), endpoint.clone());
            set.spawn(async move {
                pool.with(
                    &endpoint,
                    |client| async move { client.member_list().await },
                )
                .await
            });
        }
        let lists: Vec<MemberList> = set
            .join_all()
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let votes = |id: ClusterId| lists.iter().filter(|l| l.cluster_id == id).count();
        lists
            .iter()
            .max_by_key(|list| (votes(list.cluster_id), list.members.len()))
            .cloned()
    }

    /// The cluster id each of `endpoints` that answers reports, with the endpoint.
    pub(crate) async fn cluster_ids(&self, endpoints: &[String]) -> Vec<(String, ClusterId)> {
        let mut set = tokio::task::JoinSet::new();
        for endpoint in endpoints {
            let (pool, endpoint) = (self.clone(), endpoint.clone());
            set.spawn(async move {
                let status = pool.status(&endpoint).await.ok()?;
                Some((endpoint, status.cluster_id))
            });
        }
        let mut answers: Vec<(String, ClusterId)> =
            set.join_all().await.into_iter().flatten().collect();
        answers.sort();
        answers
    }

    /// The member list as the leader reports it, with every member's status (in list order).
    /// `None` when no member answers or none reports a leader.
    ///
    /// Decisions that drop something (quarantining data of a member "removed", stopping an
    /// etcd whose member is "gone") must not rest on a lagging member's view, so they use this
    /// instead of any answer.
    pub(crate) async fn leader_member_list(
        &self,
        endpoints: &[String],
    ) -> Option<(MemberList, Vec<Result<EndpointStatus>>)> {
        let first = self.agreed_member_list(endpoints).await?;
        let probes = self.probe_members(&first).await;
        let leader = probes.iter().flatten().find_map(|s| s.leader)?;
        let url = first
            .members
            .iter()
            .find(|m| m.id == leader)?
            .client_urls
            .first()?
            .clone();
        let list = self
            .with(&url, |client| async move { client.member_list().await })
            .await
            .ok()?;
        let same = list
            .members
            .iter()
            .map(|m| m.id)
            .eq(first.members.iter().map(|m| m.id));
        let probes = if same {
            probes
        } else {
            self.probe_members(&list).await
        };
        Some((list, probes))
    }

    /// Probes every member of `list` that has a client URL, concurrently; results in
    /// member-list order. A member that answers as another member or cluster than the list
    /// says is [`Error::WrongIdentity`], never a status.
    pub(crate) async fn probe_members(&self, list: &MemberList) -> Vec<Result<EndpointStatus>> {
        let mut set = tokio::task::JoinSet::new();
        for (index, member) in list.members.iter().enumerate() {
            let (pool, endpoint) = (self.clone(), member.client_urls.first().cloned());
            let (expected_cluster, expected_member) = (list.cluster_id, member.id);
            set.spawn(async move {
                let result = match endpoint {
                    Some(endpoint) => match pool.status(&endpoint).await {
                        Ok(status)
                            if (status.cluster_id, status.member_id)
                                != (expected_cluster, expected_member) =>
                        {
                            Err(Error::WrongIdentity {
                                endpoint,
                                cluster_id: status.cluster_id,
                                member_id: status.member_id,
                                expected_cluster,
                                expected_member,
                            })
                        }
                        other => other,
                    },
                    None => Err(Error::Unexpected {
                        op: "status",
                        what: "the member has not started (no client URL)",
                    }),
                };
                (index, result)
            });
        }
        let mut results: Vec<(usize, Result<EndpointStatus>)> = set.join_all().await;
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, result)| result).collect()
    }
}
