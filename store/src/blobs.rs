//! The content store: compressed chunk bytes named by digest, behind a small trait so tests can
//! inject failures at any step.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aq_pack::Digest;

/// Where chunk bytes live. After `sync` returns, every `put` before it is complete and
/// durable. Before that a `put` may be seen partly written: the registry never reads a chunk
/// whose row it has not committed, and it commits rows only after `sync`.
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

/// A directory of files `ab/abcdef...` (256 two-hex-digit shards, made when the store is
/// opened). A `put` is one create-write-close of the final file: no temporary file and rename,
/// since the registry's row protocol already hides unfinished files (a crash mid-write leaves a
/// file without a row, which the next `put` of that chunk overwrites or `gc` removes).
/// Durability is batched: `sync` makes every `put` since the last `sync` durable at once, with
/// one `syncfs(2)` on Linux (a fsync per file cost about half of a large save's time), or a
/// fsync of each new file and its directory elsewhere.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Files and directories written since the last `sync`.
    dirty: Mutex<Dirty>,
}

#[derive(Debug, Default)]
struct Dirty {
    files: Vec<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store in `root`.
    pub fn open(root: &Path) -> io::Result<FsBlobStore> {
        // The last shard is made last, so its presence means all 256 exist.
        if !root.join("ff").is_dir() {
            for shard in 0..=255u8 {
                fs::create_dir_all(root.join(format!("{shard:02x}")))?;
            }
        }
        Ok(FsBlobStore {
            root: root.to_owned(),
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
        File::create(&target)?.write_all(bytes)?;
        let mut dirty = self.dirty();
        if let Some(shard) = target.parent() {
            dirty.dirs.insert(shard.to_owned());
        }
        dirty.files.push(target);
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
