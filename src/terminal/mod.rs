//! The terminal adapter: commands an admin runs on the bot's host (or
//! anywhere), driving the same core and OAuth engine as the chat. Output
//! is for people; a failure is one line on stderr (the log above it has
//! the causes) and exit code 1.
//!
//! - [`target`]: a configured server by id, or any server by URL.
//! - [`login`]: a loopback callback, and following the authorization URL
//!   without a person (`--open-with-http`).
//! - [`vault`]: `mcpgram vault …`, the admin's view of the vault.
//! - [`probe`]: `mcpgram probe` and `check-config --probe`.

pub mod login;
pub mod probe;
pub mod target;
pub mod vault;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use tokio::sync::mpsc;

use crate::app;
use crate::config::{Config, ServerConfig};
use crate::gateway::{CallError, ClientSource, ConnectionSummary, FlowReport, Gateway};
use crate::logging::chain;

pub use login::LoginOptions;
pub use target::{AuthOptions, EnterpriseIdp, Target};

/// The vault namespace of the terminal's own logins. Telegram user ids
/// start at 1, so 0 never belongs to a chat user.
pub const TERMINAL_USER: u64 = 0;

/// Authorizations one command may go through, the first sign-in and
/// step-ups together: a server that keeps refusing gets no more.
const MAX_AUTHORIZATIONS: usize = 3;

/// What a terminal command needs: the core, and a way to log in.
struct Session {
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
    /// A server given by URL that holds no tokens yet is asked without
    /// any: it may need none, and if it does its 401 says how to get them.
    anonymous: Option<Arc<ServerConfig>>,
    login: login::Callback,
    done: mpsc::UnboundedReceiver<login::Outcome>,
}

impl Session {
    async fn open(
        config: Config,
        target: &Target,
        options: &LoginOptions,
    ) -> Result<Self, ExitCode> {
        let auth = &options.auth;
        let mut config = config;
        let server = target.server(&config, auth).map_err(|message| {
            eprintln!("mcpgram: {message}");
            ExitCode::FAILURE
        })?;
        if config.server(&server.id).is_none() {
            config.servers.push(server.clone());
        }
        let config = Arc::new(config);
        let vault = app::open_vault(&config).await.map_err(|error| {
            eprintln!("mcpgram: {}", chain(&error));
            ExitCode::FAILURE
        })?;
        let stores = app::open_terminal_stores(&config, vault)
            .await
            .map_err(|error| {
                eprintln!("mcpgram: {}", chain(&error));
                ExitCode::FAILURE
            })?;
        let (login, done) = login::Callback::bind(&config).await.map_err(|error| {
            eprintln!("mcpgram: {error}");
            ExitCode::FAILURE
        })?;
        let gateway = Arc::new(
            Gateway::new(config, stores, login.redirect_uri(), login.notifier())
                .with_elicitation(options.elicitation),
        );
        login.serve(gateway.clone());
        let holds_tokens = gateway
            .connection_summary(TERMINAL_USER, &server)
            .await
            .ok()
            .flatten()
            .is_some();
        let per_user = matches!(server.auth, crate::config::ServerAuth::OAuth(_));
        let anonymous = (target.is_url() && per_user && !holds_tokens).then(|| {
            Arc::new(ServerConfig {
                user_token: None,
                auth: crate::config::ServerAuth::None,
                ..(*server).clone()
            })
        });
        Ok(Self {
            gateway,
            server,
            anonymous,
            login,
            done,
        })
    }

    /// The server as requests should reach it now.
    fn current(&self) -> &ServerConfig {
        self.anonymous.as_deref().unwrap_or(&self.server)
    }

    /// Runs an authorization flow to the end: starts it, prints or follows
    /// its URL, waits for the callback, and says what happened.
    async fn log_in(
        &mut self,
        options: &LoginOptions,
        start: crate::gateway::StartOptions,
    ) -> Result<(), String> {
        let outcome = self
            .login
            .run(&self.gateway, &self.server, options, start, &mut self.done)
            .await?;
        self.anonymous = None;
        print_login(&self.server, &outcome.report, outcome.summary.as_ref());
        Ok(())
    }
}

/// `mcpgram login <target>`.
pub async fn login(config: Config, target: Target, options: LoginOptions) -> ExitCode {
    let mut session = match Session::open(config, &target, &options).await {
        Ok(session) => session,
        Err(code) => return code,
    };
    let result = session
        .log_in(&options, crate::gateway::StartOptions::default())
        .await;
    session.gateway.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mcpgram: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// For people.
    Text,
    /// As the server sent them, for scripts.
    Json,
}

impl Output {
    pub fn from_flag(json: bool) -> Self {
        if json { Output::Json } else { Output::Text }
    }
}

fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `mcpgram tools <target>`: the server's tools, one per line.
pub async fn tools(
    config: Config,
    target: Target,
    options: LoginOptions,
    output: Output,
) -> ExitCode {
    run(config, target, options, move |session| async move {
        let mut tools = session
            .gateway
            .list_tools(TERMINAL_USER, session.current())
            .await?;
        if output == Output::Json {
            print_json(&tools);
            return Ok(true);
        }
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = std::io::stdout().lock();
        let server = &session.server;
        let _ = writeln!(
            out,
            "{} ({}): {} tool(s)",
            server.name,
            server.id,
            tools.len()
        );
        for tool in &tools {
            let summary = tool
                .description
                .as_deref()
                .or(tool.title.as_deref())
                .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
            let _ = match summary {
                Some(summary) => writeln!(out, "  {}  {}", tool.name, summary),
                None => writeln!(out, "  {}", tool.name),
            };
        }
        Ok(true)
    })
    .await
}

/// A call's progress on stderr (stdout keeps the result alone). The
/// server's questions are answered by the client handler as the options
/// say (defaults, or declined), never here.
struct Stderr;

impl crate::gateway::CallObserver for Stderr {
    fn progress(&self, update: crate::gateway::Progress) {
        let total = update
            .total
            .map(|total| format!(" of {total}"))
            .unwrap_or_default();
        let message = update
            .message
            .map(|m| format!(": {}", crate::text::foreign(&m, 200)))
            .unwrap_or_default();
        eprintln!("progress {}{total}{message}", update.progress);
    }

    fn elicit(
        &self,
        _request: rmcp::model::ElicitRequestParams,
    ) -> futures_util::future::BoxFuture<'static, rmcp::model::ElicitResult> {
        Box::pin(async { rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Decline) })
    }
}

/// `mcpgram call <target> <tool> [json]`: the result's content on stdout.
pub async fn call(
    config: Config,
    target: Target,
    tool: String,
    arguments: Option<JsonObject>,
    options: LoginOptions,
    output: Output,
) -> ExitCode {
    run(config, target, options, move |session| {
        let (tool, arguments) = (tool.clone(), arguments.clone());
        async move {
            let watch = crate::gateway::Watch::new(Arc::new(Stderr));
            let result = session
                .gateway
                .call_tool(
                    TERMINAL_USER,
                    session.current(),
                    &tool,
                    arguments,
                    Some(watch),
                )
                .await?;
            match output {
                Output::Text => print_result(&result),
                Output::Json => print_json(&result),
            }
            Ok(result.is_error != Some(true))
        }
    })
    .await
}

/// Runs `work` (true: succeeded) on a session. With `--login`, a 401
/// starts an authorization from the server's challenge and a 403
/// `insufficient_scope` a step-up to the union of the granted and the
/// required scopes; then `work` runs again, [`MAX_AUTHORIZATIONS`] times
/// at most.
async fn run<F, Fut>(config: Config, target: Target, options: LoginOptions, work: F) -> ExitCode
where
    F: Fn(Arc<Session>) -> Fut,
    Fut: Future<Output = Result<bool, CallError>>,
{
    let session = match Session::open(config, &target, &options).await {
        Ok(session) => session,
        Err(code) => return code,
    };
    let mut session = Arc::new(session);
    let mut authorizations = 0;
    let outcome = loop {
        let result = work(session.clone()).await;
        let start = match &result {
            _ if authorizations >= MAX_AUTHORIZATIONS => break result,
            Err(CallError::NotAuthorized { challenge, .. }) if options.login => {
                crate::gateway::StartOptions {
                    challenge: challenge.clone(),
                    ..Default::default()
                }
            }
            Err(CallError::InsufficientScope {
                required,
                challenge,
                ..
            }) if options.login => {
                let granted = session
                    .gateway
                    .connection_summary(TERMINAL_USER, &session.server)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| s.scopes)
                    .unwrap_or_default();
                crate::gateway::StartOptions {
                    challenge: challenge.clone(),
                    scopes: Some(crate::gateway::step_up_scopes(
                        &granted,
                        required.as_deref(),
                    )),
                    ..Default::default()
                }
            }
            _ => break result,
        };
        let Some(open) = Arc::get_mut(&mut session) else {
            break result;
        };
        authorizations += 1;
        if let Err(message) = open.log_in(&options, start).await {
            eprintln!("mcpgram: {message}");
            return ExitCode::FAILURE;
        }
    };
    session.gateway.shutdown().await;
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!(
                "mcpgram: {}: {}",
                session.server.id,
                failure(&error, session.server.is_oauth())
            );
            ExitCode::FAILURE
        }
    }
}

fn print_result(result: &CallToolResult) {
    let mut out = std::io::stdout().lock();
    for block in &result.content {
        let _ = match block {
            ContentBlock::Text(text) => writeln!(out, "{}", text.text),
            ContentBlock::Image(image) => writeln!(out, "[image: {}]", image.mime_type),
            ContentBlock::Audio(audio) => writeln!(out, "[audio: {}]", audio.mime_type),
            ContentBlock::ResourceLink(link) => writeln!(out, "[link: {}]", link.uri),
            _ => writeln!(out, "[embedded resource]"),
        };
    }
    if let Some(structured) = &result.structured_content {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(structured).unwrap_or_default()
        );
    }
    if result.is_error == Some(true) {
        eprintln!("mcpgram: the tool reported an error");
    }
}

fn print_login(server: &ServerConfig, report: &FlowReport, summary: Option<&ConnectionSummary>) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "Server: {}",
        crate::logging::scrub(server.url.as_str())
    );
    let found = if report.assumed_endpoints {
        "endpoints assumed at the server's root (2025-03-26 default; nothing was discovered)"
    } else {
        "discovered"
    };
    let _ = writeln!(
        out,
        "Authorization server: {} ({found})",
        report
            .issuer
            .as_deref()
            .unwrap_or(&report.authorization_endpoint)
    );
    let client = match report.client {
        ClientSource::PreRegistered => "pre-registered (from the config or the command line)",
        ClientSource::MetadataDocument => "Client ID Metadata Document (SEP-991)",
        ClientSource::CachedRegistration => "dynamic registration made earlier (RFC 7591)",
        ClientSource::Registered => "registered now (RFC 7591)",
    };
    let _ = writeln!(out, "Client: {client}");
    let requested = if report.scopes.is_empty() {
        "(none)".to_owned()
    } else {
        report.scopes.join(" ")
    };
    let _ = writeln!(out, "Scopes asked for: {requested}");
    if let Some(summary) = summary {
        let granted = if summary.scopes.is_empty() {
            "(none named)".to_owned()
        } else {
            summary.scopes.join(" ")
        };
        let _ = writeln!(out, "Signed in. Scopes granted: {granted}");
        if let Some(left) = summary.expires_in {
            let _ = writeln!(out, "Access token expires in {} s", left.as_secs());
        }
        let _ = writeln!(
            out,
            "Refresh token: {}",
            if summary.refreshable { "yes" } else { "no" }
        );
    }
}

/// One line for an admin: what failed, in the error's own terms; the log
/// line above it (at warn level) has the causes.
fn failure(error: &CallError, oauth: bool) -> String {
    let line = match error {
        CallError::NotAuthorized { .. } if oauth => {
            "not signed in to this server: run `mcpgram login` for it first, or add --login"
                .to_owned()
        }
        CallError::NotAuthorized { .. } => {
            "the server wants a sign-in: run `mcpgram login` for it first, or add --login"
                .to_owned()
        }
        CallError::UrlRequired { pages } => format!(
            "the server asks you to open a page first, then to try again: {}",
            pages
                .iter()
                .map(|page| page.url.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        CallError::InvalidArguments { tool, problems } => format!(
            "the arguments do not fit the input schema of {tool}: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => other.to_string(),
    };
    crate::logging::scrub(&line)
}
