//! On-disk layout of one namespace and the crash-safe way it is replaced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::{Entries, VaultError};
use crate::secret::Secret;

const FORMAT_VERSION: u32 = 1;

/// The plaintext inside an age file. Versioned so a later layout can be
/// read side by side with this one.
#[derive(Serialize, Deserialize)]
pub(super) struct Document<E> {
    version: u32,
    entries: E,
}

impl<'a> Document<BTreeMap<&'a str, &'a str>> {
    pub(super) fn borrow(entries: &'a Entries) -> Self {
        Self {
            version: FORMAT_VERSION,
            entries: entries
                .iter()
                .map(|(key, value)| (key.as_str(), value.expose()))
                .collect(),
        }
    }
}

impl Document<BTreeMap<String, String>> {
    pub(super) fn into_entries(mut self) -> Entries {
        let entries = std::mem::take(&mut self.entries);
        entries
            .into_iter()
            .map(|(key, mut value)| {
                let secret = Secret::new(value.as_str());
                value.zeroize();
                (key, secret)
            })
            .collect()
    }
}

/// Creates `dir` (and parents) with mode 0700 where it does not exist yet.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), VaultError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| VaultError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Replaces `path` so that a crash leaves either the old or the new file:
/// write a temporary sibling, fsync it, rename it over the target, then
/// fsync the directory so the rename itself is durable.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| VaultError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));

    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp).map_err(io("create", &temp))?;
        file.write_all(bytes).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("sync", &temp))?;
        drop(file);
        fs::rename(&temp, path).map_err(io("replace", path))?;
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Overwrites `path` with zeros, syncs, then unlinks it; answers whether
/// it existed. A deleted record leaves no readable copy behind in a file
/// that something still holds open or in a backup of the directory.
pub(super) fn shred(path: &Path) -> Result<bool, VaultError> {
    let io = |action: &'static str| {
        let path = path.to_owned();
        move |source| VaultError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io("open")(source)),
    };
    let len = file.metadata().map_err(io("stat"))?.len();
    let zeros = vec![0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).map_err(io("overwrite"))?;
        left -= n as u64;
    }
    file.sync_all().map_err(io("sync"))?;
    drop(file);
    fs::remove_file(path).map_err(io("remove"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync directory"))?;
    }
    Ok(true)
}

/// Temp files a crash left behind (`.name.pid.rand.tmp`) in `dir` and its
/// subfolders, shredded: they may hold tokens deleted since.
pub(super) fn remove_stale_temps(dir: &Path) -> Result<usize, VaultError> {
    let mut removed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed += remove_stale_temps(&path)?;
        } else if name.starts_with('.') && name.ends_with(".tmp") && shred(&path)? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("user-1.age");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("user-1.age")]);
    }

    #[test]
    fn stale_temps_are_removed_and_records_kept() {
        let temp = tempfile::tempdir().unwrap();
        let nested = temp.path().join("flows");
        fs::create_dir(&nested).unwrap();
        fs::write(temp.path().join(".user-1.age.7.9.tmp"), b"old tokens").unwrap();
        fs::write(nested.join(".x.age.7.9.tmp"), b"old flow").unwrap();
        fs::write(temp.path().join("user-1.age"), b"kept").unwrap();
        assert_eq!(remove_stale_temps(temp.path()).unwrap(), 2);
        let mut left: Vec<_> = fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec!["flows", "user-1.age"]);
        assert_eq!(fs::read_dir(&nested).unwrap().count(), 0);
    }

    #[test]
    fn shredding_reports_whether_there_was_a_file() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("r.age");
        fs::write(&path, b"secret").unwrap();
        assert!(shred(&path).unwrap());
        assert!(!path.exists());
        assert!(!shred(&path).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn vault_files_and_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("nested/vault");
        create_private_dir(&dir).unwrap();
        let path = dir.join("system.age");
        write_atomic(&path, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
    }
}
