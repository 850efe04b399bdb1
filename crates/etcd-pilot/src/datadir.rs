//! The pilot's data directory: etcd's data, the identity marker, the formed marker, the pid
//! file, and the quarantine folder.
//!
//! Layout under `data_dir`:
//! - `etcd/`: etcd's `--data-dir`;
//! - `identity.json`: whose data `etcd/` is (name, cluster id, member id);
//! - `cluster-formed.json`: written once a cluster formed with this node; it survives a
//!   quarantine and forbids bootstrapping a new cluster from this node ever after;
//! - `etcd.pid`: the running etcd child; `pilot.pid`: the running pilot itself;
//! - `restored`: `etcd/` is a restored backup whose cluster id is not recorded yet;
//! - `quarantine/<time>/`: data moved aside, never deleted, with a `reason.txt`;
//! - `restore/`, `drill/`: scratch space of a restore and of restore drills ([`Scratch`]:
//!   created with a marker file, and cleared only while the marker is there);
//!
//! Every write is atomic (write a temporary file, fsync, rename). Nothing here deletes live
//! data: the only deletions are inside scratch folders the pilot created, and quarantined
//! copies beyond quarantine retention (`prune_quarantine`, oldest first, never the newest).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use etcd_pilot_core::start::LocalData;
use etcd_pilot_core::{ClusterId, Identity};
use serde::{Deserialize, Serialize};

pub(crate) struct DataDir {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Formed {
    cluster_id: ClusterId,
    at: String,
}

impl DataDir {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// Creates the directory if needed, private to the pilot's user.
    pub(crate) fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("create data dir {}", self.root.display()))
    }

    pub(crate) fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.root.join("etcd.pid")
    }

    /// The running pilot's own pid, written by the agent.
    pub(crate) fn pilot_pid_file(&self) -> PathBuf {
        self.root.join("pilot.pid")
    }

    fn identity_path(&self) -> PathBuf {
        self.root.join("identity.json")
    }

    fn formed_path(&self) -> PathBuf {
        self.root.join("cluster-formed.json")
    }

    /// Present while `etcd/` holds a restored backup whose cluster id is not recorded yet.
    fn restored_path(&self) -> PathBuf {
        self.root.join("restored")
    }

    /// Whether `etcd/` is a restored backup not yet started: its first answer is the cluster
    /// it was restored as, ours by construction, so it is recorded without a peer's word.
    pub(crate) fn restored(&self) -> anyhow::Result<bool> {
        let path = self.restored_path();
        path.try_exists()
            .with_context(|| format!("read {}", path.display()))
    }

    /// Forgets that `etcd/` was restored (its identity is recorded now).
    pub(crate) fn clear_restored(&self) -> anyhow::Result<()> {
        let path = self.restored_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("remove {}", path.display())),
        }
    }

    /// What the data dir holds. Data counts only when etcd's `member/wal/` holds a WAL file:
    /// etcd creates `member/snap/db` before its first WAL (and renames a finished WAL folder
    /// into place), so a `member/` without one is the remains of a start that never finished,
    /// and etcd started on it would bootstrap a cluster of its own. Such a folder is
    /// [`LocalData::Unusable`]. A read error (EACCES, EIO) is an error, never "empty".
    pub(crate) fn local_data(&self) -> anyhow::Result<LocalData> {
        let member = self.etcd_dir().join("member");
        // Fault test: the disk answers EIO (what chmod 000 does to a pilot that is not root).
        fail::fail_point!("local-data-eio", |_| {
            Err(std::io::Error::from_raw_os_error(5))
                .with_context(|| format!("read {}", member.display()))
        });
        match std::fs::symlink_metadata(&member) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(LocalData::Empty),
            Err(err) => return Err(err).with_context(|| format!("read {}", member.display())),
        }
        let wal = member.join("wal");
        let has_wal = match std::fs::read_dir(&wal) {
            Ok(entries) => {
                let mut found = false;
                for entry in entries {
                    let entry = entry.with_context(|| format!("read {}", wal.display()))?;
                    if entry.file_name().to_string_lossy().ends_with(".wal") {
                        found = true;
                        break;
                    }
                }
                found
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(err) => return Err(err).with_context(|| format!("read {}", wal.display())),
        };
        if !has_wal {
            return Ok(LocalData::Unusable {
                reason: format!(
                    "{} holds no WAL file: etcd never finished creating this member (a crash \
                     between its first write and its first WAL), and etcd would bootstrap a \
                     cluster of its own on it",
                    member.display()
                ),
            });
        }
        Ok(LocalData::Data {
            identity: self.identity()?,
        })
    }

    /// The identity marker, if present. A marker that cannot be parsed is an error: it was
    /// written atomically, so it is damaged, and a person should look.
    pub(crate) fn identity(&self) -> anyhow::Result<Option<Identity>> {
        let path = self.identity_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| {
                    format!(
                        "parse identity marker {}: move it aside if it is damaged",
                        path.display()
                    )
                })
                .map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
        }
    }

    pub(crate) fn write_identity(&self, identity: &Identity) -> anyhow::Result<()> {
        write_atomic(&self.identity_path(), &serde_json::to_vec_pretty(identity)?)
    }

    /// Whether the formed marker exists. A read error is an error, never "never formed".
    pub(crate) fn formed(&self) -> anyhow::Result<bool> {
        let path = self.formed_path();
        path.try_exists()
            .with_context(|| format!("read {}", path.display()))
    }

    pub(crate) fn mark_formed(&self, cluster_id: ClusterId, now: SystemTime) -> anyhow::Result<()> {
        let formed = Formed {
            cluster_id,
            at: humantime::format_rfc3339_seconds(now).to_string(),
        };
        write_atomic(&self.formed_path(), &serde_json::to_vec_pretty(&formed)?)
    }

    /// Scratch space of a restore: on the data dir's file system, so the result is renamed
    /// into place.
    pub(crate) fn restore_scratch(&self) -> PathBuf {
        self.root.join("restore")
    }

    /// Scratch space of restore drills.
    pub(crate) fn drill_scratch(&self) -> PathBuf {
        self.root.join("drill")
    }

    /// Installs a restored etcd data dir (`restored`, created by `snapshot restore` in
    /// `scratch`) as ours: the identity marker first, then a rename into place. Whatever sat
    /// at `etcd/` (no data, or the remains of a failed start) is quarantined, not deleted.
    pub(crate) fn install_restored(
        &self,
        scratch: &Scratch,
        restored: &Path,
        identity: &Identity,
        now: SystemTime,
    ) -> anyhow::Result<()> {
        if self.etcd_dir().exists() {
            self.quarantine("replaced by a restored backup", now)?;
        }
        // Whatever release ran the old data says nothing about the backup's: etcd.bin decides.
        match std::fs::remove_file(self.release_marker()) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err)
                    .with_context(|| format!("remove {}", self.release_marker().display()));
            }
            _ => {}
        }
        self.write_identity(identity)?;
        std::fs::rename(restored, self.etcd_dir()).with_context(|| {
            format!(
                "move {} to {}",
                restored.display(),
                self.etcd_dir().display()
            )
        })?;
        sync_dir(&self.root)?;
        // After the data is in place, so the flag never outlives a crash without the data (a
        // crash before it only means the id waits for a joiner to confirm it).
        write_atomic(&self.restored_path(), b"restored from a backup\n")?;
        if let Err(err) = scratch.remove() {
            tracing::warn!("cannot remove the restore's scratch folder: {err:#}");
        }
        Ok(())
    }

    /// Moves etcd's data and the identity marker into `quarantine/<time>/`, with the reason.
    /// Returns the folder.
    /// Where a reseed in progress is recorded: written before etcd restarts alone, removed
    /// once the reseed record is in etcd.
    pub(crate) fn reseed_marker(&self) -> PathBuf {
        self.root.join("reseed.json")
    }

    /// Records (atomically) a reseed in progress.
    pub(crate) fn write_reseed(&self, record: &crate::records::Reseed) -> anyhow::Result<()> {
        write_atomic(
            &self.reseed_marker(),
            crate::records::encode(record).as_bytes(),
        )
    }

    /// The reseed in progress, if any.
    pub(crate) fn reseed(&self) -> anyhow::Result<Option<crate::records::Reseed>> {
        match std::fs::read_to_string(self.reseed_marker()) {
            Ok(text) => Ok(Some(crate::records::decode("reseed.json", &text)?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                Err(err).with_context(|| format!("read {}", self.reseed_marker().display()))
            }
        }
    }

    /// Where the release etcd runs on this data is recorded ([`crate::records::RunningRelease`]).
    pub(crate) fn release_marker(&self) -> PathBuf {
        self.root.join("release.json")
    }

    /// Records (atomically) the release etcd runs on this data.
    pub(crate) fn write_release(
        &self,
        record: &crate::records::RunningRelease,
    ) -> anyhow::Result<()> {
        write_atomic(
            &self.release_marker(),
            crate::records::encode(record).as_bytes(),
        )
    }

    /// The release etcd runs on this data, if recorded.
    pub(crate) fn release(&self) -> anyhow::Result<Option<crate::records::RunningRelease>> {
        match std::fs::read_to_string(self.release_marker()) {
            Ok(text) => Ok(Some(crate::records::decode("release.json", &text)?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                Err(err).with_context(|| format!("read {}", self.release_marker().display()))
            }
        }
    }

    /// Copies etcd's data (and the identity marker) into a new quarantine folder, leaving
    /// them in place: a copy kept (never deleted by the pilot but by quarantine retention)
    /// before a step that rewrites the data, such as a reseed.
    pub(crate) fn copy_aside(&self, reason: &str, now: SystemTime) -> anyhow::Result<PathBuf> {
        let folder = self.new_quarantine_folder(now)?;
        write_atomic(&folder.join("reason.txt"), format!("{reason}\n").as_bytes())?;
        copy_tree(&self.etcd_dir(), &folder.join("etcd"))?;
        if self.identity_path().exists() {
            std::fs::copy(self.identity_path(), folder.join("identity.json"))
                .with_context(|| format!("copy the identity marker into {}", folder.display()))?;
        }
        sync_dir(&folder)?;
        Ok(folder)
    }

    fn new_quarantine_folder(&self, now: SystemTime) -> anyhow::Result<PathBuf> {
        let stamp = humantime::format_rfc3339_seconds(now)
            .to_string()
            .replace(':', "");
        let mut folder = self.root.join("quarantine").join(&stamp);
        let mut n = 1;
        while folder.exists() {
            n += 1;
            folder = self.root.join("quarantine").join(format!("{stamp}-{n}"));
        }
        std::fs::create_dir_all(&folder).with_context(|| format!("create {}", folder.display()))?;
        Ok(folder)
    }

    pub(crate) fn quarantine(&self, reason: &str, now: SystemTime) -> anyhow::Result<PathBuf> {
        let folder = self.new_quarantine_folder(now)?;
        write_atomic(&folder.join("reason.txt"), format!("{reason}\n").as_bytes())?;
        for (from, name) in [
            (self.etcd_dir(), "etcd"),
            (self.identity_path(), "identity.json"),
            (self.restored_path(), "restored"),
            (self.reseed_marker(), "reseed.json"),
            (self.release_marker(), "release.json"),
        ] {
            if from.exists() {
                std::fs::rename(&from, folder.join(name)).with_context(|| {
                    format!("move {} into {}", from.display(), folder.display())
                })?;
            }
        }
        sync_dir(&self.root)?;
        Ok(folder)
    }
}

/// A folder the pilot owns for scratch work. It is created with a marker file, and the pilot
/// clears or removes it only while the marker is there: a path that went wrong (a bad
/// `data_dir`, a name from outside) can never make it delete what it did not create.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
}

/// The marker of a [`Scratch`] folder.
const SCRATCH_MARKER: &str = ".etcd-pilot-scratch";

/// What an older pilot leaves in `restore/`.
pub(crate) fn legacy_restore(name: &str) -> bool {
    matches!(name, "snapshot.db" | "etcd")
}

/// What an older pilot leaves in `drill/`.
pub(crate) fn legacy_drill(name: &str) -> bool {
    name == "etcd.pid" || name.starts_with("drill-")
}

/// Nothing: a folder without the marker must be empty.
pub(crate) fn no_legacy(_: &str) -> bool {
    false
}

impl Scratch {
    /// Opens `dir`, creating it (and the marker) when absent. An existing folder without the
    /// marker is refused, unless every entry in it is one an older pilot leaves there
    /// (`legacy` says which names).
    pub(crate) fn open(dir: &Path, legacy: fn(&str) -> bool) -> anyhow::Result<Self> {
        let marker = dir.join(SCRATCH_MARKER);
        if !marker.exists() {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let foreign = entries
                        .flatten()
                        .any(|e| !legacy(&e.file_name().to_string_lossy()));
                    if foreign {
                        anyhow::bail!(
                            "{} exists and etcd-pilot did not create it (no {SCRATCH_MARKER} in \
                             it), so it will not clear it: move it away",
                            dir.display()
                        );
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("create {}", dir.display()))?;
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("read {}", dir.display()));
                }
            }
            write_atomic(
                &marker,
                b"scratch space of etcd-pilot; it may clear this folder\n",
            )?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// [`Scratch::open`], then removes everything in it but the marker.
    pub(crate) fn fresh(dir: &Path, legacy: fn(&str) -> bool) -> anyhow::Result<Self> {
        let scratch = Self::open(dir, legacy)?;
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            if entry.file_name() != SCRATCH_MARKER {
                scratch.remove_child(&entry.file_name().to_string_lossy())?;
            }
        }
        Ok(scratch)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` in this folder; `name` must be one plain file name (no `/`, no
    /// `..`, no NUL), whoever chose it.
    pub(crate) fn child(&self, name: &str) -> anyhow::Result<PathBuf> {
        let mut components = Path::new(name).components();
        let plain = matches!(components.next(), Some(std::path::Component::Normal(_)))
            && components.next().is_none()
            && !name.contains(['/', '\0'])
            && name != SCRATCH_MARKER;
        if !plain {
            anyhow::bail!(
                "{name:?} is not a plain file name: refusing to use it inside {}",
                self.dir.display()
            );
        }
        Ok(self.dir.join(name))
    }

    /// Removes `name` (a file or a folder with everything in it) from this folder, if the
    /// marker is still there.
    pub(crate) fn remove_child(&self, name: &str) -> anyhow::Result<()> {
        let path = self.child(name)?;
        self.check_marker()?;
        let result = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        };
        result.with_context(|| format!("remove {}", path.display()))
    }

    /// Removes the folder with everything in it, if the marker is still there.
    pub(crate) fn remove(&self) -> anyhow::Result<()> {
        self.check_marker()?;
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("remove {}", self.dir.display()))
    }

    fn check_marker(&self) -> anyhow::Result<()> {
        if self.dir.join(SCRATCH_MARKER).is_file() {
            Ok(())
        } else {
            anyhow::bail!(
                "{} lost its {SCRATCH_MARKER} marker: not clearing it",
                self.dir.display()
            )
        }
    }
}

/// What quarantine retention kept.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct QuarantineReport {
    /// The copies kept, oldest first: folder name, bytes, reason.
    pub(crate) kept: Vec<KeptCopy>,
    pub(crate) bytes: u64,
    pub(crate) max_bytes: u64,
    /// The copies this pass deleted.
    pub(crate) deleted: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct KeptCopy {
    pub(crate) name: String,
    pub(crate) bytes: u64,
    pub(crate) reason: String,
}

/// The least `quarantine.max_bytes` defaults to.
const QUARANTINE_FLOOR: u64 = 8 << 30;

impl DataDir {
    /// Quarantine retention (core `quarantine::to_delete`): keeps the newest `keep` copies
    /// within `max_bytes` (default: twice the size of the current data, at least 8 GiB) and
    /// deletes the older ones. Only folders the pilot made (with their `reason.txt`) count.
    pub(crate) fn prune_quarantine(
        &self,
        keep: usize,
        max_bytes: Option<u64>,
    ) -> anyhow::Result<QuarantineReport> {
        let root = self.root.join("quarantine");
        let mut copies = Vec::new();
        match std::fs::read_dir(&root) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.with_context(|| format!("read {}", root.display()))?;
                    let path = entry.path();
                    if entry.file_type().is_ok_and(|t| t.is_dir())
                        && path.join("reason.txt").is_file()
                    {
                        copies.push(etcd_pilot_core::quarantine::Quarantined {
                            name: entry.file_name().to_string_lossy().into_owned(),
                            bytes: size_of(&path),
                        });
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("read {}", root.display())),
        }
        // The default limit follows the data's size: the current data, or (right after a
        // quarantine moved it) the newest copy.
        copies.sort_by(|a, b| a.name.cmp(&b.name));
        let data_size = size_of(&self.etcd_dir()).max(copies.last().map_or(0, |c| c.bytes));
        let max_bytes = max_bytes.unwrap_or_else(|| (2 * data_size).max(QUARANTINE_FLOOR));
        let mut deleted = etcd_pilot_core::quarantine::to_delete(&copies, keep, max_bytes);
        // A copy that cannot be deleted is reported and kept in the count; the others go on.
        deleted.retain(|name| {
            let path = root.join(name);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(copy = %path.display(), "cannot delete a quarantined copy: {err}");
                    false
                }
            }
        });
        let mut kept: Vec<KeptCopy> = copies
            .into_iter()
            .filter(|c| !deleted.contains(&c.name))
            .map(|c| KeptCopy {
                reason: std::fs::read_to_string(root.join(&c.name).join("reason.txt"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                name: c.name,
                bytes: c.bytes,
            })
            .collect();
        kept.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(QuarantineReport {
            bytes: kept.iter().map(|k| k.bytes).sum(),
            kept,
            max_bytes,
            deleted,
        })
    }
}

/// Bytes of the files under `path` (symlinks not followed); 0 when absent.
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

/// Copies the folder `from` to `to` (files, folders and their contents; each file synced).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry.with_context(|| format!("read {}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copy {} to {}", source.display(), target.display()))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("sync {}", target.display()))?;
        }
    }
    sync_dir(to)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("write {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
}

#[cfg(test)]
mod quarantine_tests {
    use super::*;

    #[test]
    fn quarantine_retention_keeps_the_newest_copies_and_only_touches_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::new(tmp.path());
        let mut made = Vec::new();
        for i in 0..5u64 {
            std::fs::create_dir_all(data.etcd_dir().join("member/wal")).unwrap();
            std::fs::write(data.etcd_dir().join("member/wal/0.wal"), vec![0u8; 1000]).unwrap();
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            made.push(data.quarantine(&format!("loop {i}"), at).unwrap());
        }
        // Someone else's folder in quarantine/ is not a copy of ours.
        let foreign = tmp.path().join("quarantine/notes");
        std::fs::create_dir_all(&foreign).unwrap();
        let report = data.prune_quarantine(3, None).unwrap();
        assert_eq!(report.deleted.len(), 2, "{report:?}");
        assert!(!made[0].exists() && !made[1].exists());
        assert!(made[2].exists() && made[3].exists() && made[4].exists());
        assert!(foreign.exists());
        assert_eq!(report.kept.len(), 3);
        assert_eq!(report.kept[2].reason, "loop 4");
        assert_eq!(
            report.bytes,
            report.kept.iter().map(|k| k.bytes).sum::<u64>()
        );
        assert_eq!(report.max_bytes, QUARANTINE_FLOOR);
        // A byte limit: only the newest fits.
        let report = data.prune_quarantine(3, Some(1500)).unwrap();
        assert_eq!(report.kept.len(), 1);
        assert!(made[4].exists());
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    #[test]
    fn a_scratch_folder_is_cleared_only_when_the_pilot_created_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drill");
        let scratch = Scratch::fresh(&dir, legacy_drill).unwrap();
        std::fs::create_dir_all(scratch.child("drill-1").unwrap().join("etcd")).unwrap();
        std::fs::write(scratch.child("etcd.pid").unwrap(), b"1").unwrap();
        let again = Scratch::fresh(&dir, legacy_drill).unwrap();
        let left: Vec<_> = std::fs::read_dir(again.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [SCRATCH_MARKER]);

        // A folder someone else filled is never cleared.
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("keep"), b"k").unwrap();
        let err = Scratch::fresh(&theirs, legacy_drill)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not create it"), "{err}");
        assert!(theirs.join("keep").exists());
        // An older pilot's leftovers (known names only) are adopted and cleared.
        let old = tmp.path().join("old-drill");
        std::fs::create_dir_all(old.join("drill-20261130T010203.456Z/etcd")).unwrap();
        std::fs::write(old.join("etcd.pid"), b"1").unwrap();
        let adopted = Scratch::fresh(&old, legacy_drill).unwrap();
        assert_eq!(std::fs::read_dir(adopted.path()).unwrap().count(), 1);

        // Names from outside never leave the folder.
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, b"c").unwrap();
        for bad in [
            "../canary",
            "/etc",
            "..",
            ".",
            "a/b",
            "x\0",
            "",
            SCRATCH_MARKER,
        ] {
            assert!(again.child(bad).is_err(), "{bad:?} accepted");
            assert!(again.remove_child(bad).is_err());
        }
        assert!(canary.exists());

        // Without its marker, the folder is left alone.
        std::fs::remove_file(dir.join(SCRATCH_MARKER)).unwrap();
        std::fs::write(dir.join("x"), b"x").unwrap();
        assert!(again.remove().is_err());
        assert!(dir.join("x").exists());
    }
}

#[cfg(test)]
mod tests {
    use etcd_pilot_core::{MemberId, MemberName};

    use super::*;

    #[test]
    fn quarantine_moves_data_and_marker_aside_and_keeps_the_formed_marker() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        data.create().unwrap();
        assert_eq!(data.local_data().unwrap(), LocalData::Empty);
        std::fs::create_dir_all(data.etcd_dir().join("member/wal")).unwrap();
        std::fs::write(data.etcd_dir().join("member/wal/0.wal"), b"x").unwrap();
        let identity = Identity {
            name: MemberName::new("m1").unwrap(),
            cluster_id: Some(ClusterId(9)),
            member_id: Some(MemberId(1)),
        };
        data.write_identity(&identity).unwrap();
        data.mark_formed(ClusterId(9), SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(
            data.local_data().unwrap(),
            LocalData::Data {
                identity: Some(identity)
            }
        );
        let folder = data
            .quarantine("from another cluster", SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(data.local_data().unwrap(), LocalData::Empty);
        assert!(data.formed().unwrap());
        assert!(folder.join("etcd/member/wal/0.wal").exists());
        assert!(folder.join("identity.json").exists());
        assert_eq!(
            std::fs::read_to_string(folder.join("reason.txt")).unwrap(),
            "from another cluster\n"
        );
        let second = data.quarantine("again", SystemTime::UNIX_EPOCH).unwrap();
        assert_ne!(folder, second);
    }

    #[test]
    fn a_member_folder_without_a_wal_file_is_unusable_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        data.create().unwrap();
        // What a crash leaves between etcd's first write (snap/db) and its first WAL.
        std::fs::create_dir_all(data.etcd_dir().join("member/snap")).unwrap();
        std::fs::write(data.etcd_dir().join("member/snap/db"), b"db").unwrap();
        assert!(matches!(
            data.local_data().unwrap(),
            LocalData::Unusable { reason } if reason.contains("holds no WAL file")
        ));
        // A WAL folder with only etcd's temporary or foreign files is no better.
        std::fs::create_dir_all(data.etcd_dir().join("member/wal")).unwrap();
        std::fs::write(data.etcd_dir().join("member/wal/0.tmp"), b"x").unwrap();
        assert!(matches!(
            data.local_data().unwrap(),
            LocalData::Unusable { .. }
        ));
        std::fs::write(
            data.etcd_dir()
                .join("member/wal/0000000000000000-0000000000000000.wal"),
            b"x",
        )
        .unwrap();
        assert_eq!(
            data.local_data().unwrap(),
            LocalData::Data { identity: None }
        );
    }

    #[test]
    fn a_data_dir_that_cannot_be_read_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        data.create().unwrap();
        // `member` as a file: reading `member/wal` fails with ENOTDIR, as EACCES or EIO would.
        std::fs::create_dir_all(data.etcd_dir()).unwrap();
        std::fs::write(data.etcd_dir().join("member"), b"").unwrap();
        let err = data.local_data().unwrap_err();
        assert!(format!("{err:#}").contains("member/wal"), "{err:#}");
        // The formed marker's folder unreadable in the same way.
        let marker_dir = DataDir::new(&data.etcd_dir().join("member"));
        assert!(marker_dir.formed().is_err());
    }
}
