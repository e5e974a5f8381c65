//! The one TOML file an admin writes, checked before anything starts.
//!
//! Loading happens in two steps: serde reads the file into `raw` structs
//! (unknown keys are rejected there, with line and column), then
//! [`validate`] turns them into the typed [`Config`] and collects *every*
//! problem at once, each naming the key and the fix, so an admin fixes the
//! file in one pass instead of one error per restart.
//!
//! `${NAME}` in secret-bearing values (the bot token, header values, OAuth
//! client credentials) is replaced by the environment variable `NAME`, so the
//! file itself can be committed without secrets.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// Where `mcpgram` looks when neither `--config` nor `MCPGRAM_CONFIG` is given.
pub const DEFAULT_PATH: &str = "config/mcpgram.toml";

const DEFAULT_API_URL: &str = "https://api.telegram.org";
const DEFAULT_TIMEOUT_SECS: u64 = 30;

#[derive(Debug, Clone)]
pub struct Config {
    pub telegram: TelegramConfig,
    pub http: HttpConfig,
    pub vault: VaultConfig,
    pub store: StoreConfig,
    pub oauth: OAuthConfig,
    pub limits: Limits,
    pub mcp: McpConfig,
    /// Shared: a command resolves its server once and passes it along.
    pub servers: Vec<Arc<ServerConfig>>,
}

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub token: Secret,
    pub api_url: Url,
    /// Empty means everyone may use the bot.
    pub allowed_users: Vec<u64>,
    /// Connect buttons are Telegram Login buttons to the bot's own start
    /// page, which then knows for sure who clicked (needs `public_url` and
    /// the domain set with BotFather's /setdomain).
    pub login_url: bool,
    /// How updates arrive.
    pub delivery: Delivery,
    /// Messages the bot may send per second in all: Telegram's 30 for
    /// ordinary bots; more for bots with paid broadcasts.
    pub messages_per_second: u32,
}

/// How the bot receives updates from Telegram.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Long polling (`getUpdates`): no public address needed; one bot
    /// process only.
    Polling,
    /// Telegram POSTs updates to `<http.public_url>/telegram/webhook`,
    /// each carrying this secret in `X-Telegram-Bot-Api-Secret-Token`.
    Webhook { secret: Secret },
}

/// Settings of every authorization flow.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// How long a connect link stays valid.
    pub flow_ttl: Duration,
}

/// What one user may ask of the bot, so no user can exhaust it for others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connect links one user may have waiting at once.
    pub pending_flows_per_user: u32,
    /// `/connect`s one user may send per minute.
    pub connects_per_minute: u32,
}

/// Settings of every MCP session.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// A user's session with a server is closed after this long unused,
    /// so memory stays bounded however many users come and go.
    pub session_idle: Duration,
    /// At shutdown, how long commands under way may take to finish.
    pub shutdown_grace: Duration,
}

const DEFAULT_FLOW_TTL: Duration = Duration::from_secs(10 * 60);
const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(10 * 60);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Set when the callback is reachable from the internet (behind HTTPS).
    pub public_url: Option<Url>,
    /// `/metrics` on an address of its own, kept off the public listener.
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub dir: PathBuf,
    /// Where the age identity lives; defaults to `<dir>/identity.txt`.
    pub key_file: PathBuf,
}

/// Where the bot keeps tokens, registrations, pending flows and locks.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// The embedded default: the age vault's files, locks in memory. One
    /// bot process.
    Files,
    /// One PostgreSQL database shared by several replicas. Secrets are
    /// sealed with the vault's key before they are sent (every replica
    /// needs the same key). The URL may hold a password: it is a secret
    /// and never logged.
    Postgres {
        url: Secret,
        /// How long a replica's hold on a user's command and on an update
        /// it is handling lasts without renewal: what a replica that dies
        /// leaves is taken over after this.
        lease: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub id: String,
    pub name: String,
    pub url: Url,
    /// Permits loopback and private addresses for this server.
    pub trusted: bool,
    /// Upper bound for connecting plus one request.
    pub timeout: Duration,
    pub auth: ServerAuth,
    /// Each user gives their own token (`/token`), sent in this header.
    pub user_token: Option<UserTokenSettings>,
}

/// Where a user's personal token goes: `header: prefix + token`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTokenSettings {
    pub header: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServerAuth {
    None,
    /// Static headers sent with every request (values already resolved).
    Headers(BTreeMap<String, Secret>),
    /// Each user connects their own account (authorization code + PKCE).
    OAuth(OAuthSettings),
    /// The bot's own identity, shared by every user: the OAuth 2.0
    /// client-credentials grant (SEP-1046), no per-user sign-in.
    ClientCredentials(ClientCredentialsSettings),
    /// Enterprise-managed authorization (SEP-990): an identity from the
    /// organisation's identity provider is exchanged for an ID-JAG there,
    /// then for an access token at the server's authorization server; no
    /// sign-in page, no per-user consent.
    Enterprise(EnterpriseSettings),
}

/// Two pre-registered clients (at the identity provider and at the MCP
/// server's authorization server) and the identity to exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct EnterpriseSettings {
    pub idp_issuer: String,
    pub idp_token_endpoint: String,
    pub idp_client_id: String,
    /// `client_secret_basic` at the identity provider; none: public client.
    pub idp_client_secret: Option<Secret>,
    /// The OpenID Connect ID token the identity provider issued to the
    /// client above: the identity being exchanged.
    pub id_token: Secret,
    pub client_id: String,
    /// `client_secret_basic` at the authorization server; none: public.
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
}

/// A machine client registered with the server's authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCredentialsSettings {
    pub client_id: String,
    pub credential: ClientCredential,
    pub scopes: Vec<String>,
}

/// How a machine client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCredential {
    /// `client_secret_basic` or `client_secret_post`, as the server
    /// advertises.
    Secret(Secret),
    /// `private_key_jwt` (RFC 7523): a PEM private key and its algorithm
    /// (RS256, RS384, RS512, ES256 or ES384).
    PrivateKey { pem: Secret, algorithm: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthSettings {
    pub scopes: Vec<String>,
    /// Send RFC 8707 `resource` (Microsoft Entra rejects it).
    pub resource: bool,
    /// How a pre-registered client authenticates at the token endpoint.
    pub token_endpoint_auth_method: Option<TokenAuthMethod>,
    /// A Client ID Metadata Document of the admin's own, used where the
    /// server supports them (the bot's own is used when hosted on https).
    pub client_metadata_url: Option<String>,
    /// A client registered out of band; without it mcpgram registers one
    /// dynamically (RFC 7591).
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
}

/// RFC 7591 `token_endpoint_auth_method` values mcpgram can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::None => "none",
        }
    }
}

impl Config {
    /// Whether the callback is reached through `http.public_url` (hosted)
    /// rather than on this machine's loopback (personal use).
    pub fn is_hosted(&self) -> bool {
        self.http.public_url.is_some()
    }

    pub fn server(&self, id: &str) -> Option<&Arc<ServerConfig>> {
        self.servers.iter().find(|server| server.id == id)
    }
}

impl ServerConfig {
    pub fn is_oauth(&self) -> bool {
        matches!(self.auth, ServerAuth::OAuth(_))
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {}", .source.to_string().trim_end())]
    Syntax {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One invalid value: which key, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// The config of the terminal's commands when no file is given: no
    /// Telegram, no servers, the vault in `vault_dir`, the callback on a
    /// free loopback port.
    pub fn standalone(vault_dir: PathBuf) -> Config {
        Config {
            telegram: TelegramConfig {
                token: Secret::default(),
                api_url: Url::parse(DEFAULT_API_URL).expect("a valid constant"),
                allowed_users: Vec::new(),
                login_url: false,
                delivery: Delivery::Polling,
                messages_per_second: 30,
            },
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                public_url: None,
                metrics_listen: None,
            },
            vault: VaultConfig {
                key_file: vault_dir.join("identity.txt"),
                dir: vault_dir,
            },
            store: StoreConfig::Files,
            oauth: OAuthConfig {
                flow_ttl: DEFAULT_FLOW_TTL,
            },
            limits: Limits {
                pending_flows_per_user: 3,
                connects_per_minute: 60,
            },
            mcp: McpConfig {
                session_idle: DEFAULT_SESSION_IDLE,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            },
            servers: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// A server named by its URL alone (the terminal's `login <url>`): its
    /// id is derived from the URL, so later commands find its tokens, and
    /// it is trusted, since the admin typed it.
    pub fn from_url(url: Url, auth: ServerAuth) -> ServerConfig {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        ServerConfig {
            user_token: None,
            id: format!("url-{}", &digest[..16]),
            name: url.host_str().unwrap_or("server").to_owned(),
            url,
            trusted: true,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            auth,
        }
    }
}

/// Reads and validates the file, resolving `${NAME}` from the process
/// environment, or else from the admin secrets kept in the vault
/// (`mcpgram vault set NAME`): the environment wins when both have it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let kept = vault_secrets(&text);
    parse(&text, path, &|name| {
        std::env::var(name)
            .ok()
            .or_else(|| kept.get(name).map(|value| value.expose().to_owned()))
    })
}

/// The `[logging] format` of a config's text, read before anything else
/// (logging starts before the config is validated); text by default.
pub fn log_format(text: &str) -> crate::logging::Format {
    match toml::from_str::<raw::File>(text)
        .ok()
        .and_then(|raw| raw.logging.format)
        .as_deref()
    {
        Some("json") => crate::logging::Format::Json,
        _ => crate::logging::Format::Text,
    }
}

/// Where the vault of a config's text is, and its key: from the raw
/// `[vault]` table (`None` when the text does not parse).
pub fn vault_location(text: &str) -> Option<(PathBuf, PathBuf)> {
    let raw: raw::File = toml::from_str(text).ok()?;
    Some(vault_paths(&raw.vault))
}

/// The `[store]` of a config's text, `${NAME}` resolved as [`load`]
/// resolves it, without validating the rest: the vault's admin commands
/// (`mcpgram vault migrate`) run where the bot's other settings, such as
/// its Telegram token, may not be at hand. `Err` holds the problems, one
/// sentence each (never the URL: it may hold a password).
pub fn store_of(text: &str) -> Result<StoreConfig, Vec<Problem>> {
    let raw: raw::File = toml::from_str(text).map_err(|error| {
        vec![Problem {
            key: "config".to_owned(),
            message: format!("is not valid: {}", error.message()),
        }]
    })?;
    let kept = vault_secrets(text);
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| kept.get(name).map(|value| value.expose().to_owned()))
    };
    let mut problems = Problems::default();
    let store = store(&raw.store, &env, &mut problems);
    if problems.0.is_empty() {
        Ok(store)
    } else {
        Err(problems.0)
    }
}

/// `[vault]`'s directory and key file, with their defaults.
fn vault_paths(vault: &raw::Vault) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(vault.dir.as_deref().unwrap_or("./data/vault"));
    let key_file = vault
        .key_file
        .as_deref()
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("identity.txt"));
    (dir, key_file)
}

/// The admin secrets in the vault the config names, when it exists and
/// its key is at hand; nothing otherwise (and nothing is created).
fn vault_secrets(text: &str) -> BTreeMap<String, Secret> {
    let Some((dir, key_file)) = vault_location(text) else {
        return BTreeMap::new();
    };
    let inline_key = std::env::var("MCPGRAM_VAULT_KEY").is_ok_and(|k| !k.trim().is_empty());
    if !dir.join("system.age").exists() || !(inline_key || key_file.exists()) {
        return BTreeMap::new();
    }
    // The vault's API is async; config loading is not (and may run inside
    // a runtime), so a thread of its own reads it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().build().ok()?;
        runtime.block_on(async {
            let key = crate::vault::KeySource::from_env_or_file(key_file);
            let vault = crate::vault::Vault::open(&dir, &key).ok()?;
            let mut kept = BTreeMap::new();
            for name in vault.secret_names().await.ok()? {
                let key = crate::vault::admin::secret_key(&name);
                if let Ok(Some(value)) = vault.get(crate::vault::Namespace::System, &key).await {
                    kept.insert(name, value);
                }
            }
            Some(kept)
        })
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Parses config text; `env` answers `${NAME}` lookups (tests pass their own).
pub fn parse(
    text: &str,
    path: &Path,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Config, ConfigError> {
    let raw: raw::File = toml::from_str(text).map_err(|error| ConfigError::Syntax {
        path: path.to_owned(),
        source: Box::new(error),
    })?;
    validate(raw, env).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// The file as written, before validation.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub telegram: Telegram,
        #[serde(default)]
        pub http: Http,
        #[serde(default)]
        pub vault: Vault,
        #[serde(default)]
        pub store: Store,
        #[serde(default)]
        pub mcp: Mcp,
        #[serde(default)]
        pub oauth: OAuth,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub logging: Logging,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct OAuth {
        pub flow_ttl: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub pending_flows_per_user: Option<u32>,
        pub connects_per_minute: Option<u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Telegram {
        pub token: String,
        pub api_url: Option<String>,
        #[serde(default)]
        pub allowed_users: Vec<u64>,
        #[serde(default)]
        pub login_url: bool,
        pub mode: Option<String>,
        pub webhook_secret: Option<String>,
        pub messages_per_second: Option<u32>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Http {
        pub listen: Option<String>,
        pub public_url: Option<String>,
        pub metrics_listen: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Vault {
        pub dir: Option<String>,
        pub key_file: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub kind: Option<String>,
        pub url: Option<String>,
        pub lease: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Logging {
        pub format: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Mcp {
        pub session_idle: Option<String>,
        pub shutdown_grace: Option<String>,
        #[serde(default)]
        pub servers: Vec<Server>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub id: String,
        pub name: Option<String>,
        pub url: String,
        #[serde(default)]
        pub trusted: bool,
        pub timeout_secs: Option<u64>,
        pub oauth: Option<ServerOAuth>,
        pub client_credentials: Option<ClientCredentials>,
        pub enterprise: Option<Enterprise>,
        pub user_token: Option<UserToken>,
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct UserToken {
        #[serde(default = "authorization")]
        pub header: String,
        #[serde(default = "bearer")]
        pub prefix: String,
    }

    fn authorization() -> String {
        "Authorization".to_owned()
    }

    fn bearer() -> String {
        "Bearer ".to_owned()
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Enterprise {
        pub idp_issuer: String,
        pub idp_token_endpoint: String,
        pub idp_client_id: String,
        pub idp_client_secret: Option<String>,
        pub id_token: String,
        pub client_id: String,
        pub client_secret: Option<String>,
        #[serde(default)]
        pub scopes: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientCredentials {
        pub client_id: String,
        pub client_secret: Option<String>,
        pub private_key_file: Option<String>,
        pub signing_algorithm: Option<String>,
        #[serde(default)]
        pub scopes: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServerOAuth {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default)]
        pub scopes: Vec<String>,
        pub client_id: Option<String>,
        pub client_secret: Option<String>,
        pub token_endpoint_auth_method: Option<String>,
        #[serde(default = "yes")]
        pub resource: bool,
    }

    fn yes() -> bool {
        true
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

fn validate(
    raw: raw::File,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();

    let token = expand(&raw.telegram.token, "telegram.token", env, &mut problems);
    if token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
        problems.add(
            "telegram.token",
            "is empty; put the token from @BotFather here, e.g. \"${TELEGRAM_BOT_TOKEN}\"",
        );
    }
    let api_url = raw
        .telegram
        .api_url
        .as_deref()
        .unwrap_or(DEFAULT_API_URL)
        .to_owned();
    // teloxide appends "/bot<token>/<method>" as path segments; a trailing
    // slash on a prefix path would leave an empty segment in between.
    let api_url = http_url(&api_url, "telegram.api_url", &mut problems).map(|mut url| {
        let trimmed = url.path().trim_end_matches('/').to_owned();
        url.set_path(&trimmed);
        url
    });

    let listen = raw.http.listen.as_deref().unwrap_or("127.0.0.1:18766");
    let listen = match listen.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                "http.listen",
                format!("\"{listen}\" is not an address:port; write e.g. \"127.0.0.1:18766\""),
            );
            None
        }
    };
    let metrics_listen =
        raw.http
            .metrics_listen
            .as_deref()
            .and_then(|text| match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.add(
                        "http.metrics_listen",
                        format!("\"{text}\" is not an address:port; write e.g. \"127.0.0.1:9464\""),
                    );
                    None
                }
            });
    let public_url = raw.http.public_url.as_deref().and_then(|value| {
        let url = http_url(value, "http.public_url", &mut problems)?;
        if url.query().is_some() || url.fragment().is_some() {
            problems.add(
                "http.public_url",
                "must be a plain base URL without ?query or #fragment",
            );
        }
        Some(url)
    });

    let (dir, key_file) = vault_paths(&raw.vault);
    let store = store(&raw.store, env, &mut problems);

    let delivery = match raw.telegram.mode.as_deref().unwrap_or("polling") {
        "polling" => {
            if raw.telegram.webhook_secret.is_some() {
                problems.add(
                    "telegram.webhook_secret",
                    "is used only with telegram.mode = \"webhook\"",
                );
            }
            Delivery::Polling
        }
        "webhook" => {
            if public_url.is_none() {
                problems.add(
                    "telegram.mode",
                    "\"webhook\" needs http.public_url: Telegram sends updates to <public_url>/telegram/webhook",
                );
            }
            let secret = match raw.telegram.webhook_secret.as_deref() {
                Some(value) => expand(value, "telegram.webhook_secret", env, &mut problems),
                None => {
                    problems.add(
                        "telegram.webhook_secret",
                        "is required with telegram.mode = \"webhook\"; e.g. \"${TELEGRAM_WEBHOOK_SECRET}\"",
                    );
                    None
                }
            };
            match secret {
                Some(secret)
                    if (1..=256).contains(&secret.expose().len())
                        && secret
                            .expose()
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    Delivery::Webhook { secret }
                }
                Some(_) => {
                    problems.add(
                        "telegram.webhook_secret",
                        "must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)",
                    );
                    Delivery::Polling
                }
                None => Delivery::Polling,
            }
        }
        other => {
            problems.add(
                "telegram.mode",
                format!("\"{other}\" is not a mode; write \"polling\" or \"webhook\""),
            );
            Delivery::Polling
        }
    };

    let messages_per_second = match raw.telegram.messages_per_second {
        None => 30,
        Some(n @ 1..=1000) => n,
        Some(n) => {
            problems.add(
                "telegram.messages_per_second",
                format!(
                    "{n} is out of range; Telegram allows 30 (up to 1000 with paid broadcasts)"
                ),
            );
            30
        }
    };

    if raw.telegram.login_url {
        match &public_url {
            Some(url) if url.scheme() == "https" => {}
            _ => problems.add(
                "telegram.login_url",
                "needs http.public_url with https:// (Telegram Login works only on the domain set with BotFather's /setdomain)",
            ),
        }
    }

    let flow_ttl = duration(
        raw.oauth.flow_ttl.as_deref(),
        "oauth.flow_ttl",
        (
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
            "10s and 24h",
        ),
        DEFAULT_FLOW_TTL,
        &mut problems,
    );
    if let Some(format) = raw.logging.format.as_deref()
        && !matches!(format, "text" | "json")
    {
        problems.add(
            "logging.format",
            format!("\"{format}\" is not a format; write \"text\" or \"json\""),
        );
    }
    let shutdown_grace = duration(
        raw.mcp.shutdown_grace.as_deref(),
        "mcp.shutdown_grace",
        (Duration::ZERO, Duration::from_secs(3600), "0s and 1h"),
        DEFAULT_SHUTDOWN_GRACE,
        &mut problems,
    );
    let session_idle = duration(
        raw.mcp.session_idle.as_deref(),
        "mcp.session_idle",
        (
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
            "1s and 24h",
        ),
        DEFAULT_SESSION_IDLE,
        &mut problems,
    );
    let limits = Limits {
        pending_flows_per_user: at_least_one(
            raw.limits.pending_flows_per_user.unwrap_or(3),
            "limits.pending_flows_per_user",
            &mut problems,
        ),
        connects_per_minute: at_least_one(
            raw.limits.connects_per_minute.unwrap_or(6),
            "limits.connects_per_minute",
            &mut problems,
        ),
    };

    let mut servers = Vec::new();
    let mut seen = HashSet::new();
    for (index, server) in raw.mcp.servers.into_iter().enumerate() {
        let key = format!("mcp.servers[{index}]");
        if !is_valid_id(&server.id) {
            problems.add(
                format!("{key}.id"),
                format!(
                    "\"{}\" is not a valid id; use 1 to 32 characters of a-z, 0-9, _ and -",
                    server.id
                ),
            );
        } else if !seen.insert(server.id.clone()) {
            problems.add(
                format!("{key}.id"),
                format!(
                    "\"{}\" is used by an earlier server; ids must be unique",
                    server.id
                ),
            );
        }
        if let Some(server) = validate_server(server, &key, env, &mut problems) {
            servers.push(Arc::new(server));
        }
    }

    match (token, api_url, listen) {
        (Some(token), Some(api_url), Some(listen)) if problems.0.is_empty() => Ok(Config {
            telegram: TelegramConfig {
                token,
                api_url,
                allowed_users: raw.telegram.allowed_users,
                login_url: raw.telegram.login_url,
                delivery,
                messages_per_second,
            },
            http: HttpConfig {
                listen,
                public_url,
                metrics_listen,
            },
            vault: VaultConfig { dir, key_file },
            store,
            oauth: OAuthConfig { flow_ttl },
            limits,
            mcp: McpConfig {
                session_idle,
                shutdown_grace,
            },
            servers,
        }),
        _ => Err(problems.0),
    }
}

/// `[store]`: the files by default, or PostgreSQL at `url`.
fn store(
    raw: &raw::Store,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    problems: &mut Problems,
) -> StoreConfig {
    match raw.kind.as_deref().unwrap_or("files") {
        "files" => {
            if raw.url.is_some() {
                problems.add("store.url", "is used only with store.kind = \"postgres\"");
            }
            if raw.lease.is_some() {
                problems.add("store.lease", "is used only with store.kind = \"postgres\"");
            }
            StoreConfig::Files
        }
        "postgres" => {
            let Some(url) = raw.url.as_deref() else {
                problems.add(
                    "store.url",
                    "is required with store.kind = \"postgres\"; e.g. \"${DATABASE_URL}\"",
                );
                return StoreConfig::Files;
            };
            let Some(url) = expand(url, "store.url", env, problems) else {
                return StoreConfig::Files;
            };
            // The URL itself is never repeated: it may hold a password.
            let scheme_ok = Url::parse(url.expose())
                .is_ok_and(|parsed| matches!(parsed.scheme(), "postgres" | "postgresql"));
            if !scheme_ok
                || url
                    .expose()
                    .parse::<sqlx::postgres::PgConnectOptions>()
                    .is_err()
            {
                problems.add(
                    "store.url",
                    "is not a PostgreSQL URL; write e.g. \"postgres://user:password@host:5432/mcpgram\"",
                );
            }
            let lease = duration(
                raw.lease.as_deref(),
                "store.lease",
                (
                    Duration::from_secs(2),
                    Duration::from_secs(600),
                    "2s and 10m",
                ),
                crate::store::postgres::DEFAULT_LEASE,
                problems,
            );
            StoreConfig::Postgres { url, lease }
        }
        other => {
            problems.add(
                "store.kind",
                format!("\"{other}\" is not a store; write \"files\" or \"postgres\""),
            );
            StoreConfig::Files
        }
    }
}

/// A duration like "10m" or "90s" within `(min, max, in words)`.
fn duration(
    text: Option<&str>,
    key: &str,
    (min, max, range): (Duration, Duration, &str),
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match humantime::parse_duration(text) {
        Ok(value) if (min..=max).contains(&value) => value,
        Ok(_) => {
            problems.add(key, format!("must be between {range}"));
            default
        }
        Err(_) => {
            problems.add(
                key,
                format!("\"{text}\" is not a duration; write e.g. \"10m\" or \"90s\""),
            );
            default
        }
    }
}

fn validate_server(
    server: raw::Server,
    key: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    problems: &mut Problems,
) -> Option<ServerConfig> {
    let url = http_url(&server.url, &format!("{key}.url"), problems);
    let name = match server.name {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        Some(_) => {
            problems.add(format!("{key}.name"), "is empty; remove it or give a name");
            String::new()
        }
        None => server.id.clone(),
    };
    let timeout = match server.timeout_secs {
        Some(0) => {
            problems.add(format!("{key}.timeout_secs"), "must be at least 1");
            Duration::from_secs(DEFAULT_TIMEOUT_SECS)
        }
        Some(secs) => Duration::from_secs(secs),
        None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
    };

    let oauth = server.oauth.filter(|oauth| oauth.enabled);
    if oauth.is_some() && !server.headers.is_empty() {
        problems.add(
            format!("{key}.headers"),
            "cannot be combined with [mcp.servers.oauth] enabled = true; keep one of them",
        );
    }
    if server.client_credentials.is_some() && (oauth.is_some() || !server.headers.is_empty()) {
        problems.add(
            format!("{key}.client_credentials"),
            "cannot be combined with [mcp.servers.oauth] or [mcp.servers.headers]; keep one of them",
        );
    }
    let client_credentials = server
        .client_credentials
        .as_ref()
        .and_then(|cc| client_credentials(cc, &format!("{key}.client_credentials"), env, problems));
    if server.enterprise.is_some()
        && (oauth.is_some() || !server.headers.is_empty() || server.client_credentials.is_some())
    {
        problems.add(
            format!("{key}.enterprise"),
            "cannot be combined with [mcp.servers.oauth], [mcp.servers.headers] or [mcp.servers.client_credentials]; keep one of them",
        );
    }
    let enterprise = server
        .enterprise
        .as_ref()
        .and_then(|raw| enterprise(raw, &format!("{key}.enterprise"), env, problems));

    let mut headers = BTreeMap::new();
    for (name, value) in &server.headers {
        let header_key = format!("{key}.headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.add(&header_key, "is not a valid HTTP header name");
            continue;
        }
        if let Some(value) = expand(value, &header_key, env, problems) {
            if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                problems.add(
                    &header_key,
                    "resolves to a value that cannot be sent in an HTTP header (control characters?)",
                );
            }
            headers.insert(name.clone(), value);
        }
    }

    let auth = match oauth {
        Some(oauth) => {
            let client_id = oauth
                .client_id
                .as_deref()
                .and_then(|id| expand(id, &format!("{key}.oauth.client_id"), env, problems))
                .map(|id| id.expose().to_owned());
            let client_secret = oauth.client_secret.as_deref().and_then(|secret| {
                expand(secret, &format!("{key}.oauth.client_secret"), env, problems)
            });
            if client_secret.is_some() && client_id.is_none() {
                problems.add(
                    format!("{key}.oauth.client_secret"),
                    "needs client_id as well; set both or neither",
                );
            }
            for scope in &oauth.scopes {
                if scope.is_empty() || scope.contains(char::is_whitespace) {
                    problems.add(
                        format!("{key}.oauth.scopes"),
                        format!("\"{scope}\" is not a scope; list each scope as its own string"),
                    );
                }
            }
            let token_endpoint_auth_method = match oauth.token_endpoint_auth_method.as_deref() {
                None => None,
                Some("client_secret_basic") => Some(TokenAuthMethod::ClientSecretBasic),
                Some("client_secret_post") => Some(TokenAuthMethod::ClientSecretPost),
                Some("none") => Some(TokenAuthMethod::None),
                Some(other) => {
                    problems.add(
                        format!("{key}.oauth.token_endpoint_auth_method"),
                        format!("\"{other}\" is not supported; use client_secret_basic, client_secret_post or none"),
                    );
                    None
                }
            };
            if token_endpoint_auth_method.is_some() && client_id.is_none() {
                problems.add(
                    format!("{key}.oauth.token_endpoint_auth_method"),
                    "applies to a pre-registered client; set client_id too",
                );
            }
            match (token_endpoint_auth_method, &client_secret) {
                (Some(TokenAuthMethod::None), Some(_)) => problems.add(
                    format!("{key}.oauth.client_secret"),
                    "is set, but token_endpoint_auth_method = \"none\" sends no secret; remove one",
                ),
                (
                    Some(TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost),
                    None,
                ) => problems.add(
                    format!("{key}.oauth.client_secret"),
                    "is needed for that token_endpoint_auth_method",
                ),
                _ => {}
            }
            ServerAuth::OAuth(OAuthSettings {
                client_metadata_url: None,
                scopes: oauth.scopes,
                resource: oauth.resource,
                token_endpoint_auth_method,
                client_id,
                client_secret,
            })
        }
        None if !headers.is_empty() => ServerAuth::Headers(headers),
        None => match (client_credentials, enterprise) {
            (Some(settings), _) => ServerAuth::ClientCredentials(settings),
            (None, Some(settings)) => ServerAuth::Enterprise(settings),
            (None, None) => ServerAuth::None,
        },
    };

    let user_token = server.user_token.and_then(|raw| {
        let key = format!("{key}.user_token");
        if !matches!(auth, ServerAuth::None | ServerAuth::Headers(_)) {
            problems.add(
                &key,
                "cannot be combined with [mcp.servers.oauth], [mcp.servers.client_credentials] or [mcp.servers.enterprise]; keep one of them",
            );
            return None;
        }
        if reqwest::header::HeaderName::from_bytes(raw.header.as_bytes()).is_err() {
            problems.add(format!("{key}.header"), "is not a valid HTTP header name");
            return None;
        }
        if reqwest::header::HeaderValue::from_str(&raw.prefix).is_err() {
            problems.add(format!("{key}.prefix"), "cannot be sent in a header");
            return None;
        }
        Some(UserTokenSettings {
            header: raw.header,
            prefix: raw.prefix,
        })
    });
    Some(ServerConfig {
        id: server.id,
        name,
        url: url?,
        trusted: server.trusted,
        timeout,
        auth,
        user_token,
    })
}

fn client_credentials(
    raw: &raw::ClientCredentials,
    key: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    problems: &mut Problems,
) -> Option<ClientCredentialsSettings> {
    let client_id = expand(&raw.client_id, &format!("{key}.client_id"), env, problems)?;
    let credential = match (&raw.client_secret, &raw.private_key_file) {
        (Some(secret), None) => ClientCredential::Secret(expand(
            secret,
            &format!("{key}.client_secret"),
            env,
            problems,
        )?),
        (None, Some(file)) => {
            let algorithm = raw
                .signing_algorithm
                .clone()
                .unwrap_or_else(|| "ES256".to_owned());
            if !["RS256", "RS384", "RS512", "ES256", "ES384"].contains(&algorithm.as_str()) {
                problems.add(
                    format!("{key}.signing_algorithm"),
                    format!(
                        "\"{algorithm}\" is not supported; use RS256, RS384, RS512, ES256 or ES384"
                    ),
                );
                return None;
            }
            match std::fs::read_to_string(file) {
                Ok(pem) => ClientCredential::PrivateKey {
                    pem: Secret::new(pem),
                    algorithm,
                },
                Err(error) => {
                    problems.add(
                        format!("{key}.private_key_file"),
                        format!("cannot read {file}: {error}"),
                    );
                    return None;
                }
            }
        }
        _ => {
            problems.add(
                key,
                "needs either client_secret or private_key_file (one of them)",
            );
            return None;
        }
    };
    Some(ClientCredentialsSettings {
        client_id: client_id.expose().to_owned(),
        credential,
        scopes: raw.scopes.clone(),
    })
}

fn enterprise(
    raw: &raw::Enterprise,
    key: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    problems: &mut Problems,
) -> Option<EnterpriseSettings> {
    let mut endpoint = |value: &str, name: &str| {
        let field = format!("{key}.{name}");
        let value = expand(value, &field, env, problems)?.expose().to_owned();
        match Url::parse(&value) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => Some(value),
            _ => {
                problems.add(field, "must be an http(s) URL");
                None
            }
        }
    };
    let idp_issuer = endpoint(&raw.idp_issuer, "idp_issuer");
    let idp_token_endpoint = endpoint(&raw.idp_token_endpoint, "idp_token_endpoint");
    let plain = |value: &str, name: &str, problems: &mut Problems| {
        expand(value, &format!("{key}.{name}"), env, problems)
    };
    let idp_client_id = plain(&raw.idp_client_id, "idp_client_id", problems);
    let idp_client_secret = match &raw.idp_client_secret {
        Some(secret) => Some(plain(secret, "idp_client_secret", problems)?),
        None => None,
    };
    let id_token = plain(&raw.id_token, "id_token", problems);
    let client_id = plain(&raw.client_id, "client_id", problems);
    let client_secret = match &raw.client_secret {
        Some(secret) => Some(plain(secret, "client_secret", problems)?),
        None => None,
    };
    Some(EnterpriseSettings {
        idp_issuer: idp_issuer?,
        idp_token_endpoint: idp_token_endpoint?,
        idp_client_id: idp_client_id?.expose().to_owned(),
        idp_client_secret,
        id_token: id_token?,
        client_id: client_id?.expose().to_owned(),
        client_secret,
        scopes: raw.scopes.clone(),
    })
}

fn at_least_one(value: u32, key: &str, problems: &mut Problems) -> u32 {
    if value == 0 {
        problems.add(key, "must be at least 1");
        return 1;
    }
    value
}

fn is_valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn http_url(value: &str, key: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            problems.add(
                key,
                format!("\"{value}\" must be an http:// or https:// URL with a host"),
            );
            None
        }
        Err(error) => {
            problems.add(
                key,
                format!(
                    "\"{value}\" is not a URL ({error}); write e.g. \"https://example.com/mcp\""
                ),
            );
            None
        }
    }
}

/// Replaces each `${NAME}` with the environment variable `NAME`.
fn expand(
    value: &str,
    key: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    problems: &mut Problems,
) -> Option<Secret> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut ok = true;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.add(key, "has \"${\" without a closing \"}\"");
            return None;
        };
        let name = &after[..end];
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            problems.add(
                key,
                format!("\"${{{name}}}\" is not a variable reference; names use A-Z, 0-9 and _"),
            );
            ok = false;
        } else {
            match env(name) {
                Some(resolved) => out.push_str(&resolved),
                None => {
                    problems.add(
                        key,
                        format!(
                            "environment variable {name} is not set; export {name}=... before starting mcpgram"
                        ),
                    );
                    ok = false;
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    ok.then(|| Secret::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[telegram]
token = "${TELEGRAM_BOT_TOKEN}"
api_url = "http://127.0.0.1:9999"
allowed_users = [42]

[http]
listen = "127.0.0.1:18766"

[vault]
dir = "/tmp/vault"

[[mcp.servers]]
id = "demo"
name = "Demo"
url = "http://localhost:3000/mcp"
trusted = true
[mcp.servers.oauth]
enabled = true
scopes = ["mcp:tools"]

[[mcp.servers]]
id = "todoist-token"
url = "https://api.todoist.com/mcp/v1"
[mcp.servers.headers]
Authorization = "Bearer ${TODOIST_API_TOKEN}"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "TELEGRAM_BOT_TOKEN" => Some("123:abc".into()),
            "TODOIST_API_TOKEN" => Some("todo-secret".into()),
            "DATABASE_URL" => Some("postgres://bot:hunter2@db.internal/mcpgram".into()),
            "REPORTS_CLIENT_SECRET" | "CORP_ID_TOKEN" | "WIKI_CLIENT_SECRET" => {
                Some("example-secret".into())
            }
            _ => None,
        }
    }

    fn problems_of(text: &str) -> Vec<Problem> {
        match parse(text, Path::new("test.toml"), &env) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn keys_of(text: &str) -> Vec<String> {
        problems_of(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn example_shape_parses_and_resolves_env() {
        let config = parse(GOOD, Path::new("test.toml"), &env).unwrap();
        assert_eq!(config.telegram.token.expose(), "123:abc");
        assert_eq!(config.telegram.allowed_users, vec![42]);
        assert_eq!(config.servers.len(), 2);
        let demo = config.server("demo").unwrap();
        assert_eq!(demo.name, "Demo");
        assert!(demo.trusted && demo.is_oauth());
        let ServerAuth::Headers(headers) = &config.server("todoist-token").unwrap().auth else {
            panic!("expected headers");
        };
        assert_eq!(headers["Authorization"].expose(), "Bearer todo-secret");
        assert_eq!(
            config.server("todoist-token").unwrap().name,
            "todoist-token"
        );
        assert_eq!(
            config.vault.key_file,
            PathBuf::from("/tmp/vault/identity.txt")
        );
    }

    #[test]
    fn messages_per_second_defaults_to_telegrams_limit_and_is_bounded() {
        let config = parse(GOOD, Path::new("test.toml"), &env).unwrap();
        assert_eq!(config.telegram.messages_per_second, 30);
        let paid = GOOD.replace("[telegram]", "[telegram]\nmessages_per_second = 1000");
        let config = parse(&paid, Path::new("test.toml"), &env).unwrap();
        assert_eq!(config.telegram.messages_per_second, 1000);
        for wrong in ["0", "1001"] {
            let text = GOOD.replace(
                "[telegram]",
                &format!("[telegram]\nmessages_per_second = {wrong}"),
            );
            assert_eq!(keys_of(&text), ["telegram.messages_per_second"]);
        }
    }

    #[test]
    fn the_store_is_the_files_unless_postgres_is_asked_for() {
        let config = parse(GOOD, Path::new("t.toml"), &env).unwrap();
        assert_eq!(config.store, StoreConfig::Files);
        let files = format!("{GOOD}\n[store]\nkind = \"files\"\n");
        assert_eq!(
            parse(&files, Path::new("t.toml"), &env).unwrap().store,
            StoreConfig::Files
        );
        let postgres =
            format!("{GOOD}\n[store]\nkind = \"postgres\"\nurl = \"${{DATABASE_URL}}\"\n");
        let StoreConfig::Postgres { url, lease } =
            parse(&postgres, Path::new("t.toml"), &env).unwrap().store
        else {
            panic!("expected postgres");
        };
        assert_eq!(url.expose(), "postgres://bot:hunter2@db.internal/mcpgram");
        assert_eq!(lease, Duration::from_secs(60));
    }

    #[test]
    fn the_lease_is_a_bounded_duration_for_postgres_only() {
        let postgres =
            format!("{GOOD}\n[store]\nkind = \"postgres\"\nurl = \"${{DATABASE_URL}}\"\n");
        let short = format!("{postgres}lease = \"5s\"\n");
        let Ok(Config {
            store: StoreConfig::Postgres { lease, .. },
            ..
        }) = parse(&short, Path::new("t.toml"), &env)
        else {
            panic!("expected postgres");
        };
        assert_eq!(lease, Duration::from_secs(5));
        for wrong in ["1s", "11m", "soon"] {
            let text = format!("{postgres}lease = \"{wrong}\"\n");
            assert_eq!(keys_of(&text), vec!["store.lease"], "{wrong}");
        }
        let files = format!("{GOOD}\n[store]\nlease = \"5s\"\n");
        assert_eq!(keys_of(&files), vec!["store.lease"]);
    }

    #[test]
    fn a_postgres_store_needs_a_url_and_the_problems_never_show_it() {
        let missing = format!("{GOOD}\n[store]\nkind = \"postgres\"\n");
        let problems = problems_of(&missing);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "store.url");
        assert!(problems[0].message.contains("store.kind = \"postgres\""));
        assert!(problems[0].message.contains("${DATABASE_URL}"));

        let unset = format!("{GOOD}\n[store]\nkind = \"postgres\"\nurl = \"${{NO_DATABASE}}\"\n");
        assert_eq!(keys_of(&unset), vec!["store.url"]);

        let garbage =
            format!("{GOOD}\n[store]\nkind = \"postgres\"\nurl = \"mysql://u:pw-SECRET@h/db\"\n");
        let problems = problems_of(&garbage);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].message.contains("pw-SECRET"), "{problems:?}");

        let stray = format!("{GOOD}\n[store]\nurl = \"${{DATABASE_URL}}\"\n");
        assert_eq!(keys_of(&stray), vec!["store.url"]);
        let unknown = format!("{GOOD}\n[store]\nkind = \"redis\"\n");
        assert_eq!(keys_of(&unknown), vec!["store.kind"]);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = GOOD.replace("trusted = true", "trusted = true\ntrustd = true");
        let error = parse(&text, Path::new("test.toml"), &env).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Syntax { .. } if error.to_string().contains("trustd")),
            "{error}"
        );
    }

    const MACHINE: &str = r#"
[[mcp.servers]]
id = "reports"
url = "https://reports.example/mcp"
[mcp.servers.client_credentials]
client_id = "bot"
client_secret = "${TODOIST_API_TOKEN}"
scopes = ["read"]

[[mcp.servers]]
id = "corp"
url = "https://corp.example/mcp"
[mcp.servers.enterprise]
idp_issuer = "https://idp.example"
idp_token_endpoint = "https://idp.example/token"
idp_client_id = "idp-client"
id_token = "${TODOIST_API_TOKEN}"
client_id = "corp-client"
client_secret = "s3"
"#;

    #[test]
    fn machine_identities_parse() {
        let config = parse(&format!("{GOOD}{MACHINE}"), Path::new("t.toml"), &env).unwrap();
        let ServerAuth::ClientCredentials(cc) = &config.server("reports").unwrap().auth else {
            panic!("expected client credentials");
        };
        assert_eq!(cc.client_id, "bot");
        assert!(
            matches!(&cc.credential, ClientCredential::Secret(s) if s.expose() == "todo-secret")
        );
        let ServerAuth::Enterprise(e) = &config.server("corp").unwrap().auth else {
            panic!("expected enterprise");
        };
        assert_eq!(e.id_token.expose(), "todo-secret");
        assert_eq!(e.idp_client_secret, None);
        assert_eq!(e.client_secret.as_ref().map(Secret::expose), Some("s3"));
    }

    #[test]
    fn machine_identities_exclude_other_auth_and_need_a_credential() {
        let both = MACHINE.replace(
            "[mcp.servers.enterprise]",
            "[mcp.servers.headers]\nX = \"y\"\n[mcp.servers.enterprise]",
        );
        assert_eq!(
            keys_of(&format!("{GOOD}{both}")),
            vec!["mcp.servers[3].enterprise"]
        );
        let no_secret = MACHINE.replace("client_secret = \"${TODOIST_API_TOKEN}\"\n", "");
        assert_eq!(
            keys_of(&format!("{GOOD}{no_secret}")),
            vec!["mcp.servers[2].client_credentials"]
        );
        let bad_endpoint = MACHINE.replace("https://idp.example/token", "idp/token");
        assert_eq!(
            keys_of(&format!("{GOOD}{bad_endpoint}")),
            vec!["mcp.servers[3].enterprise.idp_token_endpoint"]
        );
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let text = GOOD.replace("id = \"todoist-token\"", "id = \"demo\"");
        assert_eq!(keys_of(&text), vec!["mcp.servers[1].id"]);
    }

    #[test]
    fn ids_outside_the_alphabet_are_rejected() {
        for bad in ["Demo", "", "a b", "x".repeat(33).as_str(), "dé"] {
            let text = GOOD.replace("id = \"demo\"", &format!("id = \"{bad}\""));
            assert_eq!(keys_of(&text), vec!["mcp.servers[0].id"], "id {bad:?}");
        }
        let text = GOOD.replace("id = \"demo\"", "id = \"a_b-9\"");
        parse(&text, Path::new("t"), &env).unwrap();
    }

    #[test]
    fn headers_with_oauth_are_rejected() {
        let text = GOOD.replace(
            "scopes = [\"mcp:tools\"]",
            "scopes = [\"mcp:tools\"]\n[mcp.servers.headers]\nX-Key = \"v\"",
        );
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "mcp.servers[0].headers");
        assert!(problems[0].message.contains("cannot be combined"));
    }

    #[test]
    fn malformed_urls_are_rejected() {
        let text = GOOD.replace("http://localhost:3000/mcp", "localhost:3000/mcp");
        assert_eq!(keys_of(&text), vec!["mcp.servers[0].url"]);
        let text = GOOD.replace("http://localhost:3000/mcp", "not a url");
        assert_eq!(keys_of(&text), vec!["mcp.servers[0].url"]);
        let text = GOOD.replace("http://127.0.0.1:9999", "ftp://x");
        assert_eq!(keys_of(&text), vec!["telegram.api_url"]);
    }

    #[test]
    fn unset_variables_are_named() {
        let text = GOOD.replace("${TODOIST_API_TOKEN}", "${NOT_SET_ANYWHERE}");
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "mcp.servers[1].headers.Authorization");
        assert!(problems[0].message.contains("NOT_SET_ANYWHERE is not set"));
    }

    #[test]
    fn unparsable_listen_address_is_rejected() {
        let text = GOOD.replace("127.0.0.1:18766", "localhost");
        let problems = problems_of(&text);
        assert_eq!(problems[0].key, "http.listen");
        assert!(problems[0].message.contains("127.0.0.1:18766"));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = GOOD
            .replace("127.0.0.1:18766", "nope")
            .replace("id = \"todoist-token\"", "id = \"Bad Id\"")
            .replace("${TELEGRAM_BOT_TOKEN}", "${MISSING_TOKEN}");
        assert_eq!(
            keys_of(&text),
            vec!["telegram.token", "http.listen", "mcp.servers[1].id"]
        );
    }

    #[test]
    fn the_shipped_example_is_valid_also_with_its_commented_server() {
        let example = include_str!("../config/mcpgram.example.toml");
        let config = parse(example, Path::new("example"), &env).unwrap();
        assert_eq!(config.servers.len(), 1);
        let uncommented: String = example
            .lines()
            .skip_while(|line| !line.starts_with("# [[mcp.servers]]"))
            .map(|line| match line.strip_prefix("# ") {
                // A table or a `key = value` line; prose stays a comment.
                Some(rest)
                    if rest.starts_with('[')
                        || rest
                            .split_once(" = ")
                            .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = format!("{example}\n{uncommented}");
        let config = parse(&all, Path::new("example"), &env).unwrap();
        assert!(matches!(
            config.server("todoist-token").unwrap().auth,
            ServerAuth::Headers(_)
        ));
        assert!(matches!(
            config.server("reports").unwrap().auth,
            ServerAuth::ClientCredentials(_)
        ));
        assert!(matches!(
            config.server("corp-wiki").unwrap().auth,
            ServerAuth::Enterprise(_)
        ));
    }

    #[test]
    fn the_shipped_example_switches_to_postgres_as_it_says() {
        let example = include_str!("../config/mcpgram.example.toml")
            .replace("kind = \"files\"", "kind = \"postgres\"")
            .replace("# url = \"${DATABASE_URL}\"", "url = \"${DATABASE_URL}\"")
            .replace("# lease = ", "lease = ");
        let config = parse(&example, Path::new("example"), &env).unwrap();
        assert!(matches!(config.store, StoreConfig::Postgres { .. }));
    }

    #[test]
    fn api_url_prefix_paths_lose_their_trailing_slash() {
        let text = GOOD.replace("http://127.0.0.1:9999", "http://127.0.0.1:9999/tg/");
        let config = parse(&text, Path::new("t"), &env).unwrap();
        assert_eq!(config.telegram.api_url.path(), "/tg");
    }

    #[test]
    fn hosting_flow_and_limit_keys_are_checked() {
        let with = |telegram: &str, rest: &str| {
            GOOD.replace(
                "allowed_users = [42]",
                &format!("allowed_users = [42]\n{telegram}"),
            )
            .replace("[vault]", &format!("{rest}\n[vault]"))
        };
        // login_url needs an https public_url.
        assert_eq!(
            keys_of(&with("login_url = true", "")),
            vec!["telegram.login_url"]
        );
        let hosted = with("login_url = true", "").replace(
            "listen = \"127.0.0.1:18766\"",
            "listen = \"127.0.0.1:18766\"\npublic_url = \"https://bot.example.com\"",
        );
        let config = parse(&hosted, Path::new("t"), &env).unwrap();
        assert!(config.telegram.login_url && config.is_hosted());

        let flows = |ttl: &str| with("", &format!("[oauth]\nflow_ttl = \"{ttl}\"\n"));
        assert_eq!(
            parse(&flows("90s"), Path::new("t"), &env)
                .unwrap()
                .oauth
                .flow_ttl,
            Duration::from_secs(90)
        );
        assert_eq!(keys_of(&flows("soon")), vec!["oauth.flow_ttl"]);
        assert_eq!(keys_of(&flows("2s")), vec!["oauth.flow_ttl"]);
        let limits = with("", "[limits]\npending_flows_per_user = 0\n");
        assert_eq!(keys_of(&limits), vec!["limits.pending_flows_per_user"]);
    }

    #[test]
    fn a_pre_registered_clients_auth_method_must_fit_its_secret() {
        let oauth = |extra: &str| {
            GOOD.replace(
                "scopes = [\"mcp:tools\"]",
                &format!("scopes = [\"mcp:tools\"]\n{extra}"),
            )
        };
        let config = parse(
            &oauth("client_id = \"c\"\nclient_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_post\"\nresource = false"),
            Path::new("t"),
            &env,
        )
        .unwrap();
        let ServerAuth::OAuth(settings) = &config.server("demo").unwrap().auth else {
            panic!()
        };
        assert_eq!(
            settings.token_endpoint_auth_method,
            Some(TokenAuthMethod::ClientSecretPost)
        );
        assert!(!settings.resource);
        assert_eq!(
            keys_of(&oauth("token_endpoint_auth_method = \"none\"")),
            vec!["mcp.servers[0].oauth.token_endpoint_auth_method"],
            "needs a client_id"
        );
        assert_eq!(
            keys_of(&oauth(
                "client_id = \"c\"\ntoken_endpoint_auth_method = \"client_secret_basic\""
            )),
            vec!["mcp.servers[0].oauth.client_secret"]
        );
        assert_eq!(
            keys_of(&oauth(
                "client_id = \"c\"\ntoken_endpoint_auth_method = \"private_key_jwt\""
            )),
            vec!["mcp.servers[0].oauth.token_endpoint_auth_method"]
        );
    }

    #[test]
    fn disabled_oauth_is_no_auth() {
        let text = GOOD.replace("enabled = true", "enabled = false");
        let config = parse(&text, Path::new("t"), &env).unwrap();
        assert!(matches!(
            config.server("demo").unwrap().auth,
            ServerAuth::None
        ));
    }
}
