//! Test helpers: build packs from bytes, and storage that fails or "loses power" on demand.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aq_pack::chunk::{chunk_stream, compress};
use aq_pack::keys::SecretKey;
use aq_pack::manifest::{
    ChunkRef, FileEntry, Manifest, ModelFormat, ModelInfo, Provenance, TensorSpec,
};
use aq_pack::signature::SignedManifest;
use aq_pack::{Digest, TrustPolicy};
use aq_store::{BlobStore, FsBlobStore, Registry, StoreError};
use redb::StorageBackend;

pub fn key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

pub fn policy() -> TrustPolicy {
    TrustPolicy::parse(&format!(
        "format_version = 1\n[[key]]\nlabel = \"test\"\npublic_key = \"{}\"\npacks = [\"*\"]\n",
        key().public_key()
    ))
    .unwrap()
}

pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    aq_test_support::XorShift::new(seed).bytes(len)
}

/// A signed pack of one file, with its chunks compressed.
pub fn make_pack(
    name: &str,
    version: &str,
    data: &[u8],
) -> (SignedManifest, Vec<(Digest, u64, Vec<u8>)>) {
    let mut refs = Vec::new();
    let mut chunks: Vec<(Digest, u64, Vec<u8>)> = Vec::new();
    for c in chunk_stream(data) {
        let c = c.unwrap();
        refs.push(ChunkRef {
            digest: c.digest,
            size: c.data.len() as u64,
        });
        if !chunks.iter().any(|(d, _, _)| *d == c.digest) {
            chunks.push((c.digest, c.data.len() as u64, compress(&c.data, 3).unwrap()));
        }
    }
    let manifest = Manifest {
        format_version: 1,
        name: name.into(),
        version: semver::Version::parse(version).unwrap(),
        created_at: "2026-11-27T00:00:00Z".into(),
        model: ModelInfo {
            format: ModelFormat::Onnx,
            entry: "model.onnx".into(),
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: "f32".into(),
                shape: None,
            }],
            outputs: vec![],
        },
        files: vec![FileEntry {
            path: "model.onnx".into(),
            size: data.len() as u64,
            digest: Digest::of(data),
            chunks: refs,
        }],
        meta: Default::default(),
        provenance: Provenance {
            tool: "test".into(),
            source: None,
            created_by: None,
        },
        variants: Vec::new(),
    };
    (
        SignedManifest::seal(manifest, Some(&key())).unwrap(),
        chunks,
    )
}

pub fn save(reg: &Registry, name: &str, version: &str, data: &[u8]) -> Result<(), StoreError> {
    // The `pack save` path: chunks first, manifest last.
    let (signed, chunks) = make_pack(name, version, data);
    let mut w = reg.begin_save(name, &signed.manifest.version)?;
    for (d, size, c) in &chunks {
        w.add_chunk(d, *size, c)?;
    }
    w.commit_manifest(signed).map(|_| ())
}

/// A shared countdown: after `n` fallible operations, every further one fails.
#[derive(Debug)]
pub struct Faults(AtomicI64);

impl Faults {
    pub fn after(n: i64) -> Arc<Faults> {
        Arc::new(Faults(AtomicI64::new(n)))
    }
    pub fn tick(&self) -> io::Result<()> {
        if self.0.fetch_sub(1, Ordering::SeqCst) <= 0 {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }
    pub fn fired(&self) -> bool {
        self.0.load(Ordering::SeqCst) < 0
    }
}

/// The real file backend, failing writes and syncs once the countdown runs out (as a process
/// that dies: what was written before stays in the file).
#[derive(Debug)]
pub struct FailingFileBackend {
    inner: redb::backends::FileBackend,
    faults: Arc<Faults>,
}

impl FailingFileBackend {
    pub fn open(path: &Path, faults: Arc<Faults>) -> Self {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        FailingFileBackend {
            inner: redb::backends::FileBackend::new(file).unwrap(),
            faults,
        }
    }
}

impl StorageBackend for FailingFileBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.write(offset, data)
    }
}

/// The real content store, failing puts, removes and syncs once the countdown runs out.
pub struct FailingBlobs {
    pub inner: FsBlobStore,
    pub faults: Arc<Faults>,
}

impl BlobStore for FailingBlobs {
    fn contains(&self, d: &Digest) -> io::Result<bool> {
        self.inner.contains(d)
    }
    fn put(&self, d: &Digest, b: &[u8]) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.put(d, b)
    }
    fn get(&self, d: &Digest) -> io::Result<Vec<u8>> {
        self.inner.get(d)
    }
    fn remove(&self, d: &Digest) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.remove(d)
    }
    fn list(&self) -> io::Result<Vec<Digest>> {
        self.inner.list()
    }
    fn sync(&self) -> io::Result<()> {
        self.faults.tick()?;
        self.inner.sync()
    }
}

/// Storage that keeps what was written and what was made durable apart, so a test can "pull the
/// plug": everything not synced is lost.
#[derive(Debug, Default)]
pub struct Disk {
    pub db_current: Vec<u8>,
    pub db_durable: Vec<u8>,
    pub blobs_current: HashMap<Digest, Vec<u8>>,
    pub blobs_durable: HashMap<Digest, Vec<u8>>,
    pub removed_pending: HashSet<Digest>,
}

impl Disk {
    pub fn power_loss(&mut self) {
        self.db_current = self.db_durable.clone();
        self.blobs_current = self.blobs_durable.clone();
        self.removed_pending.clear();
    }
}

#[derive(Debug, Clone)]
pub struct MemBackend {
    pub disk: Arc<Mutex<Disk>>,
    pub faults: Arc<Faults>,
}

impl StorageBackend for MemBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.lock().unwrap().db_current.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let d = self.disk.lock().unwrap();
        let start = offset as usize;
        let end = start + out.len();
        if end > d.db_current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        out.copy_from_slice(&d.db_current[start..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.tick()?;
        self.disk.lock().unwrap().db_current.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.tick()?;
        let mut d = self.disk.lock().unwrap();
        d.db_durable = d.db_current.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.tick()?;
        let mut d = self.disk.lock().unwrap();
        let end = offset as usize + data.len();
        if d.db_current.len() < end {
            d.db_current.resize(end, 0);
        }
        d.db_current[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

pub struct MemBlobs {
    pub disk: Arc<Mutex<Disk>>,
    pub faults: Arc<Faults>,
}

impl BlobStore for MemBlobs {
    fn contains(&self, d: &Digest) -> io::Result<bool> {
        Ok(self.disk.lock().unwrap().blobs_current.contains_key(d))
    }
    fn put(&self, d: &Digest, b: &[u8]) -> io::Result<()> {
        self.faults.tick()?;
        self.disk
            .lock()
            .unwrap()
            .blobs_current
            .insert(*d, b.to_vec());
        Ok(())
    }
    fn get(&self, d: &Digest) -> io::Result<Vec<u8>> {
        self.disk
            .lock()
            .unwrap()
            .blobs_current
            .get(d)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn remove(&self, d: &Digest) -> io::Result<()> {
        self.faults.tick()?;
        let mut disk = self.disk.lock().unwrap();
        disk.blobs_current.remove(d);
        disk.removed_pending.insert(*d);
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<Digest>> {
        Ok(self
            .disk
            .lock()
            .unwrap()
            .blobs_current
            .keys()
            .copied()
            .collect())
    }
    fn sync(&self) -> io::Result<()> {
        self.faults.tick()?;
        let mut disk = self.disk.lock().unwrap();
        disk.blobs_durable = disk.blobs_current.clone();
        disk.removed_pending.clear();
        Ok(())
    }
}

pub fn open_mem(
    dir: &Path,
    disk: &Arc<Mutex<Disk>>,
    faults: Arc<Faults>,
) -> Result<Registry, StoreError> {
    let backend = MemBackend {
        disk: disk.clone(),
        faults: faults.clone(),
    };
    let db = redb::Builder::new().create_with_backend(backend)?;
    Registry::with_parts(
        dir,
        db,
        Box::new(MemBlobs {
            disk: disk.clone(),
            faults,
        }),
    )
}

/// Checks every pack in the registry end to end (signature, chunks, file digests).
pub fn verify_all(reg: &Registry) {
    let packs = reg.snapshot().unwrap().packs;
    for id in packs.keys() {
        let r: aq_pack::PackRef = id.parse().unwrap();
        reg.verify(&r, &policy(), std::time::SystemTime::now(), false)
            .unwrap_or_else(|e| panic!("{id} does not verify: {e}"));
    }
}
