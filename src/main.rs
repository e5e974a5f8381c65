//! The `mcpgram` command line: run the bot, check a config file, or try a
//! server from the terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use mcpgram::config::{self, Config, TokenAuthMethod};
use mcpgram::logging::chain;
use mcpgram::mcp::client::Elicitation;
use mcpgram::secret::Secret;
use mcpgram::terminal::{self, AuthOptions, EnterpriseIdp, LoginOptions, Target};
use mcpgram::{app, logging};

#[derive(Parser)]
#[command(
    version,
    about = "A Telegram bot that connects users to their accounts on MCP servers"
)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short, global = true, env = "MCPGRAM_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,

    /// The vault for terminal commands when there is no config file.
    #[arg(
        long,
        global = true,
        env = "MCPGRAM_VAULT_DIR",
        default_value = "./data/vault"
    )]
    vault_dir: PathBuf,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Users with data and the servers it is for (never the secrets), and
    /// the names of the admin secrets.
    List,
    /// Delete everything stored for one Telegram user.
    Forget {
        /// The Telegram user id.
        user: u64,
    },
    /// Keep a secret for `${NAME}` in the config, read from standard input.
    Set { name: String },
    /// Remove a secret kept with `set`.
    Unset { name: String },
    /// Re-encrypt the whole vault under a new identity; the old key is
    /// kept as `<key_file>.old`; an interrupted run resumes when started
    /// again.
    RotateKey,
    /// Copy everything the bot keeps (connections, personal tokens,
    /// consents, registered clients) from the vault's files into
    /// PostgreSQL, or back; the source is left as it was, and a run that
    /// stopped half-way finishes when started again. Stop the bot first.
    Migrate {
        /// Where to copy to: postgres or files.
        #[arg(long, value_enum)]
        to: MigrateTo,
        /// The database, when the config does not name it (`[store] kind =
        /// "postgres"`); DATABASE_URL otherwise. Prefer DATABASE_URL: a
        /// password on the command line stays in the shell's history.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MigrateTo {
    /// From the vault's files into PostgreSQL.
    Postgres,
    /// From PostgreSQL into the vault's files.
    Files,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot (the default).
    Run,
    /// Validate the config file and exit: 0 when valid, 1 with the problems.
    CheckConfig {
        /// Also ask each server how it authorizes, with a verdict each.
        #[arg(long)]
        probe: bool,
    },
    /// Ask any server how it authorizes (protected resource metadata,
    /// authorization server, client registration, scopes, PKCE,
    /// revocation), with a verdict; nothing is registered.
    Probe {
        /// The server's MCP URL.
        url: String,
    },
    /// The vault, for the admin (stop the bot before rotate-key).
    Vault {
        #[command(subcommand)]
        action: VaultCmd,
    },
    /// Ask the running bot's HTTP server (`http.listen`) whether it is up:
    /// exit 0 when `/healthz` answers, 1 otherwise. For container health
    /// checks, which then need no shell or curl.
    Healthcheck,
    /// Sign in to a server from the terminal, as a chat user would, and
    /// say what was discovered, how the client was registered and which
    /// scopes were granted.
    Login {
        /// A server id of the config, or a server's URL.
        target: String,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// List a server's tools.
    Tools {
        /// A server id of the config, or a server's URL.
        target: String,
        /// Print the tools as the server described them (a JSON array,
        /// input schemas verbatim) instead of one line each.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// Call a tool; its result is printed.
    Call {
        /// A server id of the config, or a server's URL.
        target: String,
        /// The tool's name.
        tool: String,
        /// The arguments, a JSON object.
        arguments: Option<String>,
        /// Print the whole result as JSON instead of its content.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        login: LoginArgs,
    },
}

#[derive(Args, Clone, Default)]
struct LoginArgs {
    /// Sign in when the server asks for it (401), and ask for more scopes
    /// when it needs them (403 insufficient_scope); then try again.
    #[arg(long)]
    login: bool,
    /// Follow the authorization URL with an HTTP client instead of asking
    /// a person to open it (for servers that approve without one).
    #[arg(long)]
    open_with_http: bool,
    /// The port of the loopback callback (default: any free one).
    #[arg(long)]
    callback_port: Option<u16>,
    /// A pre-registered client id (servers given by URL).
    #[arg(long)]
    client_id: Option<String>,
    /// Its secret (servers given by URL).
    #[arg(long, env = "MCPGRAM_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// client_secret_basic, client_secret_post or none.
    #[arg(long)]
    token_endpoint_auth_method: Option<String>,
    /// A scope to ask for (repeatable); by default the server's choice.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Leave out RFC 8707 `resource`.
    #[arg(long)]
    no_resource: bool,
    /// A Client ID Metadata Document URL to use as the client id where
    /// the server supports them (SEP-991).
    #[arg(long)]
    client_metadata_url: Option<String>,
    /// Use the OAuth client-credentials grant (a machine client) with
    /// --client-id and --client-secret or --private-key-file.
    #[arg(long)]
    client_credentials: bool,
    /// A PEM private key for private_key_jwt client authentication.
    #[arg(long)]
    private_key_file: Option<PathBuf>,
    /// Its algorithm: RS256, RS384, RS512, ES256 (the default) or ES384.
    #[arg(long, default_value = "ES256")]
    signing_algorithm: String,
    /// Enterprise-managed authorization (SEP-990): the identity
    /// provider's token endpoint, where the ID token is exchanged for an
    /// ID-JAG; --client-id (and MCPGRAM_CLIENT_SECRET) are then the
    /// client at the server's authorization server.
    #[arg(long, requires_all = ["idp_issuer", "idp_client_id"])]
    idp_token_endpoint: Option<String>,
    /// The identity provider's issuer.
    #[arg(long)]
    idp_issuer: Option<String>,
    /// The client id at the identity provider.
    #[arg(long)]
    idp_client_id: Option<String>,
    /// Its secret, if it is a confidential client.
    #[arg(long, env = "MCPGRAM_IDP_CLIENT_SECRET", hide_env_values = true)]
    idp_client_secret: Option<String>,
    /// A file holding the ID token to exchange (or MCPGRAM_ID_TOKEN).
    #[arg(long)]
    id_token_file: Option<PathBuf>,
    /// How to answer a server's elicitation requests: decline (the
    /// default) or accept-defaults (accept at once with the schema's
    /// defaults).
    #[arg(long, default_value = "decline")]
    elicitation: String,
}

impl LoginArgs {
    fn options(self) -> Result<LoginOptions, String> {
        let method = match self.token_endpoint_auth_method.as_deref() {
            None => None,
            Some("client_secret_basic") => Some(TokenAuthMethod::ClientSecretBasic),
            Some("client_secret_post") => Some(TokenAuthMethod::ClientSecretPost),
            Some("none") => Some(TokenAuthMethod::None),
            Some(other) => {
                return Err(format!(
                    "--token-endpoint-auth-method {other}: use client_secret_basic, client_secret_post or none"
                ));
            }
        };
        let elicitation = match self.elicitation.as_str() {
            "decline" => Elicitation::Unsupported,
            "accept-defaults" => Elicitation::AcceptDefaults,
            other => {
                return Err(format!(
                    "--elicitation {other}: use decline or accept-defaults"
                ));
            }
        };
        let private_key = match &self.private_key_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|error| format!("--private-key-file {}: {error}", path.display()))?;
                if !["RS256", "RS384", "RS512", "ES256", "ES384"]
                    .contains(&self.signing_algorithm.as_str())
                {
                    return Err(format!(
                        "--signing-algorithm {}: use RS256, RS384, RS512, ES256 or ES384",
                        self.signing_algorithm
                    ));
                }
                Some((Secret::new(pem), self.signing_algorithm.clone()))
            }
        };
        let enterprise = match &self.idp_token_endpoint {
            None => None,
            Some(token_endpoint) => {
                let id_token = match &self.id_token_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|error| format!("--id-token-file {}: {error}", path.display()))?
                        .trim()
                        .to_owned(),
                    None => std::env::var("MCPGRAM_ID_TOKEN").map_err(|_| {
                        "--idp-token-endpoint needs the ID token: --id-token-file or MCPGRAM_ID_TOKEN"
                            .to_owned()
                    })?,
                };
                Some(EnterpriseIdp {
                    issuer: self.idp_issuer.clone().unwrap_or_default(),
                    token_endpoint: token_endpoint.clone(),
                    client_id: self.idp_client_id.clone().unwrap_or_default(),
                    client_secret: self.idp_client_secret.clone().map(Secret::new),
                    id_token: Secret::new(id_token),
                })
            }
        };
        Ok(LoginOptions {
            elicitation,
            open_with_http: self.open_with_http,
            login: self.login,
            port: self.callback_port,
            auth: AuthOptions {
                client_id: self.client_id,
                client_secret: self.client_secret.map(Secret::new),
                token_endpoint_auth_method: method,
                scopes: self.scopes,
                no_resource: self.no_resource,
                client_metadata_url: self.client_metadata_url,
                client_credentials: self.client_credentials,
                private_key,
                enterprise,
            },
        })
    }
}

/// `GET /healthz` on the bot's own listener (on loopback when it listens
/// on every address).
async fn healthcheck(config: &Config) -> ExitCode {
    let mut address = config.http.listen;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{address}/healthz");
    let answer = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(client) => client.get(&url).send().await,
        Err(error) => {
            eprintln!("mcpgram: {error}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!(
                "mcpgram: {url} answered HTTP {}",
                response.status().as_u16()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("mcpgram: {url}: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// `mcpgram probe <url>`: the URL as a server users would connect to.
fn probe_url(config: &Config, url: &str) -> ExitCode {
    let url = match url::Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            eprintln!("mcpgram: {url} is not an http(s) URL");
            return ExitCode::FAILURE;
        }
    };
    let server = std::sync::Arc::new(config::ServerConfig::from_url(
        url,
        config::ServerAuth::None,
    ));
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(terminal::probe::servers(config, &[server])),
        Err(error) => {
            eprintln!("mcpgram: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-files limit for serving, and tells the admin when it
/// stays too low for many users' sessions.
fn raise_open_files() {
    use mcpgram::open_files::{self, Limit};
    let limit = open_files::raise();
    match limit {
        Limit::Raised { from, to } => {
            tracing::debug!(from, to, "open-files limit raised to the hard limit")
        }
        Limit::Kept(_) => {}
        Limit::Refused { at } => {
            tracing::debug!(at, "the system refused to raise the open-files limit")
        }
    }
    if !limit.is_enough() {
        tracing::warn!(
            limit = limit.now(),
            enough = open_files::ENOUGH,
            "few open files allowed: each warm MCP session holds a connection, so about half \
             as many users can call tools at once; raise the hard limit (LimitNOFILE, ulimit -n, \
             or the container's nofile ulimit)"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = std::fs::read_to_string(&cli.config)
        .map(|text| config::log_format(&text))
        .unwrap_or_default();
    logging::init_with(format);
    mcpgram::tls::install();
    let command = cli.command.unwrap_or(Cmd::Run);
    // A URL to probe needs no config file either.
    if let Cmd::Probe { .. } = &command
        && !cli.config.exists()
    {
        let config = Config::standalone(cli.vault_dir.clone());
        let Cmd::Probe { url } = command else {
            unreachable!("matched above")
        };
        return probe_url(&config, &url);
    }
    let target = match &command {
        Cmd::Login { target, .. } | Cmd::Tools { target, .. } | Cmd::Call { target, .. } => {
            Some(Target::parse(target))
        }
        _ => None,
    };
    // The vault's own commands need only its place, not a valid config
    // (`vault set` may be what makes it valid).
    if let Cmd::Vault { action } = &command {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("mcpgram: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        let path = &cli.config;
        return match action {
            VaultCmd::List => runtime.block_on(terminal::vault::list(path)),
            VaultCmd::Forget { user } => runtime.block_on(terminal::vault::forget(path, *user)),
            VaultCmd::Set { name } => runtime.block_on(terminal::vault::set(path, name)),
            VaultCmd::Unset { name } => runtime.block_on(terminal::vault::unset(path, name)),
            VaultCmd::RotateKey => terminal::vault::rotate(path),
            VaultCmd::Migrate { to, url } => {
                let to = match to {
                    MigrateTo::Postgres => terminal::vault::Destination::Postgres,
                    MigrateTo::Files => terminal::vault::Destination::Files,
                };
                let url = url.clone().map(Secret::new);
                runtime.block_on(terminal::vault::migrate(path, to, url))
            }
        };
    }
    let config = match (config::load(&cli.config), &command, &target) {
        (Ok(config), Cmd::CheckConfig { probe }, _) => {
            println!(
                "{}: OK ({} server(s))",
                cli.config.display(),
                config.servers.len()
            );
            if let Some(note) = replicas_note(&config) {
                println!("{note}");
            }
            let report = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|error| error.to_string())
                .and_then(|runtime| runtime.block_on(terminal::vault::check(&cli.config)));
            return match report {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    if *probe {
                        return match tokio::runtime::Runtime::new() {
                            Ok(runtime) => {
                                runtime.block_on(terminal::probe::servers(&config, &config.servers))
                            }
                            Err(error) => {
                                eprintln!("mcpgram: cannot start the async runtime: {error}");
                                ExitCode::FAILURE
                            }
                        };
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("mcpgram: {}", logging::scrub(&error));
                    ExitCode::FAILURE
                }
            };
        }
        (Ok(config), _, _) => config,
        // A server given by URL needs no config file.
        (Err(config::ConfigError::Read { source, .. }), _, Some(target))
            if target.is_url() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Config::standalone(cli.vault_dir.clone())
        }
        (Err(error), _, _) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mcpgram: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let with_port = |mut config: Config, port: Option<u16>| {
        if let Some(port) = port {
            config.http.listen.set_port(port);
        }
        config
    };
    if let Cmd::Run = command {
        raise_open_files();
    }
    match command {
        Cmd::Run => match runtime.block_on(app::run(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mcpgram: {}", logging::scrub(&chain(&error).to_string()));
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { .. } | Cmd::Vault { .. } => unreachable!("answered above"),
        Cmd::Probe { url } => probe_url(&config, &url),
        Cmd::Healthcheck => runtime.block_on(healthcheck(&config)),
        Cmd::Login { login, .. } | Cmd::Tools { login, .. } | Cmd::Call { login, .. }
            if login.clone().options().is_err() =>
        {
            eprintln!("mcpgram: {}", login.options().err().unwrap_or_default());
            ExitCode::FAILURE
        }
        Cmd::Login { login, .. } => {
            let port = login.callback_port;
            let options = login.options().unwrap_or_default();
            let config = with_port(config, port);
            runtime.block_on(terminal::login(config, target.expect("parsed"), options))
        }
        Cmd::Tools { login, json, .. } => {
            let port = login.callback_port;
            let options = login.options().unwrap_or_default();
            let config = with_port(config, port);
            let output = terminal::Output::from_flag(json);
            runtime.block_on(terminal::tools(
                config,
                target.expect("parsed"),
                options,
                output,
            ))
        }
        Cmd::Call {
            tool,
            arguments,
            login,
            json,
            ..
        } => {
            let arguments = match arguments.as_deref().map(serde_json::from_str) {
                None => None,
                Some(Ok(serde_json::Value::Object(map))) => Some(map),
                Some(_) => {
                    eprintln!(
                        "mcpgram: the arguments must be a JSON object, e.g. '{{\"name\": \"Alice\"}}'"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let port = login.callback_port;
            let options = login.options().unwrap_or_default();
            let config = with_port(config, port);
            runtime.block_on(terminal::call(
                config,
                target.expect("parsed"),
                tool,
                arguments,
                options,
                terminal::Output::from_flag(json),
            ))
        }
    }
}

/// What `check-config` says about running several replicas: the shared
/// store makes them possible, but long polling cannot be shared (Telegram
/// hands each update to one `getUpdates` and refuses a second poller).
fn replicas_note(config: &config::Config) -> Option<&'static str> {
    match (&config.store, &config.telegram.delivery) {
        (config::StoreConfig::Postgres { .. }, config::Delivery::Polling) => Some(
            "replicas: telegram.mode is \"polling\", so run one replica only; several replicas on the shared store need telegram.mode = \"webhook\"",
        ),
        (config::StoreConfig::Postgres { .. }, config::Delivery::Webhook { .. }) => Some(
            "replicas: any number may share this store behind one http.public_url, all with the same vault key",
        ),
        (config::StoreConfig::Files, _) => None,
    }
}
