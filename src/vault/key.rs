//! Where the vault's age identity comes from.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use age::secrecy::ExposeSecret;

use super::VaultError;

/// The environment variable that, when set, holds the identity itself
/// (`AGE-SECRET-KEY-1…`), e.g. from a container secret.
pub const KEY_ENV: &str = "MCPGRAM_VAULT_KEY";

#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key file, created with mode 0600 on first start.
    File(PathBuf),
    /// The identity text itself, read from [`KEY_ENV`].
    Inline(crate::secret::Secret),
}

impl KeySource {
    /// The environment's key when [`KEY_ENV`] is set, else `file`.
    pub fn from_env_or_file(file: PathBuf) -> Self {
        match std::env::var(KEY_ENV) {
            Ok(value) if !value.trim().is_empty() => {
                KeySource::Inline(crate::secret::Secret::new(value))
            }
            _ => KeySource::File(file),
        }
    }

    /// The identity, which must exist already.
    pub(super) fn load_existing(&self) -> Result<age::x25519::Identity, VaultError> {
        match self {
            KeySource::Inline(text) => parse(text.expose(), KEY_ENV.to_owned()),
            KeySource::File(path) => match fs::read_to_string(path) {
                Ok(text) => parse(&text, path.display().to_string()),
                Err(source) => Err(VaultError::Io {
                    action: "read key file",
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    pub(super) fn load_or_create(&self) -> Result<age::x25519::Identity, VaultError> {
        match self {
            KeySource::Inline(text) => parse(text.expose(), KEY_ENV.to_owned()),
            KeySource::File(path) => match fs::read_to_string(path) {
                Ok(text) => parse(&text, path.display().to_string()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => create(path),
                Err(source) => Err(VaultError::Io {
                    action: "read key file",
                    path: path.clone(),
                    source,
                }),
            },
        }
    }
}

/// Accepts the format `age-keygen` writes: comment lines, then the key.
fn parse(text: &str, origin: String) -> Result<age::x25519::Identity, VaultError> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .and_then(|line| line.parse::<age::x25519::Identity>().ok())
        .ok_or(VaultError::BadKey { origin })
}

/// A new identity in a new file (mode 0600); an existing file is an error.
pub(super) fn write_new(path: &std::path::Path) -> Result<age::x25519::Identity, VaultError> {
    create(&path.to_owned())
}

fn create(path: &PathBuf) -> Result<age::x25519::Identity, VaultError> {
    let identity = age::x25519::Identity::generate();
    let io = |action| {
        move |source| VaultError::Io {
            action,
            path: path.clone(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::file::create_private_dir(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io("create key file"))?;
    let text = format!(
        "# mcpgram vault identity (age x25519). Losing it makes the vault unreadable.\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    let text = zeroize::Zeroizing::new(text);
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write key file"))?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reused() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("keys/identity.txt");
        let source = KeySource::File(path.clone());
        let first = source.load_or_create().unwrap();
        let second = source.load_or_create().unwrap();
        assert_eq!(
            first.to_public().to_string(),
            second.to_public().to_string()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_bad_key_is_named_not_panicked() {
        let source = KeySource::Inline(crate::secret::Secret::new("nonsense"));
        assert!(matches!(
            source.load_or_create(),
            Err(VaultError::BadKey { origin }) if origin == KEY_ENV
        ));
    }
}
