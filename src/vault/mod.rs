//! The age-encrypted store: one file per namespace, one namespace per
//! Telegram user plus a `system` namespace for client registrations.
//!
//! Splitting by user keeps a write's cost independent of the number of
//! users (only the writer's file is re-encrypted) and makes "delete
//! everything of user N" a single file. Each namespace is loaded lazily and
//! cached decrypted in memory behind its own lock, so two users never wait
//! for each other and one user's writes are serialised.

mod file;
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
    #[error("vault: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "vault: the key in {origin} is not an age identity (expected a line starting with AGE-SECRET-KEY-1)"
    )]
    BadKey { origin: String },
    #[error(
        "vault: cannot decrypt {path} with the configured key ({reason}); was the identity replaced? Restore the old key or move the file away"
    )]
    Decrypt { path: PathBuf, reason: String },
    #[error("vault: {path} decrypted but is not a vault namespace ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error("vault: encryption failed: {0}")]
    Encrypt(String),
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
        self.update(ns, |entries| {
            entries.insert(key.to_owned(), value);
            true
        })
        .await
        .map(|_| ())
    }

    /// A JSON record. One that no longer parses (format change, manual
    /// edit) reads as absent: for tokens that means "connect again", which
    /// is the right answer, rather than an error on every command.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ns: Namespace,
        key: &str,
    ) -> Result<Option<T>, VaultError> {
        Ok(self
            .get(ns, key)
            .await?
            .and_then(|text| serde_json::from_str(text.expose()).ok()))
    }

    pub async fn put_json<T: serde::Serialize>(
        &self,
        ns: Namespace,
        key: &str,
        value: &T,
    ) -> Result<(), VaultError> {
        let text = serde_json::to_string(value).map_err(|e| VaultError::Encrypt(e.to_string()))?;
        self.put(ns, key, Secret::new(text)).await
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
        let ciphertext = self.seal(&next)?;
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
        let plaintext = Zeroizing::new(age::decrypt(&self.identity, &bytes).map_err(|error| {
            VaultError::Decrypt {
                path: path.clone(),
                reason: error.to_string(),
            }
        })?);
        let document: file::Document<BTreeMap<String, String>> = serde_json::from_slice(&plaintext)
            .map_err(|error| VaultError::Corrupt {
                path,
                reason: error.to_string(),
            })?;
        Ok(document.into_entries())
    }

    fn seal(&self, entries: &Entries) -> Result<Vec<u8>, VaultError> {
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&file::Document::borrow(entries))
                .map_err(|error| VaultError::Encrypt(error.to_string()))?,
        );
        age::encrypt(&self.recipient, &plaintext)
            .map_err(|error| VaultError::Encrypt(error.to_string()))
    }
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
        assert!(error.to_string().contains("user-7.age"));
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
