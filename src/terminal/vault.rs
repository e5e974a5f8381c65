//! `mcpgram vault …`: the admin's view of the vault, and its words. Never
//! prints a secret: only who has data for which server.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::secret::Secret;
use crate::vault::admin::{rotate_key, secret_key};
use crate::vault::{KeySource, Namespace, Vault};

/// The vault directory and key file the config file at `config` names,
/// and the file's text.
fn location(config: &Path) -> Result<(PathBuf, PathBuf, String), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|error| format!("cannot read {}: {error}", config.display()))?;
    let (dir, key_file) = crate::config::vault_location(&text)
        .ok_or_else(|| format!("{} is not valid TOML", config.display()))?;
    Ok((dir, key_file, text))
}

/// The vault named in the config file at `config`, opened (and created,
/// with its key, if it does not exist yet).
fn open(config: &Path) -> Result<(Vault, PathBuf, PathBuf), String> {
    let (dir, key_file, _) = location(config)?;
    let key = KeySource::from_env_or_file(key_file.clone());
    let vault =
        Vault::open(&dir, &key).map_err(|error| crate::logging::chain(&error).to_string())?;
    Ok((vault, dir, key_file))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mcpgram: {}", crate::logging::scrub(&message.to_string()));
    ExitCode::FAILURE
}

/// Users and what they hold, per server; the admin secrets' names.
pub async fn list(config: &Path) -> ExitCode {
    let (vault, ..) = match open(config) {
        Ok(opened) => opened,
        Err(error) => return fail(error),
    };
    let users = match vault.users() {
        Ok(users) => users,
        Err(error) => return fail(crate::logging::chain(&error)),
    };
    if users.is_empty() {
        println!("No user has data in the vault.");
    }
    for user in users {
        let keys = match vault.keys(Namespace::User(user)).await {
            Ok(keys) => keys,
            Err(error) => {
                println!(
                    "user {user}: unreadable ({})",
                    crate::logging::chain(&error)
                );
                continue;
            }
        };
        let mut servers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut consents = 0;
        for key in &keys {
            if let Some(server) = key
                .strip_prefix("mcp.oauth.")
                .and_then(|rest| rest.strip_suffix(".credentials"))
            {
                servers
                    .entry(server.to_owned())
                    .or_default()
                    .push("signed in");
            } else if let Some(server) = key.strip_prefix("mcp.token.") {
                servers
                    .entry(server.to_owned())
                    .or_default()
                    .push("personal token");
            } else if key.starts_with("consent/") {
                consents += 1;
            }
        }
        let mut parts: Vec<String> = servers
            .iter()
            .map(|(server, what)| format!("{server} ({})", what.join(", ")))
            .collect();
        if consents > 0 {
            parts.push(format!("{consents} tool(s) allowed without asking"));
        }
        if parts.is_empty() {
            parts.push("nothing".to_owned());
        }
        println!("user {user}: {}", parts.join("; "));
    }
    match vault.secret_names().await {
        Ok(names) if names.is_empty() => {}
        Ok(names) => println!("Admin secrets for ${{NAME}}: {}", names.join(", ")),
        Err(error) => return fail(crate::logging::chain(&error)),
    }
    ExitCode::SUCCESS
}

/// Deletes everything of one Telegram user. Tokens are not revoked here
/// (the bot's `/forget` does that); the admin is told.
pub async fn forget(config: &Path, user: u64) -> ExitCode {
    let (vault, ..) = match open(config) {
        Ok(opened) => opened,
        Err(error) => return fail(error),
    };
    match vault.forget(Namespace::User(user)).await {
        Ok(true) => {
            println!(
                "Deleted every stored item of user {user}. Tokens were not revoked at the servers; the user can do that in each server's settings."
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("User {user} has no data in the vault.");
            ExitCode::SUCCESS
        }
        Err(error) => fail(crate::logging::chain(&error)),
    }
}

/// `NAME` is what `${NAME}` in the config refers to.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Keeps a secret for `${NAME}`, read from standard input (never from the
/// command line, where shells keep history).
pub async fn set(config: &Path, name: &str) -> ExitCode {
    if !valid_name(name) {
        return fail(format!(
            "\"{name}\" is not a variable name; use letters, digits and _"
        ));
    }
    let mut line = String::new();
    if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
        return fail(format!(
            "cannot read the value from standard input: {error}"
        ));
    }
    let value = Secret::new(line.trim_end_matches(['\n', '\r']));
    if value.expose().is_empty() {
        return fail(
            "the value is empty; pipe it in, e.g. `printf %s \"$TOKEN\" | mcpgram vault set NAME`",
        );
    }
    let (vault, ..) = match open(config) {
        Ok(opened) => opened,
        Err(error) => return fail(error),
    };
    match vault.put(Namespace::System, &secret_key(name), value).await {
        Ok(()) => {
            println!(
                "Kept {name} in the vault; ${{{name}}} in the config reads it (the environment wins when it has {name} too)."
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(crate::logging::chain(&error)),
    }
}

pub async fn unset(config: &Path, name: &str) -> ExitCode {
    let (vault, ..) = match open(config) {
        Ok(opened) => opened,
        Err(error) => return fail(error),
    };
    match vault.remove(Namespace::System, &secret_key(name)).await {
        Ok(true) => {
            println!("Removed {name} from the vault.");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("The vault keeps no {name}.");
            ExitCode::SUCCESS
        }
        Err(error) => fail(crate::logging::chain(&error)),
    }
}

/// Re-encrypts the vault under a new identity (the bot stopped).
pub fn rotate(config: &Path) -> ExitCode {
    if std::env::var("MCPGRAM_VAULT_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        return fail(
            "the key comes from MCPGRAM_VAULT_KEY; rotate-key works on a key file (vault.key_file)",
        );
    }
    let (dir, key_file) = match location(config) {
        Ok((dir, key_file, _)) => (dir, key_file),
        Err(error) => return fail(error),
    };
    match rotate_key(&dir, &key_file) {
        Ok(rotation) => {
            println!(
                "Re-encrypted {} file(s) under a new identity ({} were done by an earlier, interrupted run). The new key is {}; the old one is kept as {}.old until you delete it.",
                rotation.rotated,
                rotation.already,
                key_file.display(),
                key_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(format!(
            "{}; run it again to resume",
            crate::logging::chain(&error)
        )),
    }
}

/// What `check-config` adds about the vault: whether its key decrypts it,
/// and where each `${NAME}` of the config is read from. `Err` when the
/// vault exists but cannot be read with the configured key.
pub async fn check(config: &Path) -> Result<Vec<String>, String> {
    let (dir, key_file, text) = location(config)?;
    let inline_key = std::env::var("MCPGRAM_VAULT_KEY").is_ok_and(|k| !k.trim().is_empty());
    let mut lines = Vec::new();
    let kept: Vec<String> = if dir.join("system.age").exists() && (inline_key || key_file.exists())
    {
        let key = KeySource::from_env_or_file(key_file);
        let vault =
            Vault::open(&dir, &key).map_err(|error| crate::logging::chain(&error).to_string())?;
        vault
            .check()
            .await
            .map_err(|error| crate::logging::chain(&error).to_string())?;
        lines.push(format!("vault {}: the key decrypts it", dir.display()));
        vault
            .secret_names()
            .await
            .map_err(|error| crate::logging::chain(&error).to_string())?
    } else {
        lines.push(format!(
            "vault {}: not created yet (the bot creates it, and its key, at first start)",
            dir.display()
        ));
        Vec::new()
    };
    // Only the lines in use: commented examples do not count.
    let mut names: Vec<&str> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split("${").skip(1))
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .filter(|name| valid_name(name))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let in_env = std::env::var(name).is_ok();
        let in_vault = kept.iter().any(|k| k == name);
        lines.push(match (in_env, in_vault) {
            (true, true) => {
                format!("${{{name}}}: the environment (the vault has it too; the environment wins)")
            }
            (true, false) => format!("${{{name}}}: the environment"),
            (false, true) => format!("${{{name}}}: the vault"),
            (false, false) => format!("${{{name}}}: not set"),
        });
    }
    Ok(lines)
}
