//! The operator's commands: `backup now|list|verify|delete`, `restore --from` and
//! `restore --release-claim`.
//!
//! Each works from a node's pilot config (the store, the cluster name, the etcd binary, the
//! data dir). They print for people (tables, progress bars on a terminal) or JSON.

use std::time::SystemTime;

use tokio::time::Instant;

use anyhow::Context as _;
use etcd_pilot_core::backup::{self as choice, Verification};
use etcd_pilot_core::model;

use super::{Backups, ClusterRecord, Manifest, Member, Progress};
use crate::config::{Config, url_string};
use crate::datadir::DataDir;
use crate::etcd::{ClientOptions, Etcd};

fn open(config: &Config) -> anyhow::Result<Backups> {
    Backups::open(config)?.context(
        "no backup store is configured: set backup.url (file:///path, s3://bucket/prefix, ...)",
    )
}

fn options(config: &Config) -> ClientOptions {
    ClientOptions {
        timeout: config.timers.etcd_call_timeout,
        credentials: config.etcd.credentials.clone(),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `backup now`: streams a snapshot of `endpoint` (default: this node's member) into the store.
pub(crate) async fn now(config: &Config, endpoint: Option<String>) -> anyhow::Result<String> {
    let backups = open(config)?;
    let endpoint = endpoint.unwrap_or_else(|| url_string(&config.etcd.client_url));
    let etcd = Etcd::connect_one(&endpoint, &options(config))
        .await
        .with_context(|| format!("connect to etcd at {endpoint}"))?;
    let started = Instant::now();
    let manifest = backups
        .take(&etcd, config.name.as_str(), &Progress::stderr())
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "backup {} of cluster {} taken from {endpoint}: revision {}, {} keys, {:.1} MiB -> {:.1} MiB \
         zstd in {seconds:.1} s ({:.0} MiB/s), stored in {}",
        manifest.id,
        manifest.cluster_id,
        manifest.revision,
        manifest.key_count,
        mib(manifest.db_size),
        mib(manifest.compressed_size),
        mib(manifest.db_size) / seconds.max(0.001),
        backups.store.url(),
    ))
}

/// `backup list`: every backup, oldest first.
pub(crate) async fn list(config: &Config, json: bool) -> anyhow::Result<String> {
    let backups = open(config)?;
    let manifests = backups.list().await?;
    if json {
        return Ok(serde_json::to_string_pretty(&manifests)?);
    }
    if manifests.is_empty() {
        return Ok(format!("no backups in {}", backups.store.url()));
    }
    let mut rows = vec![[
        "ID".to_owned(),
        "CLUSTER".to_owned(),
        "MEMBER".to_owned(),
        "REVISION".to_owned(),
        "KEYS".to_owned(),
        "DB".to_owned(),
        "STORED".to_owned(),
        "VERIFIED".to_owned(),
    ]];
    for m in &manifests {
        rows.push([
            m.id.clone(),
            m.cluster_id.to_string(),
            match &m.taken_for {
                Some(why) => format!("{} ({why})", m.member),
                None => m.member.clone(),
            },
            m.revision.to_string(),
            m.key_count.to_string(),
            format!("{:.1} MiB", mib(m.db_size)),
            format!("{:.1} MiB", mib(m.compressed_size)),
            match &m.verification {
                Verification::Unverified => "no".to_owned(),
                Verification::Passed => "yes".to_owned(),
                Verification::Failed { .. } => "FAILED".to_owned(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    Ok(rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The backup `id` names: an id, or `latest` (the newest backup).
async fn pick(backups: &Backups, id: Option<&str>) -> anyhow::Result<Manifest> {
    match id {
        Some(id) if id != "latest" => backups.store.manifest(id).await,
        _ => backups
            .list()
            .await?
            .pop()
            .with_context(|| format!("no backups in {}", backups.store.url())),
    }
}

/// `backup verify [ID]`: a restore drill; records the result in the manifest.
pub(crate) async fn verify(config: &Config, id: Option<&str>) -> anyhow::Result<String> {
    let backups = open(config)?;
    let manifest = pick(&backups, id).await?;
    // A folder of its own (created here, private), never one someone prepared in /tmp.
    let dir = std::env::temp_dir().join(format!(
        "etcd-pilot-verify-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    let scratch = crate::datadir::Scratch::fresh(&dir, crate::datadir::no_legacy)?;
    let result = backups
        .verify(&manifest.id, scratch.path(), &Progress::stderr())
        .await;
    if let Err(err) = scratch.remove() {
        tracing::warn!("{err:#}");
    }
    let (manifest, report) = result?;
    Ok(format!(
        "backup {} restores: {} keys and HashKV {} at revision {} match its manifest (drill {:.1} s)",
        manifest.id,
        report.key_count,
        report.hash_kv,
        manifest.revision,
        report.duration.as_secs_f64()
    ))
}

/// `backup delete ID`.
pub(crate) async fn delete(config: &Config, id: &str) -> anyhow::Result<String> {
    let backups = open(config)?;
    backups.store.manifest(id).await?;
    backups.store.delete(id).await?;
    Ok(format!("deleted backup {id} from {}", backups.store.url()))
}

/// `restore --release-claim`: ends the restore claim of the current loss once its holder does
/// not answer.
pub(crate) async fn release_claim(config: &Config) -> anyhow::Result<String> {
    let backups = open(config)?;
    let lost = backups
        .store
        .cluster_record()
        .await?
        .and_then(|record| record.current());
    super::claim::release(
        &backups.store,
        lost,
        &format!("an operator on {}", config.name),
    )
    .await
}

/// `restore --from ID|latest`: restores a backup into this node's data dir as a one-member
/// cluster. Start this node's pilot next; the other nodes, with empty data dirs, join it.
pub(crate) async fn restore(config: &Config, from: &str, force: bool) -> anyhow::Result<String> {
    let backups = open(config)?;
    let data = DataDir::new(&config.data_dir);
    data.create()?;
    if data.local_data()? != etcd_pilot_core::start::LocalData::Empty {
        anyhow::bail!(
            "{} holds etcd data: stop this node's pilot and move {} aside before restoring over it",
            config.data_dir.display(),
            data.etcd_dir().display()
        );
    }
    let admin = format!("http://{}/healthz", config.admin.listen);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    if http.get(&admin).send().await.is_ok() {
        anyhow::bail!(
            "this node's pilot answers on {}: stop it before restoring",
            config.admin.listen
        );
    }
    let record = backups.store.cluster_record().await?;
    let lost = record.as_ref().and_then(ClusterRecord::current);
    let lineage = record
        .as_ref()
        .map(|r| r.lineage.clone())
        .unwrap_or_default();
    let manifests = backups.list().await?;
    let summaries: Vec<_> = manifests.iter().map(Manifest::summary).collect();
    let manifest = if from == "latest" {
        let chosen = choice::restore_candidate(&summaries, &lineage).with_context(|| {
            format!(
                "no verified backup of this cluster in {}; name one by id (etcd-pilot backup list)",
                backups.store.url()
            )
        })?;
        backups.store.manifest(&chosen.id).await?
    } else {
        backups.store.manifest(from).await?
    };
    if let Some(refusal) = choice::refuse_restore(&manifest.summary(), &lineage, force) {
        anyhow::bail!("{refusal}");
    }
    let peer_url = url_string(&config.etcd.peer_url);
    let initial_cluster = model::initial_cluster([(&config.name, peer_url.as_str())]);
    let token = model::cluster_token(&config.cluster_name, &initial_cluster, rand::random());
    let member = Member {
        name: config.name.clone(),
        peer_url,
        initial_cluster,
        token,
        bump_revision: config.restore.bump_revision,
    };
    // The same claim as the pilots' automatic restore: never two restored clusters.
    let claims = super::claim::Claims::new(
        backups.store.clone(),
        config.name.to_string(),
        super::claim::admin_url(config),
        config.restore.claim_timeout,
    );
    let lease = match claims.acquire(lost, &manifest.id).await? {
        super::claim::Acquired::Held(lease) => lease,
        super::claim::Acquired::Waiting {
            holder,
            backup,
            restored: true,
            ..
        } => anyhow::bail!(
            "pilot {holder} restored backup {backup} after this loss already: start the pilots, \
             they join its cluster. If that node is gone too, run `etcd-pilot restore \
             --release-claim`, then restore again"
        ),
        super::claim::Acquired::Waiting { holder, backup, .. } => anyhow::bail!(
            "pilot {holder} holds the restore claim of this loss (backup {backup}): it is \
             restoring, and its nodes join it. If it is gone for good, run `etcd-pilot restore \
             --release-claim`, then restore again"
        ),
    };
    let prepared = backups
        .prepare_restore(&manifest, &data, &member, &Progress::stderr())
        .await?;
    lease.confirm().await?;
    let tool = super::Backups::install_restore(prepared, &data)?;
    lease
        .finish(&format!("an operator on {}", config.name))
        .await?;
    // Adopting another cluster's backup, once it is in place: the store follows the
    // restored data from now on.
    if force && !lineage.is_empty() && !lineage.contains(&manifest.cluster_id) {
        let mut adopted = lineage.clone();
        adopted.push(manifest.cluster_id);
        backups
            .store
            .put_cluster_record(&ClusterRecord {
                lineage: adopted,
                updated: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            })
            .await?;
    }
    let bump = if tool.bumps_revision && config.restore.bump_revision > 0 {
        format!(
            "revisions bumped by {} and compacted",
            config.restore.bump_revision
        )
    } else {
        format!(
            "{} cannot bump revisions: they continue from the backup's",
            tool.program.display()
        )
    };
    Ok(format!(
        "restored backup {} (cluster {}, revision {}, {} keys) into {} as a one-member cluster of {} \
         ({bump}). Start this node's pilot now; the other nodes join it from empty data dirs.",
        manifest.id,
        manifest.cluster_id,
        manifest.revision,
        manifest.key_count,
        data.etcd_dir().display(),
        config.name
    ))
}
