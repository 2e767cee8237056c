//! The content store: compressed chunk bytes named by digest, behind a small trait so tests can
//! inject failures at any step.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aq_pack::Digest;

/// Where chunk bytes live. Implementations must make `put` atomic (a reader sees the whole
/// value or none) and durable once `sync` returns.
pub trait BlobStore: Send + Sync {
    fn contains(&self, digest: &Digest) -> io::Result<bool>;
    /// Stores the bytes under `digest`, replacing any value there.
    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()>;
    /// Reads the bytes; `ErrorKind::NotFound` when absent.
    fn get(&self, digest: &Digest) -> io::Result<Vec<u8>>;
    /// Removes the value; absent values are not an error.
    fn remove(&self, digest: &Digest) -> io::Result<()>;
    /// Every stored digest (unordered).
    fn list(&self) -> io::Result<Vec<Digest>>;
    /// Makes every `put` so far durable (directory entries included).
    fn sync(&self) -> io::Result<()>;
}

/// A directory of files `ab/abcdef...` (two-hex-digit shards), each written to a temporary
/// file and renamed into place (atomic). Durability is batched: `sync` makes every `put` since
/// the last `sync` durable at once, with one `syncfs(2)` on Linux (a fsync per file costs about
/// half of a large save's time), or a fsync of each new file and its directory elsewhere.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Files and directories written since the last `sync`.
    dirty: Mutex<Dirty>,
}

#[derive(Debug, Default)]
struct Dirty {
    files: Vec<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store in `root`, with temporary files in `tmp` (same
    /// filesystem). Leftover temporary files from a crash are removed.
    pub fn open(root: &Path, tmp: &Path) -> io::Result<FsBlobStore> {
        fs::create_dir_all(root)?;
        fs::create_dir_all(tmp)?;
        for entry in fs::read_dir(tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(FsBlobStore {
            root: root.to_owned(),
            tmp: tmp.to_owned(),
            dirty: Mutex::new(Dirty::default()),
        })
    }

    fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, Dirty> {
        // A poisoned lock only means another thread panicked mid-update; the lists stay usable.
        match self.dirty.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl BlobStore for FsBlobStore {
    fn contains(&self, digest: &Digest) -> io::Result<bool> {
        self.path_of(digest).try_exists()
    }

    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        let target = self.path_of(digest);
        let shard = target
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&shard)?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        let tmp = self
            .tmp
            .join(format!("{}.{}", digest.to_hex(), u64::from_le_bytes(nonce)));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, &target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        let mut dirty = self.dirty();
        dirty.files.push(target);
        dirty.dirs.insert(shard);
        dirty.dirs.insert(self.root.clone());
        Ok(())
    }

    fn get(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.path_of(digest))
    }

    fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path_of(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                // Names that are not digests are not ours; leave them alone.
                if let Some(d) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn sync(&self) -> io::Result<()> {
        let pending = std::mem::take(&mut *self.dirty());
        if pending.files.is_empty() && pending.dirs.is_empty() {
            return Ok(());
        }
        let result = sync_all(&self.root, &pending);
        if result.is_err() {
            // Keep the work for the next attempt.
            let mut dirty = self.dirty();
            dirty.files.extend(pending.files);
            dirty.dirs.extend(pending.dirs);
        }
        result
    }
}

/// Makes the pending files and directory entries durable.
#[cfg(target_os = "linux")]
fn sync_all(root: &Path, _pending: &Dirty) -> io::Result<()> {
    // syncfs writes back and waits for every dirty page and inode of the filesystem, ours
    // included: one call instead of a fsync per chunk file.
    let dir = File::open(root)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn sync_all(_root: &Path, pending: &Dirty) -> io::Result<()> {
    for file in &pending.files {
        match File::open(file) {
            Ok(f) => f.sync_all()?,
            // Removed since (an abandoned writer cleaned up): nothing to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for dir in &pending.dirs {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
