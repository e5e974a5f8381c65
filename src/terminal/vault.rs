//! `mcpgram vault …`: the admin's view of the vault, and its words. Never
//! prints a secret: only who has data for which server.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use crate::config::StoreConfig;
use crate::secret::Secret;
use crate::store::Stores;
use crate::store::migrate::{self, Copied, UserCopied};
use crate::store::postgres::{self, Database};
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

/// Where `vault migrate` copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// From the vault's files into PostgreSQL.
    Postgres,
    /// From PostgreSQL into the vault's files.
    Files,
}

/// Copies everything the bot keeps between the vault's files (the
/// config's `[vault]`) and PostgreSQL, through the store ports, so each
/// side seals as it always does with the one vault key. The database is
/// `url` (`--url`) when given, else the config's `[store] url` when it
/// says `kind = "postgres"`, else `DATABASE_URL`: an admin moving to
/// PostgreSQL may run it before or after switching the config. The source
/// is only read; every write is an upsert, so an interrupted run is
/// finished by running it again.
pub async fn migrate(config: &Path, to: Destination, url: Option<Secret>) -> ExitCode {
    let (dir, key_file, text) = match location(config) {
        Ok(found) => found,
        Err(error) => return fail(error),
    };
    let url = match database_url(&text, url) {
        Ok(url) => url,
        Err(error) => return fail(error),
    };
    let place = postgres::describe(&url);
    let key = KeySource::from_env_or_file(key_file.clone());
    // A new key would seal the database's rows for nobody: the bot's own
    // key must be at hand.
    if matches!(key, KeySource::File(_)) && !key_file.exists() {
        return fail(format!(
            "the vault key {} does not exist; the migration needs the key the bot uses (or MCPGRAM_VAULT_KEY)",
            key_file.display()
        ));
    }
    let vault = match Vault::open(&dir, &key) {
        Ok(vault) => Arc::new(vault),
        Err(error) => return fail(crate::logging::chain(&error)),
    };
    if let Err(error) = vault.check().await {
        return fail(crate::logging::chain(&error));
    }
    let database = match connect(&url).await {
        Ok(database) => database,
        Err(error) => {
            return fail(format!(
                "cannot use the PostgreSQL database, {place}: {}",
                crate::logging::chain(&error)
            ));
        }
    };
    let files = Stores::with_flows_in_memory(vault.clone());
    let shared = Stores::postgres(database.clone(), vault);
    let (from, into) = match to {
        Destination::Postgres => {
            println!("Copying the vault in {} into {place}.", dir.display());
            (&files, &shared)
        }
        Destination::Files => {
            println!("Copying {place} into the vault in {}.", dir.display());
            (&shared, &files)
        }
    };
    let copied = migrate::copy(from, into, |user| println!("{}", user_line(user))).await;
    database.close().await;
    let copied = match copied {
        Ok(copied) => copied,
        Err(error) => {
            return fail(format!(
                "{}; what was copied stays, run it again to finish",
                crate::logging::chain(&error)
            ));
        }
    };
    println!("{}", summary(&copied));
    println!(
        "Pending sign-in links were not moved: they expire within minutes, and whoever had one open asks for a new one."
    );
    match to {
        Destination::Postgres => println!(
            "The vault's files were left as they were. Once the config says [store] kind = \"postgres\" and the bot runs on it, delete the users' files (user-*.age); keep the key, which opens the database's secrets."
        ),
        Destination::Files => println!(
            "The database was left as it was. Once the config says [store] kind = \"files\" and the bot runs on them, drop its tables."
        ),
    }
    ExitCode::SUCCESS
}

/// The database `vault migrate` works with; see [`migrate`] for the order.
fn database_url(text: &str, given: Option<Secret>) -> Result<Secret, String> {
    if let Some(url) = given {
        return Ok(url);
    }
    match crate::config::store_of(text) {
        Ok(StoreConfig::Postgres { url, .. }) => Ok(url),
        Ok(StoreConfig::Files) => std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                "the config keeps state in files ([store] kind = \"files\"); name the database with DATABASE_URL (or --url)".to_owned()
            }),
        Err(problems) => Err(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// Connected, with the schema brought up to date (a new database gets
/// its tables here).
async fn connect(url: &Secret) -> Result<Database, crate::store::StoreError> {
    let database = Database::connect(url).await?;
    database.migrate().await?;
    Ok(database)
}

fn user_line(user: &UserCopied) -> String {
    format!(
        "user {}: {} connection(s), {} personal token(s), {} consent(s)",
        user.user_id, user.connections, user.personal_tokens, user.consents
    )
}

fn summary(copied: &Copied) -> String {
    format!(
        "Copied {} user(s): {} connection(s), {} personal token(s), {} consent(s); and {} registered OAuth client(s).",
        copied.users,
        copied.connections,
        copied.personal_tokens,
        copied.consents,
        copied.registrations
    )
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
