//! The backup store: an object store (`file://`, `s3://`, `gs://`, `az://`) holding, under
//! `<url path>/<cluster_name>/`:
//!
//! - `backups/<id>/snapshot.db.zst`: the zstd-compressed snapshot, uploaded in parts;
//! - `backups/<id>/manifest.json`: written **last**, so a backup without one is not a backup
//!   (a pilot killed mid-upload leaves only parts, which listing ignores);
//! - `cluster.json`: the lineage of the cluster writing here (a cluster existed);
//! - `restores/<lost cluster id>/<generation>.json`: a claim of the one pilot that restores
//!   after that cluster was lost, created with `If-None-Match: *` so only one pilot can create
//!   each generation; `<generation>.state.json` beside it: the holder's heartbeat and, once
//!   the data is in place (or an operator released it), how the claim ended. The
//!   choice of the next step is the core's (`backup::claim_step`).
//!
//! Every request has a timeout and a bounded retry. This module moves bytes and documents;
//! it does not decide which backup to restore (core `backup`) or how to take one (`take.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{StoreConfig, StoreUrl};
use anyhow::Context as _;
use etcd_pilot_core::ClusterId;
use etcd_pilot_core::backup::{BackupSummary, Verification};
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};

/// The manifest format written by this version.
pub(crate) const MANIFEST_FORMAT: u32 = 1;

/// Everything known about one backup; `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    pub(crate) id: String,
    pub(crate) cluster_name: String,
    #[serde(with = "hex_id")]
    pub(crate) cluster_id: ClusterId,
    /// The member whose database was streamed.
    pub(crate) member: String,
    /// A revision the snapshot holds: the member's revision when the snapshot began.
    pub(crate) revision: i64,
    pub(crate) raft_index: u64,
    pub(crate) etcd_version: String,
    /// Bytes of the snapshot as etcd streamed them (what a restore writes).
    pub(crate) db_size: u64,
    /// Bytes of the compressed object.
    pub(crate) compressed_size: u64,
    /// sha256 of the snapshot bytes.
    pub(crate) sha256: String,
    /// sha256 of the compressed object, checked before decompressing.
    pub(crate) object_sha256: String,
    /// Keys at `revision`, and `HashKV` at `revision`, on the streamed member.
    pub(crate) key_count: i64,
    pub(crate) hash_kv: u32,
    pub(crate) compact_revision: i64,
    /// Creation time, RFC 3339 and Unix milliseconds.
    pub(crate) created: String,
    pub(crate) created_unix_ms: u64,
    pub(crate) duration_ms: u64,
    pub(crate) pilot_version: String,
    pub(crate) compression: String,
    /// What the last restore drill said.
    pub(crate) verification: Verification,
    /// When the last drill ran, RFC 3339.
    #[serde(default)]
    pub(crate) verified_at: Option<String>,
    /// Why it was taken when not on schedule nor by hand: `reseed` for the seed's data right
    /// before a reseed after quorum loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) taken_for: Option<String>,
}

impl Manifest {
    pub(crate) fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_unix_ms)
    }

    pub(crate) fn summary(&self) -> BackupSummary {
        BackupSummary {
            id: self.id.clone(),
            cluster_id: self.cluster_id,
            created: self.created_at(),
            revision: self.revision,
            verification: self.verification.clone(),
        }
    }
}

/// `cluster.json`: the clusters whose backups this store may restore, oldest first; the
/// last is the cluster writing here now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ClusterRecord {
    #[serde(with = "hex_ids")]
    pub(crate) lineage: Vec<ClusterId>,
    pub(crate) updated: String,
}

impl ClusterRecord {
    pub(crate) fn current(&self) -> Option<ClusterId> {
        self.lineage.last().copied()
    }
}

/// Which claims: `restores/<lost cluster>/` (who restores after total loss) or
/// `reseeds/<cluster>/` (who reseeds after quorum loss). Both are numbered generations made
/// by conditional creates: of two pilots creating the same generation, one wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimKind {
    Restore,
    Reseed,
}

impl ClaimKind {
    fn folder(self) -> &'static str {
        match self {
            ClaimKind::Restore => "restores",
            ClaimKind::Reseed => "reseeds",
        }
    }
}

/// `restores/<lost>/<generation>.json`: who restores after that cluster was lost, from which
/// backup; or `reseeds/<cluster>/<generation>.json`: who reseeds that cluster, and from which
/// raft index (in `backup`). Never changed once created.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RestoreClaim {
    /// The holder's node name.
    pub(crate) holder: String,
    /// The holder itself: its name and a nonce of its process (a restarted pilot, or the
    /// operator's `restore` on that node, is another holder).
    #[serde(default)]
    pub(crate) holder_id: String,
    /// The holder pilot's admin URL: `restore --release-claim` checks it does not answer.
    pub(crate) admin_url: String,
    pub(crate) backup: String,
    pub(crate) at: String,
    /// How often the holder heartbeats: a taker waits at least a few of these, whatever its
    /// own `restore.claim_timeout`.
    #[serde(default)]
    pub(crate) heartbeat_every_ms: u64,
}

/// How a claim ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ended {
    /// The data is in place on the holder: that loss is over.
    Restored,
    /// The reseed is done and recorded in etcd: that quorum loss is over.
    Reseeded,
    /// An operator released it, its holder gone.
    Released,
}

/// `restores/<lost>/<generation>.state.json`: written by the holder only (and by an operator
/// releasing the claim).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ClaimState {
    /// A counter the holder bumps every heartbeat: observers time how long it stands still on
    /// their own clocks.
    pub(crate) heartbeat: u64,
    pub(crate) heartbeat_at: String,
    /// Set when the claim holds nothing any more, with who ended it.
    #[serde(default)]
    pub(crate) ended: Option<Ended>,
    #[serde(default)]
    pub(crate) ended_by: Option<String>,
}

/// The newest claim of one loss.
#[derive(Clone, Debug)]
pub(crate) struct LatestClaim {
    pub(crate) generation: u64,
    pub(crate) claim: RestoreClaim,
    pub(crate) state: ClaimState,
}

/// A backup store for one cluster name.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    inner: Arc<dyn ObjectStore>,
    /// `inner` for downloads, in 1 MiB chunks (a local file otherwise streams in 8 KiB
    /// pieces, each a blocking-pool round trip).
    chunked: Arc<dyn ObjectStore>,
    /// `<url path>/<cluster_name>`.
    root: Path,
    /// The URL, for messages.
    url: String,
}

/// Bytes per uploaded part (S3 wants at least 5 MiB for all parts but the last).
pub(crate) const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight at once: memory stays below `(PARALLEL_PARTS + 1) * PART_SIZE`.
const PARALLEL_PARTS: usize = 2;

impl Store {
    /// Opens the store at `options.url` for `cluster_name`. Nothing is contacted yet.
    pub(crate) fn open(options: &StoreConfig, cluster_name: &str) -> anyhow::Result<Self> {
        let url = &options.url;
        let client = ClientOptions::new()
            .with_timeout(options.timeout)
            .with_connect_timeout(options.timeout.min(Duration::from_secs(5)));
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: options.timeout * 2,
            ..Default::default()
        };
        let (inner, prefix): (Arc<dyn ObjectStore>, Path) = match url {
            StoreUrl::File { dir, .. } => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create backup folder {}", dir.display()))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("open backup folder {}", dir.display()))?;
                (Arc::new(local), Path::default())
            }
            StoreUrl::S3(url) => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_client_options(client.clone())
                    .with_retry(retry);
                if let Some(endpoint) = &options.s3_endpoint {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                if let Some(region) = &options.s3_region {
                    builder = builder.with_region(region);
                }
                (Arc::new(builder.build()?), Path::from(url.path()))
            }
            StoreUrl::Gcs(url) => {
                let builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_client_options(client.clone())
                    .with_retry(retry);
                (Arc::new(builder.build()?), Path::from(url.path()))
            }
            StoreUrl::Azure(url) => {
                let builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_client_options(client)
                    .with_retry(retry);
                (Arc::new(builder.build()?), Path::from(url.path()))
            }
        };
        let mut root: Vec<String> = prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        root.push(cluster_name.to_owned());
        Ok(Self {
            chunked: Arc::new(object_store::chunked::ChunkedStore::new(
                Arc::clone(&inner),
                1024 * 1024,
            )),
            inner,
            root: Path::from_iter(root),
            url: url.to_string(),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    fn object(id: &str) -> anyhow::Result<[&str; 3]> {
        Ok(["backups", checked(id)?, "snapshot.db.zst"])
    }

    fn manifest_path(&self, id: &str) -> anyhow::Result<Path> {
        Ok(self.path(&["backups", checked(id)?, "manifest.json"]))
    }

    /// Starts the multipart upload of backup `id`'s snapshot object.
    pub(crate) async fn upload(&self, id: &str) -> anyhow::Result<Upload> {
        let path = self.path(&Self::object(id)?);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .with_context(|| format!("start the upload of {path}"))?;
        Ok(Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
        })
    }

    /// Streams backup `id`'s snapshot object, chunk by chunk.
    pub(crate) async fn download(
        &self,
        id: &str,
    ) -> anyhow::Result<(
        u64,
        futures::stream::BoxStream<'static, anyhow::Result<bytes::Bytes>>,
    )> {
        let path = self.path(&Self::object(id)?);
        let result = self
            .chunked
            .get(&path)
            .await
            .with_context(|| format!("download {path}"))?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map(|chunk| chunk.context("download the snapshot"))
            .boxed();
        Ok((size, stream))
    }

    /// Writes (or overwrites) a manifest.
    pub(crate) async fn put_manifest(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let path = self.manifest_path(&manifest.id)?;
        let body = serde_json::to_vec_pretty(manifest)?;
        self.inner
            .put(&path, PutPayload::from(body))
            .await
            .with_context(|| format!("write {path}"))?;
        Ok(())
    }

    /// One manifest. It must describe the backup it is stored under: its `id` is what later
    /// becomes object keys and folder names.
    pub(crate) async fn manifest(&self, id: &str) -> anyhow::Result<Manifest> {
        let path = self.manifest_path(id)?;
        let bytes = self
            .inner
            .get(&path)
            .await
            .with_context(|| format!("read {path}: no such backup in {}", self.url))?
            .bytes()
            .await
            .with_context(|| format!("read {path}"))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("parse {path}"))?;
        if manifest.id != id {
            anyhow::bail!(
                "{path} says it is backup {:?}: a manifest must name the backup it is stored \
                 under, so this one is ignored (remove or fix it in {})",
                manifest.id.chars().take(80).collect::<String>(),
                self.url
            );
        }
        Ok(manifest)
    }

    /// Every backup with a manifest, oldest first. Objects without one (interrupted
    /// uploads) are not backups. A manifest that cannot be read is reported, not skipped
    /// silently: it is logged and left out.
    pub(crate) async fn list(&self) -> anyhow::Result<Vec<Manifest>> {
        self.list_reusing(&[]).await
    }

    /// Like [`Store::list`], reading only the manifests not in `known` (one listing request
    /// plus one read per new backup). Backups gone from the store are gone from the result.
    pub(crate) async fn list_reusing(&self, known: &[Manifest]) -> anyhow::Result<Vec<Manifest>> {
        let prefix = self.path(&["backups"]);
        let mut names = Vec::new();
        let mut listing = self.inner.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.with_context(|| format!("list {prefix} in {}", self.url))?;
            let parts: Vec<String> = meta
                .location
                .parts()
                .map(|p| p.as_ref().to_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("manifest.json") && parts.len() >= 2 {
                let name = &parts[parts.len() - 2];
                match checked(name) {
                    Ok(_) => names.push(name.clone()),
                    Err(err) => tracing::warn!("skipping {}: {err:#}", meta.location),
                }
            }
        }
        let mut manifests = Vec::new();
        for id in names {
            if let Some(manifest) = known.iter().find(|m| m.id == id) {
                manifests.push(manifest.clone());
                continue;
            }
            match self.manifest(&id).await {
                Ok(manifest) => manifests.push(manifest),
                Err(err) => {
                    tracing::warn!(backup = %id, "skipping a backup whose manifest cannot be read: {err:#}")
                }
            }
        }
        manifests.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        Ok(manifests)
    }

    /// Deletes a backup: its manifest first (so it stops being a backup at once), then the
    /// snapshot object.
    pub(crate) async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let manifest = self.manifest_path(id)?;
        self.inner
            .delete(&manifest)
            .await
            .with_context(|| format!("delete {manifest}"))?;
        let object = self.path(&Self::object(id)?);
        match self.inner.delete(&object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("delete {object}")),
        }
    }

    /// The cluster record, if any.
    pub(crate) async fn cluster_record(&self) -> anyhow::Result<Option<ClusterRecord>> {
        self.read_json(&self.path(&["cluster.json"])).await
    }

    pub(crate) async fn put_cluster_record(&self, record: &ClusterRecord) -> anyhow::Result<()> {
        let path = self.path(&["cluster.json"]);
        self.inner
            .put(&path, PutPayload::from(serde_json::to_vec_pretty(record)?))
            .await
            .with_context(|| format!("write {path}"))?;
        Ok(())
    }

    fn claims_folder(lost: Option<ClusterId>) -> String {
        lost.map_or_else(|| "none".to_owned(), |id| id.to_string())
    }

    /// The newest claim of `kind` for cluster `lost`, if any.
    pub(crate) async fn latest_claim(
        &self,
        kind: ClaimKind,
        lost: Option<ClusterId>,
    ) -> anyhow::Result<Option<LatestClaim>> {
        let folder = Self::claims_folder(lost);
        let prefix = self.path(&[kind.folder(), &folder]);
        let depth = prefix.parts().count() + 1;
        let mut newest: Option<u64> = None;
        let mut listing = self.inner.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.with_context(|| format!("list {prefix} in {}", self.url))?;
            if meta.location.parts().count() != depth {
                continue;
            }
            let generation = meta
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".json"))
                .filter(|stem| stem.len() == 8 && stem.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|stem| stem.parse::<u64>().ok());
            if let Some(generation) = generation {
                newest = newest.max(Some(generation));
            }
        }
        let Some(generation) = newest else {
            return match kind {
                ClaimKind::Restore => self.legacy_claim(lost).await,
                ClaimKind::Reseed => Ok(None),
            };
        };
        let claim: RestoreClaim = self
            .read_json(&self.claim_path(kind, lost, generation, ""))
            .await?
            .with_context(|| format!("{} claim {generation} vanished", kind.folder()))?;
        let state = self
            .read_json(&self.claim_path(kind, lost, generation, ".state"))
            .await?
            .unwrap_or_default();
        Ok(Some(LatestClaim {
            generation,
            claim,
            state,
        }))
    }

    /// A claim of the layout before numbered claims (`restores/<lost>.json`, created once, no
    /// heartbeat): generation 0, open, so it is taken over after the claim timeout.
    async fn legacy_claim(&self, lost: Option<ClusterId>) -> anyhow::Result<Option<LatestClaim>> {
        #[derive(Deserialize)]
        struct Legacy {
            member: String,
            backup: String,
            at: String,
        }
        let path = self.path(&["restores", &format!("{}.json", Self::claims_folder(lost))]);
        let Some(legacy) = self.read_json::<Legacy>(&path).await? else {
            return Ok(None);
        };
        Ok(Some(LatestClaim {
            generation: 0,
            claim: RestoreClaim {
                holder_id: format!("{}#legacy", legacy.member),
                holder: legacy.member,
                admin_url: String::new(),
                backup: legacy.backup,
                at: legacy.at,
                heartbeat_every_ms: 0,
            },
            state: ClaimState::default(),
        }))
    }

    fn claim_path(
        &self,
        kind: ClaimKind,
        lost: Option<ClusterId>,
        generation: u64,
        suffix: &str,
    ) -> Path {
        self.path(&[
            kind.folder(),
            &Self::claims_folder(lost),
            &format!("{generation:08}{suffix}.json"),
        ])
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> anyhow::Result<Option<T>> {
        match self.inner.get(path).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .with_context(|| format!("read {path}"))?;
                Ok(Some(
                    serde_json::from_slice(&bytes).with_context(|| format!("parse {path}"))?,
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("read {path} in {}", self.url)),
        }
    }

    /// Creates claim `generation` of `kind` for cluster `lost`, with a conditional create.
    /// `false`: another pilot created it first.
    pub(crate) async fn create_claim(
        &self,
        kind: ClaimKind,
        lost: Option<ClusterId>,
        generation: u64,
        claim: &RestoreClaim,
    ) -> anyhow::Result<bool> {
        let path = self.claim_path(kind, lost, generation, "");
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(
                &path,
                PutPayload::from(serde_json::to_vec_pretty(claim)?),
                options,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(err) => Err(err).with_context(|| format!("create {path}")),
        }
    }

    /// Writes the state of claim `generation` (its holder's heartbeat, or that it finished).
    pub(crate) async fn put_claim_state(
        &self,
        kind: ClaimKind,
        lost: Option<ClusterId>,
        generation: u64,
        state: &ClaimState,
    ) -> anyhow::Result<()> {
        let path = self.claim_path(kind, lost, generation, ".state");
        self.inner
            .put(&path, PutPayload::from(serde_json::to_vec_pretty(state)?))
            .await
            .with_context(|| format!("write {path}"))?;
        Ok(())
    }
}

/// `id` if it is a backup id (see `core::backup::check_backup_id`).
fn checked(id: &str) -> anyhow::Result<&str> {
    etcd_pilot_core::backup::check_backup_id(id).map_err(anyhow::Error::msg)?;
    Ok(id)
}

/// A multipart upload in progress: parts go out as they fill, at most two at a time.
pub(crate) struct Upload {
    writer: Option<WriteMultipart>,
}

impl Upload {
    /// Queues `bytes`, waiting first while too many parts are in flight.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let writer = self.writer.as_mut().context("upload already finished")?;
        writer
            .wait_for_capacity(PARALLEL_PARTS)
            .await
            .context("upload a part")?;
        writer.write(bytes);
        Ok(())
    }

    /// Uploads the last part and completes the object.
    pub(crate) async fn finish(mut self) -> anyhow::Result<()> {
        let writer = self.writer.take().context("upload already finished")?;
        writer.finish().await.context("complete the upload")?;
        Ok(())
    }

    /// Abandons the upload, removing the parts where the store allows it.
    pub(crate) async fn abort(mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(err) = writer.abort().await
        {
            tracing::warn!(
                "cannot abort the unfinished upload (its parts stay until the store's lifecycle rules remove them): {err}"
            );
        }
    }
}

/// Cluster ids as etcd prints them (hex), in JSON.
mod hex_id {
    use etcd_pilot_core::ClusterId;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(id: &ClusterId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClusterId, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16)
            .map(ClusterId)
            .map_err(serde::de::Error::custom)
    }
}

mod hex_ids {
    use etcd_pilot_core::ClusterId;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(ids: &[ClusterId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ClusterId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| u64::from_str_radix(text, 16).map(ClusterId))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}
