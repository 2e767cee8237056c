//! Writing a whole file so that a crash leaves the old content or the new, never a mix, and
//! so that a secret is never readable by others, not even for a moment: the one way `aq` and
//! `aq-sync` write keys, tokens and configs.
//!
//! A temporary file beside the target is created new (never following a planted file or
//! link) with the final mode set before any byte is written, filled, synced, then renamed
//! over the target (or linked to it, when the target must not exist yet), and the directory
//! synced. A replaced file takes the new mode: an old 0644 token file does not stay 0644.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The owner only (0600): keys, tokens, configs holding tokens.
    Private,
    /// Anyone (0644): public keys, certificates, policies.
    Public,
}

/// What happens when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Refuse with [`std::io::ErrorKind::AlreadyExists`] and leave it as it was.
    Keep,
}

fn temporary(path: &Path, attempt: u32) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{}.{attempt}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically with `mode` (see the module docs). Creates the parent
/// directory if needed.
pub fn write(path: &Path, bytes: &[u8], mode: Mode, existing: Existing) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    if existing == Existing::Keep && fs::symlink_metadata(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    let (tmp, mut file) = create_temporary(path, mode)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| match existing {
            Existing::Replace => fs::rename(&tmp, path),
            // A link fails if the target appeared meanwhile: no clobbering.
            Existing::Keep => fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp)),
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn create_temporary(path: &Path, mode: Mode) -> std::io::Result<(PathBuf, fs::File)> {
    let mut attempt = 0;
    loop {
        let tmp = temporary(path, attempt);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(match mode {
                Mode::Private => 0o600,
                Mode::Public => 0o644,
            });
        }
        match options.open(&tmp) {
            Ok(file) => {
                // The umask may have narrowed a public file; a private one it cannot widen.
                #[cfg(unix)]
                if mode == Mode::Public {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(fs::Permissions::from_mode(0o644))?;
                }
                #[cfg(not(unix))]
                let _ = mode;
                return Ok((tmp, file));
            }
            // Left by a crashed writer of the same pid, or planted: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    #[cfg(unix)]
    fn a_private_file_is_0600_even_when_it_replaces_a_public_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"secret\n", Mode::Private, Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret\n");
        assert_eq!(mode_of(&path), 0o600);
        write(&path, b"public\n", Mode::Public, Existing::Replace).unwrap();
        assert_eq!(mode_of(&path), 0o644);
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn keep_refuses_an_existing_target_and_leaves_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        write(&path, b"first", Mode::Private, Existing::Keep).unwrap();
        let e = write(&path, b"second", Mode::Private, Existing::Keep).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    #[cfg(unix)]
    fn a_planted_temporary_file_or_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        // Someone links the first temporary name to another file.
        std::os::unix::fs::symlink(&victim, temporary(&path, 0)).unwrap();
        write(&path, b"config", Mode::Private, Existing::Replace).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(fs::read(&path).unwrap(), b"config");
    }
}
