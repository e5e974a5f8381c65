//! The bot's commands: the menu Telegram shows, and reading what users
//! type into [`Request`]s whose servers are already resolved.
//!
//! teloxide's derive gives the command menu, `/help` and the command
//! recognition (including `/cmd@this_bot` in groups); the arguments are
//! checked here, because they depend on the config (server ids) and on
//! JSON, and a bad one must be answered with a typed [`Problem`] rather
//! than dropped. Command names are matched case-insensitively (`/Connect`
//! from a phone's auto-capitalisation), which teloxide's own
//! `filter_command` does not do.

use std::sync::Arc;

use rmcp::model::JsonObject;
use teloxide::utils::command::{BotCommands, ParseError};

use super::render::Listing;
use crate::config::ServerConfig;
use crate::gateway::Gateway;

/// Every command, with the description Telegram shows in its menu.
#[derive(BotCommands, Clone, Debug, PartialEq, Eq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    #[command(description = "what this bot does")]
    Start(String),
    #[command(description = "how to use this bot")]
    Help(String),
    #[command(description = "configured servers and whether you are connected")]
    Servers(String),
    #[command(description = "your connections")]
    Status(String),
    #[command(description = "connect your account: /connect <server>")]
    Connect(String),
    #[command(description = "list a server's tools: /tools <server>")]
    Tools(String),
    #[command(description = "call a tool: /call <server> <tool> {json}")]
    Call(String),
    #[command(description = "list a server's resources: /resources <server>")]
    Resources(String),
    #[command(description = "list a server's prompts: /prompts <server>")]
    Prompts(String),
    #[command(description = "give your own token for a server: /token <server>")]
    Token(String),
    #[command(description = "forget your tokens: /disconnect <server>")]
    Disconnect(String),
    #[command(description = "stop what is running")]
    Cancel(String),
    #[command(description = "delete everything the bot keeps for you")]
    Forget(String),
}

/// Which command a usage hint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Connect,
    Token,
    Tools,
    Resources,
    Prompts,
    Call,
    Disconnect,
}

/// A tool call with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    pub server: Arc<ServerConfig>,
    pub tool: String,
    pub arguments: Option<JsonObject>,
}

/// A command ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Start,
    Help,
    Servers,
    Status,
    Connect(Arc<ServerConfig>),
    Tools(Arc<ServerConfig>),
    Resources(Arc<ServerConfig>),
    Prompts(Arc<ServerConfig>),
    Call(CallRequest),
    Token(Arc<ServerConfig>),
    Disconnect(Arc<ServerConfig>),
    Cancel,
    Forget,
}

/// What is wrong with a command's arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    Usage(Verb),
    UnknownServer {
        typed: String,
        verb: Verb,
    },
    MissingTool {
        server: String,
    },
    /// `detail` is serde_json's description of the syntax error.
    BadJson {
        detail: String,
    },
    NotAnObject,
}

/// What a text message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Not a command: ordinary text.
    Text,
    /// A command addressed to another bot (`/cmd@other_bot`).
    ForAnotherBot,
    Request(Request),
    Invalid(Problem),
    /// A command we don't know. In a group it may be another bot's, so it
    /// is answered there only when addressed to us by name.
    Unknown {
        command: String,
        addressed: bool,
    },
}

const START_CONNECT_PREFIX: &str = "connect-";

/// callback_data of the "New link" button under an expired link; with a
/// server id of at most 32 characters it stays within Telegram's 64 bytes.
const NEW_LINK_PREFIX: &str = "connect:";

/// The callback data that asks for a new link to `server_id`.
pub fn new_link_data(server_id: &str) -> String {
    format!("{NEW_LINK_PREFIX}{server_id}")
}

/// The server a "New link" button asks for.
pub fn new_link_server(data: &str, gateway: &Gateway) -> Option<Arc<ServerConfig>> {
    gateway.find_server(data.strip_prefix(NEW_LINK_PREFIX)?)
}

/// callback_data of the browsers (tools, resources, prompts): a page of a
/// server's list, or one entry (its index in the sorted list). A server id
/// has at most 32 characters, so "tools:<id>:<page>" stays within
/// Telegram's 64 bytes however long the names are.
fn prefixes(listing: Listing) -> (&'static str, &'static str) {
    match listing {
        Listing::Tools => ("tools:", "tool:"),
        Listing::Resources => ("res:", "rd:"),
        Listing::Prompts => ("prm:", "pr:"),
    }
}

const RUN_PREFIX: &str = "run:";

/// A tap in a browser.
#[derive(Debug, Clone)]
pub enum BrowseTap {
    Page {
        listing: Listing,
        server: Arc<ServerConfig>,
        page: usize,
    },
    Pick {
        listing: Listing,
        server: Arc<ServerConfig>,
        index: usize,
    },
    /// "Run it…" under a tool's details: a guided call.
    Run {
        server: Arc<ServerConfig>,
        index: usize,
    },
}

impl BrowseTap {
    pub fn server(&self) -> &Arc<ServerConfig> {
        match self {
            BrowseTap::Page { server, .. }
            | BrowseTap::Pick { server, .. }
            | BrowseTap::Run { server, .. } => server,
        }
    }

    pub fn listing(&self) -> Listing {
        match self {
            BrowseTap::Page { listing, .. } | BrowseTap::Pick { listing, .. } => *listing,
            BrowseTap::Run { .. } => Listing::Tools,
        }
    }
}

pub fn page_data(listing: Listing, server_id: &str, page: usize) -> String {
    format!("{}{server_id}:{page}", prefixes(listing).0)
}

pub fn pick_data(listing: Listing, server_id: &str, index: usize) -> String {
    format!("{}{server_id}:{index}", prefixes(listing).1)
}

pub fn run_data(server_id: &str, index: usize) -> String {
    format!("{RUN_PREFIX}{server_id}:{index}")
}

/// callback_data of /forget's confirmation.
pub const FORGET_CONFIRMED: &str = "forget:yes";
pub const FORGET_KEPT: &str = "forget:no";

/// callback_data of "Ask again" under /status: the consent's place in the
/// user's sorted list.
const WITHDRAW_PREFIX: &str = "unallow:";

pub fn withdraw_data(index: usize) -> String {
    format!("{WITHDRAW_PREFIX}{index}")
}

pub fn withdraw_tap(data: &str) -> Option<usize> {
    data.strip_prefix(WITHDRAW_PREFIX)?.parse().ok()
}

pub fn browse_tap(data: &str, gateway: &Gateway) -> Option<BrowseTap> {
    let number = |rest: &str| -> Option<(Arc<ServerConfig>, usize)> {
        let (server, n) = rest.rsplit_once(':')?;
        Some((gateway.find_server(server)?, n.parse().ok()?))
    };
    if let Some(rest) = data.strip_prefix(RUN_PREFIX) {
        let (server, index) = number(rest)?;
        return Some(BrowseTap::Run { server, index });
    }
    for listing in [Listing::Tools, Listing::Resources, Listing::Prompts] {
        let (page_prefix, pick_prefix) = prefixes(listing);
        if let Some(rest) = data.strip_prefix(page_prefix) {
            let (server, page) = number(rest)?;
            return Some(BrowseTap::Page {
                listing,
                server,
                page,
            });
        }
        if let Some(rest) = data.strip_prefix(pick_prefix) {
            let (server, index) = number(rest)?;
            return Some(BrowseTap::Pick {
                listing,
                server,
                index,
            });
        }
    }
    None
}

/// How "still working on …" names a running request.
pub fn label(request: &Request) -> String {
    match request {
        Request::Start => "/start".to_owned(),
        Request::Help => "/help".to_owned(),
        Request::Servers => "/servers".to_owned(),
        Request::Status => "/status".to_owned(),
        Request::Connect(server) => format!("/connect {}", server.id),
        Request::Tools(server) => format!("/tools {}", server.id),
        Request::Resources(server) => format!("/resources {}", server.id),
        Request::Prompts(server) => format!("/prompts {}", server.id),
        Request::Call(call) => format!(
            "/call {} {}",
            call.server.id,
            call.tool.chars().take(64).collect::<String>()
        ),
        Request::Disconnect(server) => format!("/disconnect {}", server.id),
        Request::Token(server) => format!("/token {}", server.id),
        Request::Cancel => "/cancel".to_owned(),
        Request::Forget => "/forget".to_owned(),
    }
}

/// The `/start` payload that makes a deep link continue with `/connect`.
pub fn start_payload_for_connect(server_id: &str) -> String {
    format!("{START_CONNECT_PREFIX}{server_id}")
}

pub fn parse(text: &str, bot_username: &str, gateway: &Gateway) -> Parsed {
    let text = text.trim_start();
    if !text.starts_with('/') {
        return Parsed::Text;
    }
    let (head, rest) = text.split_at(text.find(char::is_whitespace).unwrap_or(text.len()));
    let normalized = format!("{}{}", head.to_lowercase(), rest);
    let command = match Command::parse(&normalized, bot_username) {
        Ok(command) => command,
        Err(ParseError::WrongBotName(_)) => return Parsed::ForAnotherBot,
        Err(_) => {
            return Parsed::Unknown {
                command: head.split('@').next().unwrap_or(head).to_owned(),
                addressed: head.contains('@'),
            };
        }
    };
    match request(command, gateway) {
        Ok(request) => Parsed::Request(request),
        Err(problem) => Parsed::Invalid(problem),
    }
}

fn request(command: Command, gateway: &Gateway) -> Result<Request, Problem> {
    Ok(match command {
        Command::Start(payload) => match payload.trim().strip_prefix(START_CONNECT_PREFIX) {
            Some(server) => Request::Connect(server_named(server, Verb::Connect, gateway)?),
            None => Request::Start,
        },
        Command::Help(_) => Request::Help,
        Command::Servers(_) => Request::Servers,
        Command::Status(_) => Request::Status,
        Command::Connect(args) => Request::Connect(single_server(&args, Verb::Connect, gateway)?),
        Command::Tools(args) => Request::Tools(single_server(&args, Verb::Tools, gateway)?),
        Command::Resources(args) => {
            Request::Resources(single_server(&args, Verb::Resources, gateway)?)
        }
        Command::Prompts(args) => Request::Prompts(single_server(&args, Verb::Prompts, gateway)?),
        Command::Disconnect(args) => {
            Request::Disconnect(single_server(&args, Verb::Disconnect, gateway)?)
        }
        Command::Call(args) => Request::Call(call(&args, gateway)?),
        Command::Cancel(_) => Request::Cancel,
        Command::Forget(_) => Request::Forget,
        Command::Token(args) => Request::Token(single_server(&args, Verb::Token, gateway)?),
    })
}

fn single_server(args: &str, verb: Verb, gateway: &Gateway) -> Result<Arc<ServerConfig>, Problem> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next()) {
        (Some(server), None) => server_named(server, verb, gateway),
        // With one server configured, there is nothing to choose.
        (None, _) if gateway.config().servers.len() == 1 => Ok(gateway.config().servers[0].clone()),
        _ => Err(Problem::Usage(verb)),
    }
}

fn server_named(typed: &str, verb: Verb, gateway: &Gateway) -> Result<Arc<ServerConfig>, Problem> {
    gateway
        .find_server(typed)
        .ok_or_else(|| Problem::UnknownServer {
            typed: typed.chars().take(40).collect(),
            verb,
        })
}

fn call(args: &str, gateway: &Gateway) -> Result<CallRequest, Problem> {
    let (server, rest) = split_word(args.trim());
    if server.is_empty() {
        return Err(Problem::Usage(Verb::Call));
    }
    let server = server_named(server, Verb::Call, gateway)?;
    let (tool, json) = split_word(rest);
    if tool.is_empty() {
        return Err(Problem::MissingTool {
            server: server.id.clone(),
        });
    }
    let arguments = if json.is_empty() {
        None
    } else {
        Some(parse_arguments(json)?)
    };
    Ok(CallRequest {
        server,
        tool: tool.to_owned(),
        arguments,
    })
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], text[end..].trim()),
        None => (text, ""),
    }
}

/// Tool arguments: a JSON object. Phones turn `"` into typographic quotes,
/// which are mapped back first.
fn parse_arguments(text: &str) -> Result<JsonObject, Problem> {
    let straightened: String = text
        .chars()
        .map(|c| match c {
            '“' | '”' | '„' | '‟' | '«' | '»' => '"',
            '‘' | '’' | '‚' | '‛' => '\'',
            other => other,
        })
        .collect();
    match serde_json::from_str::<serde_json::Value>(&straightened) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::NotAnObject),
        Err(error) => Err(Problem::BadJson {
            detail: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{Gateway, Silent};
    use crate::store::Stores;
    use crate::vault::{KeySource, Vault};

    fn gateway() -> (Gateway, tempfile::TempDir) {
        let text = r#"
[telegram]
token = "1:x"
[[mcp.servers]]
id = "demo"
url = "http://localhost:3000/mcp"
[[mcp.servers]]
id = "todo"
url = "https://example.com/mcp"
"#;
        let config = crate::config::parse(text, std::path::Path::new("t"), &|_| None).unwrap();
        let temp = tempfile::tempdir().unwrap();
        let vault = Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap();
        let gateway = Gateway::new(
            Arc::new(config),
            Stores::with_flows_in_memory(Arc::new(vault)),
            "http://127.0.0.1:1/oauth/callback".into(),
            Arc::new(Silent),
        );
        (gateway, temp)
    }

    fn parsed(text: &str) -> Parsed {
        let (gateway, _temp) = gateway();
        parse(text, "mcpgram_bot", &gateway)
    }

    fn server_of(request: Parsed) -> String {
        match request {
            Parsed::Request(Request::Connect(server) | Request::Tools(server)) => server.id.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_commands_parse_case_insensitively_and_with_bot_name() {
        assert_eq!(parsed("/help"), Parsed::Request(Request::Help));
        assert_eq!(parsed("/HELP me"), Parsed::Request(Request::Help));
        assert_eq!(
            parsed("/servers@mcpgram_bot"),
            Parsed::Request(Request::Servers)
        );
        assert_eq!(parsed("/status@other_bot"), Parsed::ForAnotherBot);
        assert_eq!(parsed("hello"), Parsed::Text);
        assert_eq!(server_of(parsed("/Connect Demo")), "demo");
    }

    #[test]
    fn bad_arguments_are_typed_problems() {
        for (text, problem) in [
            ("/connect", Problem::Usage(Verb::Connect)),
            ("/connect a b", Problem::Usage(Verb::Connect)),
            (
                "/tools nope",
                Problem::UnknownServer {
                    typed: "nope".into(),
                    verb: Verb::Tools,
                },
            ),
            ("/call", Problem::Usage(Verb::Call)),
            (
                "/call demo",
                Problem::MissingTool {
                    server: "demo".into(),
                },
            ),
            ("/call demo greet [1]", Problem::NotAnObject),
        ] {
            assert_eq!(parsed(text), Parsed::Invalid(problem), "{text}");
        }
        assert!(matches!(
            parsed("/call demo greet {bad"),
            Parsed::Invalid(Problem::BadJson { .. })
        ));
    }

    #[test]
    fn unknown_commands_say_whether_they_named_us() {
        assert_eq!(
            parsed("/frobnicate now"),
            Parsed::Unknown {
                command: "/frobnicate".into(),
                addressed: false
            }
        );
        assert!(matches!(
            parsed("/frobnicate@mcpgram_bot"),
            Parsed::Unknown {
                addressed: true,
                ..
            }
        ));
    }

    #[test]
    fn call_takes_server_tool_and_json_object() {
        let Parsed::Request(Request::Call(call)) =
            parsed("/call demo greet {\"name\": \"Ann  Lee\"}")
        else {
            panic!()
        };
        assert_eq!(
            (call.server.id.as_str(), call.tool.as_str()),
            ("demo", "greet")
        );
        assert_eq!(call.arguments.unwrap()["name"], "Ann  Lee");
        let Parsed::Request(Request::Call(call)) = parsed("/call demo list") else {
            panic!()
        };
        assert_eq!((call.tool.as_str(), call.arguments), ("list", None));
    }

    #[test]
    fn typographic_quotes_from_phones_are_accepted() {
        let Parsed::Request(Request::Call(call)) = parsed("/call demo greet {“name”: “Ann”}")
        else {
            panic!()
        };
        assert_eq!(call.arguments.unwrap()["name"], "Ann");
    }

    #[test]
    fn start_deep_link_continues_with_connect() {
        assert_eq!(server_of(parsed("/start connect-demo")), "demo");
        assert_eq!(parsed("/start"), Parsed::Request(Request::Start));
    }
}
