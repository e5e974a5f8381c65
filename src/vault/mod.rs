//! The age-encrypted store: one file per namespace, one namespace per
//! Telegram user plus a `system` namespace for client registrations.
//!
//! Splitting by user keeps a write's cost independent of the number of
//! users (only the writer's file is re-encrypted) and makes "delete
//! everything of user N" a single file. Each namespace is loaded lazily and
//! cached decrypted in memory behind its own lock, so two users never wait
//! for each other and one user's writes are serialised. Records that come
//! and go by the thousand (pending flows) go to a [`journal`] instead.

pub mod admin;
mod file;
pub mod journal;
mod key;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::secret::Secret;

pub use key::KeySource;

/// Whose data a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Shared by the bot itself: OAuth client registrations and the like.
    System,
    /// One Telegram user.
    User(u64),
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespace::System => f.write_str("the system namespace"),
            Namespace::User(id) => write!(f, "the namespace of user {id}"),
        }
    }
}

impl Namespace {
    fn file_name(self) -> String {
        match self {
            Namespace::System => "system.age".to_owned(),
            Namespace::User(id) => format!("user-{id}.age"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault: cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "vault: the key in {origin} is not an age identity (expected a line starting with AGE-SECRET-KEY-1)"
    )]
    BadKey { origin: String },
    #[error(
        "vault: cannot decrypt {path} with the configured key; was the identity replaced? Restore the old key or move the file away"
    )]
    Decrypt {
        path: PathBuf,
        #[source]
        source: Box<age::DecryptError>,
    },
    #[error("vault: {path} decrypted but is not a vault namespace")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("vault: cannot encrypt {namespace}")]
    Encrypt {
        namespace: String,
        #[source]
        source: Box<age::EncryptError>,
    },
    /// A record was written by another version or edited by hand. It is
    /// reported rather than read as absent: for tokens, "absent" would mean
    /// "not connected" and hide the problem behind a fresh login.
    #[error("vault: record {key} in {namespace} does not parse")]
    Record {
        namespace: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A value sealed for another store (a database row) that the
    /// configured key cannot open.
    #[error(
        "vault: cannot decrypt {what} with the configured key; was the identity replaced? Restore the old key"
    )]
    Unseal {
        what: String,
        #[source]
        source: Box<age::DecryptError>,
    },
    #[error("vault: {what} decrypted but does not parse")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("vault: cannot serialize record {key}")]
    Serialize {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One change of a [`Vault::apply`] batch.
#[derive(Debug)]
pub enum Change {
    Put(String, Secret),
    Remove(String),
}

impl Change {
    /// A JSON record to write.
    pub fn put_json<T: serde::Serialize>(key: &str, value: &T) -> Result<Self, VaultError> {
        let text = serde_json::to_string(value).map_err(|source| VaultError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        Ok(Change::Put(key.to_owned(), Secret::new(text)))
    }
}

type Entries = BTreeMap<String, Secret>;

/// Handle to the vault directory; cheap to share behind an `Arc`.
pub struct Vault {
    dir: PathBuf,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    /// `None` inside the mutex means "not loaded yet".
    namespaces: DashMap<Namespace, Arc<Mutex<Option<Entries>>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (creating with mode 0700 if needed) the vault directory and
    /// loads or creates the identity.
    pub fn open(dir: &Path, key: &KeySource) -> Result<Self, VaultError> {
        file::create_private_dir(dir)?;
        let stale = file::remove_stale_temps(dir)?;
        if stale > 0 {
            tracing::info!(
                count = stale,
                "removed temp files an interrupted write left in the vault"
            );
        }
        let identity = key.load_or_create()?;
        let recipient = identity.to_public();
        Ok(Self {
            dir: dir.to_owned(),
            identity,
            recipient,
            namespaces: DashMap::new(),
        })
    }

    pub async fn get(&self, ns: Namespace, key: &str) -> Result<Option<Secret>, VaultError> {
        let slot = self.slot(ns);
        let mut guard = slot.lock().await;
        Ok(self.loaded(ns, &mut guard).await?.get(key).cloned())
    }

    pub async fn put(&self, ns: Namespace, key: &str, value: Secret) -> Result<(), VaultError> {
        self.apply(ns, vec![Change::Put(key.to_owned(), value)])
            .await
            .map(|_| ())
    }

    /// A JSON record; one that does not parse is an error (see
    /// [`VaultError::Record`]).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ns: Namespace,
        key: &str,
    ) -> Result<Option<T>, VaultError> {
        let Some(text) = self.get(ns, key).await? else {
            return Ok(None);
        };
        serde_json::from_str(text.expose())
            .map(Some)
            .map_err(|source| VaultError::Record {
                namespace: ns.to_string(),
                key: key.to_owned(),
                source,
            })
    }

    pub async fn put_json<T: serde::Serialize>(
        &self,
        ns: Namespace,
        key: &str,
        value: &T,
    ) -> Result<(), VaultError> {
        self.apply(ns, vec![Change::put_json(key, value)?])
            .await
            .map(|_| ())
    }

    /// Applies every change in one write of the namespace: either all of
    /// them reach the disk or none does. Answers whether anything changed.
    pub async fn apply(&self, ns: Namespace, changes: Vec<Change>) -> Result<bool, VaultError> {
        self.update(ns, |entries| {
            let mut changed = false;
            for change in changes {
                changed |= match change {
                    Change::Put(key, value) => entries.insert(key, value.clone()) != Some(value),
                    Change::Remove(key) => entries.remove(&key).is_some(),
                };
            }
            changed
        })
        .await
    }

    /// Removes one key; answers whether it was there.
    pub async fn remove(&self, ns: Namespace, key: &str) -> Result<bool, VaultError> {
        self.update(ns, |entries| entries.remove(key).is_some())
            .await
    }

    /// Removes every key starting with `prefix`; answers whether any was there.
    pub async fn remove_prefix(&self, ns: Namespace, prefix: &str) -> Result<bool, VaultError> {
        self.update(ns, |entries| {
            let before = entries.len();
            entries.retain(|key, _| !key.starts_with(prefix));
            entries.len() != before
        })
        .await
    }

    pub async fn keys(&self, ns: Namespace) -> Result<Vec<String>, VaultError> {
        let slot = self.slot(ns);
        let mut guard = slot.lock().await;
        Ok(self.loaded(ns, &mut guard).await?.keys().cloned().collect())
    }

    /// Applies `change` and writes the namespace if `change` says it changed
    /// something. On a failed write the cache is dropped, so memory never
    /// claims what the disk does not hold.
    async fn update(
        &self,
        ns: Namespace,
        change: impl FnOnce(&mut Entries) -> bool,
    ) -> Result<bool, VaultError> {
        let slot = self.slot(ns);
        let mut guard = slot.lock().await;
        let entries = self.loaded(ns, &mut guard).await?;
        let mut next = entries.clone();
        if !change(&mut next) {
            return Ok(false);
        }
        let ciphertext = self.seal(ns, &next)?;
        let path = self.path(ns);
        match tokio::task::spawn_blocking(move || file::write_atomic(&path, &ciphertext)).await {
            Ok(Ok(())) => {
                *guard = Some(next);
                Ok(true)
            }
            Ok(Err(error)) => {
                *guard = None;
                Err(error)
            }
            Err(join) => {
                *guard = None;
                Err(VaultError::Io {
                    action: "write",
                    path: self.path(ns),
                    source: std::io::Error::other(join.to_string()),
                })
            }
        }
    }

    /// `value` as JSON encrypted to the vault's identity, for a store that
    /// keeps it elsewhere (a record file, a database row): whoever holds
    /// the bytes without the key learns nothing. `what` names it in errors.
    pub fn seal_value<T: serde::Serialize>(
        &self,
        what: &str,
        value: &T,
    ) -> Result<Vec<u8>, VaultError> {
        let plaintext =
            Zeroizing::new(
                serde_json::to_vec(value).map_err(|source| VaultError::Serialize {
                    key: what.to_owned(),
                    source,
                })?,
            );
        age::encrypt(&self.recipient, &plaintext).map_err(|source| VaultError::Encrypt {
            namespace: what.to_owned(),
            source: Box::new(source),
        })
    }

    /// The value [`Vault::seal_value`] sealed.
    pub fn open_value<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, VaultError> {
        let plaintext = Zeroizing::new(age::decrypt(&self.identity, bytes).map_err(|source| {
            VaultError::Unseal {
                what: what.to_owned(),
                source: Box::new(source),
            }
        })?);
        serde_json::from_slice(&plaintext).map_err(|source| VaultError::Unreadable {
            what: what.to_owned(),
            source,
        })
    }

    /// Writes `value` as its own encrypted file `<dir>/<folder>/<name>.age`,
    /// atomically: records that come and go on their own (pending flows)
    /// cost one small file each instead of a rewrite of a namespace.
    pub async fn put_record<T: serde::Serialize>(
        &self,
        folder: &str,
        name: &str,
        value: &T,
    ) -> Result<(), VaultError> {
        let ciphertext = self.seal_value(&format!("{folder}/{name}"), value)?;
        let dir = self.dir.join(folder);
        let path = dir.join(format!("{name}.age"));
        blocking(path.clone(), move || {
            file::create_private_dir(&dir)?;
            file::write_atomic(&path, &ciphertext)
        })
        .await
    }

    /// Opens the journal `<dir>/<name>.journal` (see [`journal`]) and its
    /// live records, sealed: records that come and go cost an append
    /// each, not a file.
    pub async fn open_journal(
        &self,
        name: &str,
    ) -> Result<(journal::Journal, journal::Records), VaultError> {
        self.open_journal_file(&format!("{name}.journal")).await
    }

    /// Opens the notes `<dir>/<name>.notes`: a journal like
    /// [`Vault::open_journal`]'s, whose records are not sealed. For what
    /// is not secret and changes often beside a sealed record (where a
    /// flow's link was posted), so that it costs an append, not a
    /// record sealed again (an X25519 agreement each).
    pub async fn open_notes(
        &self,
        name: &str,
    ) -> Result<(journal::Journal, journal::Records), VaultError> {
        self.open_journal_file(&format!("{name}.notes")).await
    }

    async fn open_journal_file(
        &self,
        file_name: &str,
    ) -> Result<(journal::Journal, journal::Records), VaultError> {
        let path = self.dir.join(file_name);
        blocking(path.clone(), move || journal::Journal::open(&path)).await
    }

    /// Deletes a record file; answers whether it was there. The file is
    /// overwritten before it is unlinked, so no readable copy is left.
    pub async fn remove_record(&self, folder: &str, name: &str) -> Result<bool, VaultError> {
        let path = self.dir.join(folder).join(format!("{name}.age"));
        blocking(path.clone(), move || file::shred(&path)).await
    }

    /// Every record of `folder`, by name. A file that cannot be decrypted
    /// or parsed is reported with the others, not as a reason to fail.
    pub async fn records<T: serde::de::DeserializeOwned>(
        &self,
        folder: &str,
    ) -> Result<Vec<(String, Result<T, VaultError>)>, VaultError> {
        let dir = self.dir.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VaultError::Io {
                    action: "list",
                    path: dir,
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".age"))
                .filter(|n| !n.starts_with('.'))
                .map(str::to_owned)
            else {
                continue;
            };
            let record = match tokio::fs::read(&path).await {
                Ok(bytes) => self.open_record(&path, &bytes),
                Err(source) => Err(VaultError::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                }),
            };
            out.push((name, record));
        }
        Ok(out)
    }

    fn open_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<T, VaultError> {
        let plaintext = Zeroizing::new(age::decrypt(&self.identity, bytes).map_err(|source| {
            VaultError::Decrypt {
                path: path.to_owned(),
                source: Box::new(source),
            }
        })?);
        serde_json::from_slice(&plaintext).map_err(|source| VaultError::Corrupt {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and decrypts the system namespace from disk, past the cache:
    /// the vault is there and its key still fits (for readiness checks).
    pub async fn check(&self) -> Result<(), VaultError> {
        self.read(Namespace::System).await.map(|_| ())
    }

    fn slot(&self, ns: Namespace) -> Arc<Mutex<Option<Entries>>> {
        self.namespaces.entry(ns).or_default().clone()
    }

    fn path(&self, ns: Namespace) -> PathBuf {
        self.dir.join(ns.file_name())
    }

    async fn loaded<'a>(
        &self,
        ns: Namespace,
        slot: &'a mut Option<Entries>,
    ) -> Result<&'a mut Entries, VaultError> {
        if slot.is_none() {
            *slot = Some(self.read(ns).await?);
        }
        Ok(slot.get_or_insert_with(Entries::new))
    }

    async fn read(&self, ns: Namespace) -> Result<Entries, VaultError> {
        let path = self.path(ns);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Entries::new());
            }
            Err(source) => {
                return Err(VaultError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let plaintext = Zeroizing::new(age::decrypt(&self.identity, &bytes).map_err(|source| {
            VaultError::Decrypt {
                path: path.clone(),
                source: Box::new(source),
            }
        })?);
        let document: file::Document<BTreeMap<String, String>> = serde_json::from_slice(&plaintext)
            .map_err(|source| VaultError::Corrupt { path, source })?;
        Ok(document.into_entries())
    }

    fn seal(&self, ns: Namespace, entries: &Entries) -> Result<Vec<u8>, VaultError> {
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&file::Document::borrow(entries)).map_err(|source| {
                VaultError::Serialize {
                    key: ns.to_string(),
                    source,
                }
            })?,
        );
        age::encrypt(&self.recipient, &plaintext).map_err(|source| VaultError::Encrypt {
            namespace: ns.to_string(),
            source: Box::new(source),
        })
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(VaultError::Io {
                action: "write",
                path,
                source: std::io::Error::other(join),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Vault {
        Vault::open(dir, &KeySource::File(dir.join("identity.txt"))).unwrap()
    }

    #[tokio::test]
    async fn round_trip_survives_reopen_and_stays_encrypted() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        let alice = Namespace::User(1001);
        vault
            .put(
                alice,
                "mcp.oauth.demo.credentials",
                Secret::new("tok-SECRET-123"),
            )
            .await
            .unwrap();
        assert_eq!(
            vault
                .get(alice, "mcp.oauth.demo.credentials")
                .await
                .unwrap(),
            Some(Secret::new("tok-SECRET-123"))
        );
        drop(vault);

        let reopened = open(temp.path());
        assert_eq!(
            reopened
                .get(alice, "mcp.oauth.demo.credentials")
                .await
                .unwrap()
                .unwrap()
                .expose(),
            "tok-SECRET-123"
        );
        for entry in std::fs::read_dir(temp.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(14).any(|w| w == b"tok-SECRET-123"));
        }
    }

    #[tokio::test]
    async fn users_do_not_see_each_other() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        let (alice, bob) = (Namespace::User(1), Namespace::User(2));
        vault.put(alice, "k", Secret::new("alice")).await.unwrap();
        assert_eq!(vault.get(bob, "k").await.unwrap(), None);
        vault.put(bob, "k", Secret::new("bob")).await.unwrap();
        assert_eq!(
            vault.get(alice, "k").await.unwrap().unwrap().expose(),
            "alice"
        );
        assert!(temp.path().join("user-1.age").exists());
        assert!(temp.path().join("user-2.age").exists());
        assert!(vault.remove(alice, "k").await.unwrap());
        assert!(!vault.remove(alice, "k").await.unwrap());
        assert_eq!(vault.get(bob, "k").await.unwrap().unwrap().expose(), "bob");
    }

    #[tokio::test]
    async fn remove_prefix_and_keys() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        let ns = Namespace::System;
        for key in ["a.1", "a.2", "b.1"] {
            vault.put(ns, key, Secret::new(key)).await.unwrap();
        }
        assert!(vault.remove_prefix(ns, "a.").await.unwrap());
        assert_eq!(vault.keys(ns).await.unwrap(), vec!["b.1".to_owned()]);
    }

    #[tokio::test]
    async fn a_different_key_cannot_decrypt_and_says_so() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        vault
            .put(Namespace::User(7), "k", Secret::new("v"))
            .await
            .unwrap();
        std::fs::remove_file(temp.path().join("identity.txt")).unwrap();
        let other = open(temp.path());
        let error = other.get(Namespace::User(7), "k").await.unwrap_err();
        assert!(matches!(error, VaultError::Decrypt { .. }), "{error}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "the cause is kept"
        );
        assert!(error.to_string().contains("user-7.age"));
    }

    #[tokio::test]
    async fn a_record_that_does_not_parse_is_an_error_not_absent() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        let ns = Namespace::User(3);
        vault
            .put(ns, "rec", Secret::new("{not json"))
            .await
            .unwrap();
        let error = vault
            .get_json::<serde_json::Value>(ns, "rec")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, VaultError::Record { key, .. } if key == "rec"),
            "{error}"
        );
        assert_eq!(
            vault
                .get_json::<serde_json::Value>(ns, "absent")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_batch_is_written_at_once() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        let ns = Namespace::User(4);
        vault.put(ns, "old", Secret::new("x")).await.unwrap();
        let changed = vault
            .apply(
                ns,
                vec![
                    Change::put_json("a", &1).unwrap(),
                    Change::put_json("b", &2).unwrap(),
                    Change::Remove("old".into()),
                ],
            )
            .await
            .unwrap();
        assert!(changed);
        let reopened = open(temp.path());
        assert_eq!(reopened.keys(ns).await.unwrap(), vec!["a", "b"]);
        assert!(
            !vault
                .apply(ns, vec![Change::put_json("a", &1).unwrap()])
                .await
                .unwrap(),
            "an identical write changes nothing"
        );
    }

    #[tokio::test]
    async fn garbage_file_is_reported_not_panicked() {
        let temp = tempfile::tempdir().unwrap();
        let vault = open(temp.path());
        std::fs::write(temp.path().join("user-9.age"), b"not age at all").unwrap();
        assert!(matches!(
            vault.get(Namespace::User(9), "k").await,
            Err(VaultError::Decrypt { .. })
        ));
    }
}
