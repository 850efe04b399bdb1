//! Taking a backup: etcd's snapshot stream, through sha256 and zstd, straight into a multipart
//! upload; then `HashKV` and the key count at the recorded revision; then the manifest, last.
//!
//! Memory stays bounded by the parts in flight (see `store.rs`), whatever the database size.
//! It does not decide when to back up (`schedule.rs`) nor where (`store.rs`).

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use anyhow::Context as _;
use etcd_pilot_core::backup::Verification;
use sha2::{Digest as _, Sha256};

use super::Progress;
use super::store::{MANIFEST_FORMAT, Manifest, Store, Upload};
use crate::etcd::Etcd;

/// A backup id: the creation time in UTC, sortable, with milliseconds.
pub(crate) fn backup_id(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now)
        .to_string()
        .replace(['-', ':'], "")
}

/// Streams a snapshot of the member `etcd` is connected to into `store`; returns its manifest
/// (`taken_for` marks one taken for a reason other than the schedule or an operator). Every
/// call it makes is served by the member alone, without a quorum. On failure the upload is
/// aborted and no manifest is written.
pub(crate) async fn take(
    etcd: &Etcd,
    store: &Store,
    cluster_name: &str,
    member: &str,
    level: i32,
    progress: &Progress,
    taken_for: Option<&str>,
) -> anyhow::Result<Manifest> {
    let started = Instant::now();
    let now = SystemTime::now();
    let status = etcd
        .status()
        .await
        .context("ask the member for its status")?;
    let id = backup_id(now);
    let mut upload = store.upload(&id).await?;
    progress.start("backup", u64::try_from(status.db_size).unwrap_or(0));
    let streamed = stream(etcd, &mut upload, level, progress).await;
    let streamed = match streamed {
        Ok(streamed) => streamed,
        Err(err) => {
            upload.abort().await;
            progress.finish();
            return Err(err);
        }
    };
    upload
        .finish()
        .await
        .with_context(|| format!("upload backup {id} to {}", store.url()))?;
    progress.finish();
    let hash = etcd
        .hash_kv(status.revision)
        .await
        .context("hash the key space at the backup's revision")?;
    let key_count = etcd
        .count_keys(status.revision)
        .await
        .context("count the keys at the backup's revision")?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        cluster_name: cluster_name.to_owned(),
        cluster_id: status.cluster_id,
        member: member.to_owned(),
        revision: status.revision,
        raft_index: status.raft_index,
        etcd_version: status.version.clone(),
        db_size: streamed.db_size,
        compressed_size: streamed.compressed_size,
        sha256: streamed.sha256,
        object_sha256: streamed.object_sha256,
        key_count,
        hash_kv: hash.hash,
        compact_revision: hash.compact_revision,
        created: humantime::format_rfc3339_millis(now).to_string(),
        created_unix_ms: u64::try_from(
            now.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        pilot_version: env!("CARGO_PKG_VERSION").to_owned(),
        compression: "zstd".to_owned(),
        verification: Verification::Unverified,
        verified_at: None,
        taken_for: taken_for.map(str::to_owned),
    };
    // Crash test: the pilot dies after the upload, before the manifest.
    fail::fail_point!("backup-before-manifest", |_| std::process::abort());
    store
        .put_manifest(&manifest)
        .await
        .with_context(|| format!("write the manifest of backup {id}"))?;
    Ok(manifest)
}

struct Streamed {
    db_size: u64,
    compressed_size: u64,
    sha256: String,
    object_sha256: String,
}

async fn stream(
    etcd: &Etcd,
    upload: &mut Upload,
    level: i32,
    progress: &Progress,
) -> anyhow::Result<Streamed> {
    let mut snapshot = etcd.snapshot().await.context("start the snapshot")?;
    // Three stages: this task reads etcd's stream; a blocking thread hashes and compresses
    // (zstd is CPU work that must not stall the runtime the pilot's probes run on); this task
    // again hashes and uploads what comes out. Bounded channels keep memory bounded.
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let compressor = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, u64)> {
        let mut encoder =
            zstd::stream::write::Encoder::new(Vec::new(), level).context("start zstd")?;
        let mut db_hash = Sha256::new();
        let mut db_size = 0u64;
        while let Some(chunk) = raw_rx.blocking_recv() {
            db_hash.update(&chunk);
            db_size += chunk.len() as u64;
            encoder.write_all(&chunk).context("compress")?;
            // The encoder writes compressed frames into its buffer as it goes: hand them to
            // the upload every MiB.
            if encoder.get_ref().len() >= 1024 * 1024 {
                let out = std::mem::take(encoder.get_mut());
                if out_tx.blocking_send(out).is_err() {
                    anyhow::bail!("the upload stopped");
                }
            }
        }
        let out = encoder.finish().context("finish zstd")?;
        if !out.is_empty() && out_tx.blocking_send(out).is_err() {
            anyhow::bail!("the upload stopped");
        }
        Ok((hex::encode(db_hash.finalize()), db_size))
    });
    let read = async move {
        while let Some(chunk) = snapshot
            .next_chunk()
            .await
            .context("stream the snapshot from etcd")?
        {
            progress.advance(chunk.len() as u64);
            if raw_tx.send(chunk).await.is_err() {
                // The compressor stopped: its error says why.
                break;
            }
        }
        drop(raw_tx);
        anyhow::Ok(())
    };
    // `out_rx` moves into `send`: if either half fails, dropping it unblocks the compressor.
    let send = async move {
        let mut out_rx = out_rx;
        let mut object_hash = Sha256::new();
        let mut compressed_size = 0u64;
        let mut parts_sent = false;
        while let Some(out) = out_rx.recv().await {
            object_hash.update(&out);
            compressed_size += out.len() as u64;
            upload.write(&out).await?;
            if !parts_sent && compressed_size > super::store::PART_SIZE as u64 {
                parts_sent = true;
                // Crash test: the pilot dies with a part uploaded and the rest not.
                fail::fail_point!("backup-mid-upload", |_| std::process::abort());
            }
        }
        anyhow::Ok((hex::encode(object_hash.finalize()), compressed_size))
    };
    let joined = tokio::try_join!(read, send);
    let compressed = compressor.await.context("join the compressing thread")?;
    let ((), (object_sha256, compressed_size)) = joined?;
    let (sha256, db_size) = compressed?;
    if db_size == 0 {
        anyhow::bail!("etcd sent an empty snapshot");
    }
    Ok(Streamed {
        db_size,
        compressed_size,
        sha256,
        object_sha256,
    })
}
