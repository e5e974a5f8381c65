//! What an admin does to the vault from the terminal, with the bot
//! stopped: see who has data (never the secrets), forget a user, keep
//! secrets that `${NAME}` in the config may reference, and re-encrypt
//! everything under a new identity.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{KeySource, Namespace, Vault, VaultError, file, key};

/// Keys of admin secrets in the system namespace.
const SECRET_PREFIX: &str = "secret.";

pub fn secret_key(name: &str) -> String {
    format!("{SECRET_PREFIX}{name}")
}

impl Vault {
    /// Every user namespace on disk.
    pub fn users(&self) -> Result<Vec<u64>, VaultError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| VaultError::Io {
            action: "list",
            path: self.dir.clone(),
            source,
        })?;
        let mut users: Vec<u64> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix("user-")?
                    .strip_suffix(".age")?
                    .parse()
                    .ok()
            })
            .collect();
        users.sort_unstable();
        Ok(users)
    }

    /// Deletes a namespace's file (overwritten first); answers whether it
    /// was there.
    pub async fn forget(&self, ns: Namespace) -> Result<bool, VaultError> {
        let slot = self.slot(ns);
        let mut guard = slot.lock().await;
        let path = self.path(ns);
        let removed = super::blocking(path.clone(), move || file::shred(&path)).await?;
        *guard = None;
        Ok(removed)
    }

    /// The names of the admin secrets kept for `${NAME}`.
    pub async fn secret_names(&self) -> Result<Vec<String>, VaultError> {
        Ok(self
            .keys(Namespace::System)
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(SECRET_PREFIX).map(str::to_owned))
            .collect())
    }
}

/// How a key rotation went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Files re-encrypted now.
    pub rotated: usize,
    /// Files a previous, interrupted run had already done.
    pub already: usize,
}

/// Re-encrypts every file of the vault in `dir` (namespaces and records)
/// from the identity in `key_file` to a new one, then makes the new one
/// current and keeps the old one as `<key_file>.old`. The new identity is
/// written to `<key_file>.new` before any file changes, and each file is
/// replaced atomically, so a run that is interrupted resumes where it
/// stopped when started again. The bot must be stopped meanwhile.
pub fn rotate_key(dir: &Path, key_file: &Path) -> Result<Rotation, VaultError> {
    let old = KeySource::File(key_file.to_owned()).load_existing()?;
    let next_file = with_suffix(key_file, "new");
    let next = if next_file.exists() {
        KeySource::File(next_file.clone()).load_existing()?
    } else {
        key::write_new(&next_file)?
    };
    let recipient = next.to_public();
    let mut rotation = Rotation::default();
    for path in vault_files(dir)? {
        let bytes = fs::read(&path).map_err(|source| VaultError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        if age::decrypt(&next, &bytes).is_ok() {
            rotation.already += 1;
            continue;
        }
        let plaintext =
            Zeroizing::new(
                age::decrypt(&old, &bytes).map_err(|source| VaultError::Decrypt {
                    path: path.clone(),
                    source: Box::new(source),
                })?,
            );
        let sealed =
            age::encrypt(&recipient, &plaintext).map_err(|source| VaultError::Encrypt {
                namespace: path.display().to_string(),
                source: Box::new(source),
            })?;
        file::write_atomic(&path, &sealed)?;
        rotation.rotated += 1;
    }
    // Journals: every live record re-sealed, each file rewritten at once.
    for path in journal_files(dir)? {
        rotation.rotated += super::journal::reseal(&path, |sealed| {
            if age::decrypt(&next, sealed).is_ok() {
                return Ok(sealed.to_vec());
            }
            let plaintext = Zeroizing::new(age::decrypt(&old, sealed).map_err(|source| {
                VaultError::Decrypt {
                    path: path.clone(),
                    source: Box::new(source),
                }
            })?);
            age::encrypt(&recipient, &plaintext).map_err(|source| VaultError::Encrypt {
                namespace: path.display().to_string(),
                source: Box::new(source),
            })
        })?;
    }
    let kept = with_suffix(key_file, "old");
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|source| VaultError::Io {
            action: "rename",
            path: from.to_owned(),
            source,
        })
    };
    rename(key_file, &kept)?;
    rename(&next_file, key_file)?;
    Ok(rotation)
}

/// `identity.txt` → `identity.txt.<suffix>`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// The vault's journals (`<name>.journal` at its top).
fn journal_files(dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    let entries = fs::read_dir(dir).map_err(|source| VaultError::Io {
        action: "list",
        path: dir.to_owned(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|e| e == "journal"))
        .collect();
    out.sort();
    Ok(out)
}

/// Every `.age` file of the vault, records' folders included.
fn vault_files(dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    let mut out = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = fs::read_dir(&folder).map_err(|source| VaultError::Io {
            action: "list",
            path: folder.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "age")
                && !path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[tokio::test]
    async fn rotation_re_encrypts_everything_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let vault_dir = dir.path().join("vault");
        let key_file = dir.path().join("identity.txt");
        let vault = Vault::open(&vault_dir, &KeySource::File(key_file.clone())).unwrap();
        vault
            .put(Namespace::User(7), "mcp.token.demo", Secret::new("t0k"))
            .await
            .unwrap();
        vault
            .put(Namespace::System, "vault.format", Secret::new("1"))
            .await
            .unwrap();
        vault
            .put_record("flows", "abc", &serde_json::json!({"a": 1}))
            .await
            .unwrap();
        {
            let (journal, _) = vault.open_journal("flows").await.unwrap();
            let sealed = vault
                .seal_value("flows", &serde_json::json!({"b": 2}))
                .unwrap();
            journal.put([1; 32], sealed).await.unwrap();
        }
        drop(vault);

        // An interrupted run: the new key written, one file done.
        let next = key::write_new(&with_suffix(&key_file, "new")).unwrap();
        let one = vault_dir.join("system.age");
        let old = KeySource::File(key_file.clone()).load_existing().unwrap();
        let plain = age::decrypt(&old, &fs::read(&one).unwrap()).unwrap();
        file::write_atomic(&one, &age::encrypt(&next.to_public(), &plain).unwrap()).unwrap();

        let rotation = rotate_key(&vault_dir, &key_file).unwrap();
        assert_eq!(
            rotation,
            Rotation {
                rotated: 3,
                already: 1
            }
        );
        assert!(with_suffix(&key_file, "old").exists());
        assert!(!with_suffix(&key_file, "new").exists());

        let vault = Vault::open(&vault_dir, &KeySource::File(key_file)).unwrap();
        let token = vault
            .get(Namespace::User(7), "mcp.token.demo")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(token.expose(), "t0k");
        let records: Vec<(String, Result<serde_json::Value, VaultError>)> =
            vault.records("flows").await.unwrap();
        assert!(records[0].1.is_ok());
        let (_journal, live) = vault.open_journal("flows").await.unwrap();
        let value: serde_json::Value = vault.open_value("flows", &live[0].1).unwrap();
        assert_eq!(value["b"], 2, "the journal's record opens with the new key");
    }

    #[tokio::test]
    async fn users_are_listed_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), &KeySource::File(dir.path().join("k"))).unwrap();
        for user in [30, 4] {
            vault
                .put(Namespace::User(user), "x", Secret::new("y"))
                .await
                .unwrap();
        }
        assert_eq!(vault.users().unwrap(), vec![4, 30]);
        assert!(vault.forget(Namespace::User(4)).await.unwrap());
        assert!(!vault.forget(Namespace::User(4)).await.unwrap());
        assert_eq!(vault.users().unwrap(), vec![30]);
        assert!(vault.keys(Namespace::User(4)).await.unwrap().is_empty());
    }
}
