//! The registry proper: packs, tags and chunk rows in redb; chunk bytes in a [`BlobStore`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aq_pack::archive::{ArchiveWriter, VerifiedArchive};
use aq_pack::chunk::decompress_verified;
use aq_pack::reference::{LATEST, Selector, validate_tag};
use aq_pack::signature::SignedManifest;
use aq_pack::trust::{TrustPolicy, Verdict};
use aq_pack::{Digest, Manifest, PackRef};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobStore, FsBlobStore};
use crate::error::{StoreError, io_err};

/// `name:version` -> stored pack record (JSON, see [`PackRecord`]).
const PACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("packs");
/// `name:tag` -> version string.
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// chunk digest (32 bytes) -> (uncompressed size, stored size).
const CHUNKS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("chunks");
/// chunk digest -> unix seconds when it arrived loose (pushed or pulled ahead of its manifest).
/// Loose chunks are kept by `gc` for a grace period, so an interrupted transfer resumes instead
/// of starting over. A pack commit that references a loose chunk clears its mark.
const LOOSE: TableDefinition<&[u8], u64> = TableDefinition::new("loose");
/// Registry-wide settings, e.g. the layout version.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Version of the on-disk registry layout (tables and record encoding).
pub const LAYOUT_VERSION: &str = "1";
const DB_FILE: &str = "registry.redb";

/// What a pack row holds. A disk format of its own, versioned apart from the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackRecord {
    format_version: u32,
    /// Canonical manifest bytes (UTF-8 JSON).
    manifest: String,
    /// Signature envelope JSON, if signed.
    signature: Option<String>,
    saved_at: String,
}

/// A pack as stored: manifest, signature, when it was saved and its tags.
#[derive(Debug, Clone)]
pub struct StoredPack {
    pub signed: SignedManifest,
    pub saved_at: String,
    pub tags: Vec<String>,
}

impl StoredPack {
    pub fn manifest(&self) -> &Manifest {
        &self.signed.manifest
    }
}

/// One line of `aq pack list`.
#[derive(Debug, Clone, Serialize)]
pub struct PackSummary {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub format: String,
    pub size: u64,
    pub files: usize,
    pub signed_by: Option<String>,
    pub tags: Vec<String>,
    pub saved_at: String,
}

/// What `import` did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub id: String,
    pub digest: String,
    pub chunks_total: usize,
    pub chunks_new: usize,
    pub bytes_new: u64,
    pub signed_by: Option<String>,
}

/// What `verify` checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub digest: String,
    pub signed_by: Option<String>,
    pub signer_label: Option<String>,
    pub chunks_checked: usize,
    pub files_checked: usize,
    pub bytes_checked: u64,
}

/// The logical state of a registry: `name:version` -> pack digest, and `name:tag` -> version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub packs: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// What `put_chunks` stored.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PutReport {
    /// Chunks the registry did not have and now holds.
    pub chunks_new: usize,
    /// Chunks it already had (skipped without being written).
    pub chunks_present: usize,
    /// Stored (compressed) bytes written.
    pub bytes_new: u64,
}

/// One chunk offered to [`Registry::put_chunks`]: its digest, uncompressed size and stored
/// (zstd) bytes.
#[derive(Debug, Clone, Copy)]
pub struct LooseChunk<'a> {
    pub digest: Digest,
    pub size: u64,
    pub compressed: &'a [u8],
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub chunks_removed: usize,
    pub bytes_freed: u64,
    pub orphan_files_removed: usize,
    /// Loose chunks kept because they arrived within the grace period.
    pub loose_kept: usize,
}

/// The local registry in a data directory.
pub struct Registry {
    root: PathBuf,
    db: Database,
    blobs: Box<dyn BlobStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("root", &self.root)
            .finish()
    }
}

fn pack_key(name: &str, version: &semver::Version) -> String {
    format!("{name}:{version}")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Registry {
    /// Opens (creating if needed) the registry in `root`.
    pub fn open(root: &Path) -> Result<Registry, StoreError> {
        std::fs::create_dir_all(root).map_err(io_err("create data directory", root))?;
        // The database first: its lock makes this process the registry's only writer before
        // anything else in the directory is touched.
        let db = Database::create(root.join(DB_FILE))?;
        let blobs = FsBlobStore::open(&root.join("blobs"))
            .map_err(io_err("open content store in", root))?;
        Registry::with_parts(root, db, Box::new(blobs))
    }

    /// Builds a registry from an open database and a blob store (tests inject faulty ones).
    pub fn with_parts(
        root: &Path,
        db: Database,
        blobs: Box<dyn BlobStore>,
    ) -> Result<Registry, StoreError> {
        let registry = Registry {
            root: root.to_owned(),
            db,
            blobs,
        };
        registry.init_tables()?;
        Ok(registry)
    }

    /// The redb file of a registry rooted at `root`.
    pub fn db_path(root: &Path) -> PathBuf {
        root.join(DB_FILE)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        // Opening an initialised registry writes nothing, so a refused command leaves every
        // byte of the data directory as it was.
        {
            let txn = self.db.begin_read()?;
            if let Ok(meta) = txn.open_table(META)
                && let Some(v) = meta.get("layout_version")?
            {
                if v.value() == LAYOUT_VERSION {
                    return Ok(());
                }
                return Err(StoreError::Corrupt(format!(
                    "registry layout version {} is not supported by this build (it reads {LAYOUT_VERSION})",
                    v.value()
                )));
            }
        }
        let txn = self.db.begin_write()?;
        {
            txn.open_table(PACKS)?;
            txn.open_table(TAGS)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(LOOSE)?;
            let mut meta = txn.open_table(META)?;
            let existing = meta.get("layout_version")?.map(|v| v.value().to_owned());
            match existing {
                None => {
                    meta.insert("layout_version", LAYOUT_VERSION)?;
                }
                Some(v) if v == LAYOUT_VERSION => {}
                Some(v) => {
                    return Err(StoreError::Corrupt(format!(
                        "registry layout version {v} is not supported by this build (it reads {LAYOUT_VERSION})"
                    )));
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    // ----- reading -------------------------------------------------------------------------

    fn decode_record(key: &str, bytes: &[u8]) -> Result<(SignedManifest, String), StoreError> {
        let record: PackRecord = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("pack record {key}: {e}")))?;
        let signed = SignedManifest::parse(
            record.manifest.as_bytes(),
            record.signature.as_deref().map(str::as_bytes),
        )
        .map_err(|e| StoreError::Corrupt(format!("pack record {key}: {e}")))?;
        Ok((signed, record.saved_at))
    }

    /// Resolves a reference to a version.
    fn resolve_version(
        &self,
        tags: &impl ReadableTable<&'static str, &'static str>,
        reference: &PackRef,
    ) -> Result<semver::Version, StoreError> {
        match &reference.selector {
            Selector::Version(v) => Ok(v.clone()),
            Selector::Tag(tag) => {
                let key = format!("{}:{tag}", reference.name);
                let v = tags
                    .get(key.as_str())?
                    .ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
                semver::Version::parse(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("tag {key}: {e}")))
            }
        }
    }

    fn tags_by_version(
        tags: &impl ReadableTable<&'static str, &'static str>,
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for entry in tags.iter()? {
            let (k, v) = entry?;
            if let Some((name, tag)) = k.value().split_once(':') {
                out.entry(format!("{name}:{}", v.value()))
                    .or_default()
                    .push(tag.to_owned());
            }
        }
        for list in out.values_mut() {
            list.sort();
        }
        Ok(out)
    }

    /// Looks up one pack.
    pub fn get(&self, reference: &PackRef) -> Result<StoredPack, StoreError> {
        let txn = self.db.begin_read()?;
        let packs = txn.open_table(PACKS)?;
        let tags = txn.open_table(TAGS)?;
        let version = self.resolve_version(&tags, reference)?;
        let key = pack_key(&reference.name, &version);
        let bytes = packs
            .get(key.as_str())?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
        let (signed, saved_at) = Self::decode_record(&key, bytes.value())?;
        let tags = Self::tags_by_version(&tags)?
            .remove(&key)
            .unwrap_or_default();
        Ok(StoredPack {
            signed,
            saved_at,
            tags,
        })
    }

    /// Every pack, sorted by name then version.
    pub fn list(&self) -> Result<Vec<PackSummary>, StoreError> {
        let txn = self.db.begin_read()?;
        let packs = txn.open_table(PACKS)?;
        let tags = Self::tags_by_version(&txn.open_table(TAGS)?)?;
        let mut out = Vec::new();
        for entry in packs.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            let (signed, saved_at) = Self::decode_record(key, v.value())?;
            let m = &signed.manifest;
            out.push((
                (m.name.clone(), m.version.clone()),
                PackSummary {
                    name: m.name.clone(),
                    version: m.version.to_string(),
                    digest: signed.digest().to_string(),
                    format: m.model.format.to_string(),
                    size: m.total_size(),
                    files: m.files.len(),
                    signed_by: signed.signature.as_ref().map(|s| s.key_id.clone()),
                    tags: tags.get(key).cloned().unwrap_or_default(),
                    saved_at,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Reads and verifies one chunk's uncompressed bytes.
    pub fn read_chunk(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        let compressed = self.read_stored_chunk(digest)?;
        Ok(decompress_verified(&compressed, *digest, size)?)
    }

    fn read_stored_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.blobs.get(digest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::Corrupt(format!("chunk {digest} is missing from the content store"))
            } else {
                StoreError::Io {
                    action: "read chunk",
                    path: digest.to_string(),
                    source: e,
                }
            }
        })
    }

    /// Checks a stored pack: the signature against `policy`, then every chunk and every file
    /// digest.
    pub fn verify(
        &self,
        reference: &PackRef,
        policy: &TrustPolicy,
        now: SystemTime,
        allow_unsigned: bool,
    ) -> Result<VerifyReport, StoreError> {
        let pack = self.get(reference)?;
        let verdict = policy.verify(&pack.signed, now, allow_unsigned)?;
        let m = pack.manifest();
        let mut cache: HashMap<Digest, Vec<u8>> = HashMap::new();
        let mut bytes_checked = 0;
        for file in &m.files {
            let mut hasher = blake3::Hasher::new();
            for c in &file.chunks {
                if let Some(data) = cache.get(&c.digest) {
                    hasher.update(data);
                    continue;
                }
                let data = self.read_chunk(&c.digest, c.size)?;
                bytes_checked += data.len() as u64;
                hasher.update(&data);
                // Keep only small repeated chunks around; most chunks appear once.
                if cache.len() < 64 {
                    cache.insert(c.digest, data);
                }
            }
            if Digest(*hasher.finalize().as_bytes()) != file.digest {
                return Err(StoreError::Corrupt(format!(
                    "file {} of {} does not match its digest",
                    file.path,
                    m.id()
                )));
            }
        }
        let (signed_by, signer_label) = match verdict {
            Verdict::Trusted { key_id, label } => (Some(key_id), Some(label)),
            Verdict::UnsignedAllowed => (None, None),
        };
        Ok(VerifyReport {
            id: m.id(),
            digest: pack.signed.digest().to_string(),
            signed_by,
            signer_label,
            chunks_checked: m.unique_chunks().len(),
            files_checked: m.files.len(),
            bytes_checked,
        })
    }

    /// Writes a file of the pack, chunk by chunk, to `out`; checks the file digest.
    pub fn write_file(
        &self,
        manifest: &Manifest,
        path: &str,
        out: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let file = manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| StoreError::NotFound(format!("{} in {}", path, manifest.id())))?;
        let mut hasher = blake3::Hasher::new();
        for c in &file.chunks {
            let data = self.read_chunk(&c.digest, c.size)?;
            hasher.update(&data);
            out.write_all(&data)
                .map_err(io_err("write", Path::new(path)))?;
        }
        if Digest(*hasher.finalize().as_bytes()) != file.digest {
            return Err(StoreError::Corrupt(format!(
                "file {path} of {} does not match its digest",
                manifest.id()
            )));
        }
        Ok(file.size)
    }

    /// Writes the single-file `.aqpack` form of a pack.
    pub fn export<W: Write>(&self, reference: &PackRef, out: W) -> Result<W, StoreError> {
        let pack = self.get(reference)?;
        let mut writer = ArchiveWriter::new(out, &pack.signed)?;
        for c in pack.manifest().unique_chunks() {
            let stored = self.read_stored_chunk(&c.digest)?;
            // Never export bytes we cannot vouch for.
            decompress_verified(&stored, c.digest, c.size)?;
            writer.write_chunk(&c.digest, &stored)?;
        }
        Ok(writer.finish()?)
    }

    // ----- writing -------------------------------------------------------------------------

    fn check_absent(&self, key: &str) -> Result<(), StoreError> {
        self.check_writable(key, None)
    }

    /// Fails unless `key` is absent, or `manifest` [extends](Manifest::extends) the stored
    /// one (it adds variants and changes nothing else).
    fn check_writable(&self, key: &str, manifest: Option<&Manifest>) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let packs = txn.open_table(PACKS)?;
        if let Some(existing) = packs.get(key)? {
            let (other, _) = Self::decode_record(key, existing.value())?;
            if manifest.is_some_and(|m| m.extends(&other.manifest)) {
                return Ok(());
            }
            return Err(StoreError::AlreadyExists {
                id: key.to_owned(),
                digest: other.digest().to_string(),
            });
        }
        Ok(())
    }

    fn has_chunk_row(&self, digest: &Digest) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CHUNKS)?.get(&digest.0[..])?.is_some())
    }

    /// The digests in `wanted` that have no chunk row here, in the order given, without
    /// repeats.
    pub fn missing_chunks(&self, wanted: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for d in wanted {
            if seen.insert(*d) && chunks.get(&d.0[..])?.is_none() {
                missing.push(*d);
            }
        }
        Ok(missing)
    }

    /// The uncompressed size of a chunk this registry has a row for.
    pub fn chunk_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let row = txn.open_table(CHUNKS)?.get(&digest.0[..])?;
        row.map(|r| r.value().0)
            .ok_or_else(|| StoreError::NotFound(format!("chunk {digest}")))
    }

    /// The stored (zstd) bytes of a chunk this registry has a row for, as they would travel
    /// to another registry. The receiver verifies them.
    pub fn stored_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        if !self.has_chunk_row(digest)? {
            return Err(StoreError::NotFound(format!("chunk {digest}")));
        }
        self.read_stored_chunk(digest)
    }

    /// Stores chunks ahead of the manifest that will name them (a push to a server, a pull
    /// from one): each is decompressed and checked against its digest and size first, then
    /// all are written, made durable with one sync, and given rows in one transaction, marked
    /// loose at `now` (see `gc_with_grace`). Chunks the registry already has are skipped. On
    /// error nothing becomes visible.
    pub fn put_chunks(
        &self,
        chunks: &[LooseChunk<'_>],
        now: SystemTime,
    ) -> Result<PutReport, StoreError> {
        let mut report = PutReport::default();
        let mut fresh: Vec<(Digest, u64, u64)> = Vec::new();
        let mut written: Vec<Digest> = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            for c in chunks {
                if fresh.iter().any(|(d, _, _)| *d == c.digest) || self.has_chunk_row(&c.digest)? {
                    report.chunks_present += 1;
                    continue;
                }
                decompress_verified(c.compressed, c.digest, c.size)?;
                self.blobs
                    .put(&c.digest, c.compressed)
                    .map_err(io_err("write chunk", Path::new(&c.digest.to_string())))?;
                written.push(c.digest);
                fresh.push((c.digest, c.size, c.compressed.len() as u64));
                report.chunks_new += 1;
                report.bytes_new += c.compressed.len() as u64;
            }
            if fresh.is_empty() {
                return Ok(());
            }
            self.blobs
                .sync()
                .map_err(io_err("sync content store", &self.root))?;
            let stamp = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let txn = self.db.begin_write()?;
            {
                let mut rows = txn.open_table(CHUNKS)?;
                let mut loose = txn.open_table(LOOSE)?;
                for (d, size, stored) in &fresh {
                    if rows.get(&d.0[..])?.is_none() {
                        rows.insert(&d.0[..], (*size, *stored))?;
                        loose.insert(&d.0[..], stamp)?;
                    }
                }
            }
            // Past this point the files must stay: the commit may have reached the disk even
            // if it reports failure, and a row must never lack its file.
            written.clear();
            txn.commit()?;
            Ok(())
        })();
        if result.is_err() {
            for d in written {
                if matches!(self.has_chunk_row(&d), Ok(false)) {
                    let _ = self.blobs.remove(&d);
                }
            }
        }
        result.map(|()| report)
    }

    /// Starts adding a pack whose manifest is known (an import): fails early if
    /// `name:version` exists. Chunks go to the content store as they come; nothing is visible
    /// until [`PackWriter::commit`].
    pub fn begin_pack(&self, signed: SignedManifest) -> Result<PackWriter<'_>, StoreError> {
        let key = pack_key(&signed.manifest.name, &signed.manifest.version);
        self.check_writable(&key, Some(&signed.manifest))?;
        let mut needed = HashMap::new();
        for c in signed.manifest.unique_chunks() {
            if !self.has_chunk_row(&c.digest)? {
                needed.insert(c.digest, c.size);
            }
        }
        Ok(PackWriter {
            registry: self,
            key,
            signed: Some(signed),
            needed: Some(needed),
            staged: HashMap::new(),
            bytes_new: 0,
            tags: Vec::new(),
        })
    }

    /// Starts saving a pack whose manifest is built as its chunks are cut (`pack save`): fails
    /// early if `name:version` exists. Finish with [`PackWriter::commit_manifest`].
    pub fn begin_save(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<PackWriter<'_>, StoreError> {
        let key = pack_key(name, version);
        self.check_absent(&key)?;
        Ok(PackWriter {
            registry: self,
            key,
            signed: None,
            needed: None,
            staged: HashMap::new(),
            bytes_new: 0,
            tags: Vec::new(),
        })
    }

    /// Starts adding a variant to the stored pack `base` (`aq export`): chunks go to the content
    /// store as they come; [`PackWriter::commit_manifest`] then replaces the stored manifest
    /// with one that [extends](Manifest::extends) it, in one transaction. Readers see the old
    /// manifest or the new one, never a mix; if another change to the version landed first,
    /// the commit fails with [`StoreError::AlreadyExists`].
    pub fn begin_variant(&self, base: &StoredPack) -> Result<PackWriter<'_>, StoreError> {
        let m = base.manifest();
        Ok(PackWriter {
            registry: self,
            key: pack_key(&m.name, &m.version),
            signed: None,
            needed: None,
            staged: HashMap::new(),
            bytes_new: 0,
            tags: Vec::new(),
        })
    }

    /// Imports a verified archive as one atomic change.
    pub fn import<R: Read>(
        &self,
        mut archive: VerifiedArchive<R>,
        signed_by: Option<String>,
    ) -> Result<ImportReport, StoreError> {
        let signed = archive.signed().clone();
        let mut writer = self.begin_pack(signed)?;
        while let Some(chunk) = archive.next_chunk()? {
            writer.add_chunk(&chunk.digest, chunk.size, &chunk.compressed)?;
        }
        let mut report = writer.commit()?;
        report.signed_by = signed_by;
        Ok(report)
    }

    /// Points `name:tag` at the version `reference` resolves to.
    pub fn tag(&self, reference: &PackRef, tag: &str) -> Result<String, StoreError> {
        self.tag_all(reference, &[tag.to_owned()])
    }

    /// Points every tag of `tags` at the pack `reference` resolves to, in one transaction;
    /// returns the pack's id.
    pub fn tag_all(&self, reference: &PackRef, all: &[String]) -> Result<String, StoreError> {
        for tag in all {
            validate_tag(tag).map_err(StoreError::InvalidInput)?;
        }
        let txn = self.db.begin_write()?;
        let version;
        {
            let packs = txn.open_table(PACKS)?;
            let mut tags = txn.open_table(TAGS)?;
            version = self.resolve_version(&tags, reference)?;
            let key = pack_key(&reference.name, &version);
            if packs.get(key.as_str())?.is_none() {
                return Err(StoreError::NotFound(reference.to_string()));
            }
            let version_text = version.to_string();
            for tag in all {
                tags.insert(
                    format!("{}:{tag}", reference.name).as_str(),
                    version_text.as_str(),
                )?;
            }
        }
        txn.commit()?;
        Ok(pack_key(&reference.name, &version))
    }

    /// Removes the tag `name:tag`.
    pub fn untag(&self, name: &str, tag: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut tags = txn.open_table(TAGS)?;
            let key = format!("{name}:{tag}");
            if tags.remove(key.as_str())?.is_none() {
                return Err(StoreError::NotFound(key));
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes a pack and its tags (`latest` moves to the newest remaining version). Chunks stay
    /// until `gc`.
    pub fn remove(&self, reference: &PackRef) -> Result<String, StoreError> {
        let txn = self.db.begin_write()?;
        let key;
        {
            let mut packs = txn.open_table(PACKS)?;
            let mut tags = txn.open_table(TAGS)?;
            let version = self.resolve_version(&tags, reference)?;
            key = pack_key(&reference.name, &version);
            if packs.remove(key.as_str())?.is_none() {
                return Err(StoreError::NotFound(reference.to_string()));
            }
            let version_text = version.to_string();
            let prefix = format!("{}:", reference.name);
            let stale: Vec<String> = tags
                .iter()?
                .filter_map(Result::ok)
                .filter(|(k, v)| k.value().starts_with(&prefix) && v.value() == version_text)
                .map(|(k, _)| k.value().to_owned())
                .collect();
            for t in stale {
                tags.remove(t.as_str())?;
            }
            let newest = Self::newest_version(&packs, &reference.name)?;
            if let Some(v) = newest {
                let latest = format!("{}:{LATEST}", reference.name);
                if tags.get(latest.as_str())?.is_none() {
                    tags.insert(latest.as_str(), v.to_string().as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(key)
    }

    fn newest_version(
        packs: &impl ReadableTable<&'static str, &'static [u8]>,
        name: &str,
    ) -> Result<Option<semver::Version>, StoreError> {
        let prefix = format!("{name}:");
        let mut newest: Option<semver::Version> = None;
        for entry in packs.iter()? {
            let (k, _) = entry?;
            if let Some(v) = k.value().strip_prefix(&prefix)
                && let Ok(v) = semver::Version::parse(v)
                && newest.as_ref().is_none_or(|n| v > *n)
            {
                newest = Some(v);
            }
        }
        Ok(newest)
    }

    /// Removes chunk rows and files that no pack references, and leftover files, loose chunks
    /// included.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_with_grace(std::time::Duration::ZERO, SystemTime::now())
    }

    /// Like [`Registry::gc`], but keeps loose chunks (see [`Registry::put_chunks`]) that
    /// arrived less than `grace` before `now`: an interrupted push or pull keeps its progress.
    pub fn gc_with_grace(
        &self,
        grace: std::time::Duration,
        now: SystemTime,
    ) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let cutoff = now
            .checked_sub(grace)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let txn = self.db.begin_write()?;
        let mut removed = Vec::new();
        let live: HashSet<Digest>;
        {
            let packs = txn.open_table(PACKS)?;
            let mut referenced = HashSet::new();
            for entry in packs.iter()? {
                let (k, v) = entry?;
                let (signed, _) = Self::decode_record(k.value(), v.value())?;
                referenced.extend(
                    signed
                        .manifest
                        .unique_chunks()
                        .into_iter()
                        .map(|c| c.digest),
                );
            }
            let mut loose = txn.open_table(LOOSE)?;
            let mut young = HashSet::new();
            let mut stale = Vec::new();
            for entry in loose.iter()? {
                let (k, v) = entry?;
                let digest =
                    Digest(k.value().try_into().map_err(|_| {
                        StoreError::Corrupt("loose row key is not 32 bytes".into())
                    })?);
                if v.value() >= cutoff && !grace.is_zero() {
                    young.insert(digest);
                } else {
                    stale.push(digest);
                }
            }
            for d in &stale {
                loose.remove(&d.0[..])?;
            }
            report.loose_kept = young.len();
            referenced.extend(young);
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut rows = Vec::new();
            for entry in chunks.iter()? {
                let (k, v) = entry?;
                let digest =
                    Digest(k.value().try_into().map_err(|_| {
                        StoreError::Corrupt("chunk row key is not 32 bytes".into())
                    })?);
                rows.push((digest, v.value().1));
            }
            for (digest, stored) in rows {
                if !referenced.contains(&digest) {
                    chunks.remove(&digest.0[..])?;
                    report.chunks_removed += 1;
                    report.bytes_freed += stored;
                    removed.push(digest);
                }
            }
            live = referenced;
        }
        txn.commit()?;
        // Rows are gone, so deleting files now can never leave a row without its file.
        for d in &removed {
            self.blobs
                .remove(d)
                .map_err(io_err("remove chunk", Path::new(&d.to_string())))?;
        }
        let on_disk = self
            .blobs
            .list()
            .map_err(io_err("list content store", &self.root))?;
        for d in on_disk {
            if !live.contains(&d) {
                self.blobs
                    .remove(&d)
                    .map_err(io_err("remove chunk", Path::new(&d.to_string())))?;
                report.orphan_files_removed += 1;
            }
        }
        Ok(report)
    }

    /// Every `name:version` with its pack digest, and every tag: what tests compare before
    /// and after an interrupted change.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let mut packs = BTreeMap::new();
        for entry in txn.open_table(PACKS)?.iter()? {
            let (k, v) = entry?;
            let (signed, _) = Self::decode_record(k.value(), v.value())?;
            packs.insert(k.value().to_owned(), signed.digest().to_string());
        }
        let mut tags = BTreeMap::new();
        for entry in txn.open_table(TAGS)?.iter()? {
            let (k, v) = entry?;
            tags.insert(k.value().to_owned(), v.value().to_owned());
        }
        Ok(Snapshot { packs, tags })
    }
}

/// An in-progress pack addition. Dropping it without committing leaves the registry unchanged
/// (chunk files already written become orphans for `gc`).
pub struct PackWriter<'r> {
    registry: &'r Registry,
    key: String,
    /// The manifest, when known up front (imports).
    signed: Option<SignedManifest>,
    /// For imports: chunks the pack references that have no row yet, with their sizes.
    needed: Option<HashMap<Digest, u64>>,
    /// Chunks this writer stored: digest -> (size, stored size).
    staged: HashMap<Digest, (u64, u64)>,
    bytes_new: u64,
    /// Tags to point at the pack in its commit transaction ([`PackWriter::with_tags`]).
    tags: Vec<String>,
}

impl PackWriter<'_> {
    /// True when the registry lacks this chunk and it has not been supplied yet.
    pub fn needs(&self, digest: &Digest) -> Result<bool, StoreError> {
        if self.staged.contains_key(digest) {
            return Ok(false);
        }
        match &self.needed {
            Some(needed) => Ok(needed.contains_key(digest)),
            None => Ok(!self.registry.has_chunk_row(digest)?),
        }
    }

    /// Stores one chunk's compressed bytes if the registry lacks it. The caller vouches that
    /// they decompress to `size` bytes with this digest (the archive reader and the chunker
    /// both check it).
    pub fn add_chunk(
        &mut self,
        digest: &Digest,
        size: u64,
        compressed: &[u8],
    ) -> Result<(), StoreError> {
        if let Some(needed) = &self.needed
            && let Some(&declared) = needed.get(digest)
            && declared != size
        {
            return Err(StoreError::Corrupt(format!(
                "chunk {digest} is {size} bytes but the manifest says {declared}"
            )));
        }
        if !self.needs(digest)? {
            return Ok(());
        }
        self.registry
            .blobs
            .put(digest, compressed)
            .map_err(io_err("write chunk", Path::new(&digest.to_string())))?;
        self.staged.insert(*digest, (size, compressed.len() as u64));
        self.bytes_new += compressed.len() as u64;
        Ok(())
    }

    /// Tags that the commit points at this pack, in the same transaction as the pack itself
    /// (a push with tags lands whole or not at all).
    pub fn with_tags(mut self, tags: &[String]) -> Result<Self, StoreError> {
        for tag in tags {
            validate_tag(tag).map_err(StoreError::InvalidInput)?;
        }
        self.tags = tags.to_vec();
        Ok(self)
    }

    /// Commits a pack begun with [`Registry::begin_pack`].
    pub fn commit(mut self) -> Result<ImportReport, StoreError> {
        let signed = self
            .signed
            .take()
            .ok_or_else(|| StoreError::InvalidInput("no manifest to commit".into()))?;
        self.finish(signed)
    }

    /// Commits a pack begun with [`Registry::begin_save`], now that its manifest is built.
    pub fn commit_manifest(self, signed: SignedManifest) -> Result<ImportReport, StoreError> {
        let key = pack_key(&signed.manifest.name, &signed.manifest.version);
        if key != self.key {
            return Err(StoreError::InvalidInput(format!(
                "manifest is for {key}, but the save was begun for {}",
                self.key
            )));
        }
        self.finish(signed)
    }

    /// Makes the pack visible: one redb transaction adds the chunk rows and the pack row, and
    /// moves `latest` if this is the newest version.
    fn finish(mut self, signed: SignedManifest) -> Result<ImportReport, StoreError> {
        self.registry
            .blobs
            .sync()
            .map_err(io_err("sync content store", &self.registry.root))?;
        let m = &signed.manifest;
        let record = PackRecord {
            format_version: 1,
            manifest: String::from_utf8(signed.manifest_bytes.clone())
                .map_err(|_| StoreError::Corrupt("manifest is not UTF-8".into()))?,
            signature: signed
                .signature
                .as_ref()
                .map(|s| String::from_utf8_lossy(&s.to_bytes()).into_owned()),
            saved_at: now_rfc3339(),
        };
        let record_bytes = serde_json::to_vec(&record)
            .map_err(|e| StoreError::Corrupt(format!("encode pack record: {e}")))?;
        let txn = self.registry.db.begin_write()?;
        {
            let mut packs = txn.open_table(PACKS)?;
            if let Some(existing) = packs.get(self.key.as_str())? {
                let (other, _) = Registry::decode_record(&self.key, existing.value())?;
                // The one change a stored version accepts: the same manifest with variants
                // added (decided inside this transaction, so two racing exports cannot both
                // land).
                if !m.extends(&other.manifest) {
                    return Err(StoreError::AlreadyExists {
                        id: self.key.clone(),
                        digest: other.digest().to_string(),
                    });
                }
            }
            let mut chunks = txn.open_table(CHUNKS)?;
            for (d, (size, stored)) in &self.staged {
                chunks.insert(&d.0[..], (*size, *stored))?;
            }
            // Every referenced chunk must now have a row; otherwise nothing is committed.
            let mut missing = 0;
            for c in m.unique_chunks() {
                if chunks.get(&c.digest.0[..])?.is_none() {
                    missing += 1;
                }
            }
            if missing > 0 {
                return Err(StoreError::Corrupt(format!(
                    "{missing} chunk(s) of {} were never supplied",
                    self.key
                )));
            }
            let mut loose = txn.open_table(LOOSE)?;
            for c in m.unique_chunks() {
                loose.remove(&c.digest.0[..])?;
            }
            packs.insert(self.key.as_str(), record_bytes.as_slice())?;
            let mut tags = txn.open_table(TAGS)?;
            let latest_key = format!("{}:{LATEST}", m.name);
            let current = tags
                .get(latest_key.as_str())?
                .and_then(|v| semver::Version::parse(v.value()).ok());
            if current.as_ref().is_none_or(|c| m.version > *c) {
                tags.insert(latest_key.as_str(), m.version.to_string().as_str())?;
            }
            for tag in &self.tags {
                tags.insert(
                    format!("{}:{tag}", m.name).as_str(),
                    m.version.to_string().as_str(),
                )?;
            }
        }
        // From here on the chunk files must stay even if the commit reports failure: a commit
        // can fail after its data became durable, and a row must never lack its file.
        let staged = std::mem::take(&mut self.staged);
        txn.commit()?;
        Ok(ImportReport {
            id: self.key.clone(),
            digest: signed.digest().to_string(),
            chunks_total: m.unique_chunks().len(),
            chunks_new: staged.len(),
            bytes_new: self.bytes_new,
            signed_by: signed.signature.as_ref().map(|s| s.key_id.clone()),
        })
    }
}

impl Drop for PackWriter<'_> {
    /// An abandoned writer removes the chunk files it wrote that still have no row (no pack
    /// can reference a chunk without a row). Best effort: what a crash leaves, `gc` takes.
    fn drop(&mut self) {
        for digest in std::mem::take(&mut self.staged).into_keys() {
            // Another writer in this process may have committed the same chunk since.
            if matches!(self.registry.has_chunk_row(&digest), Ok(false)) {
                let _ = self.registry.blobs.remove(&digest);
            }
        }
    }
}
