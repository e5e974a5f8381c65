//! The bot's commands: the menu Telegram shows, and parsing what users type.
//!
//! teloxide's derive gives the command menu and `/help`; the arguments are
//! parsed here into [`Request`]s with errors that say exactly what to type,
//! because chat users get no second chance to read a man page.

use rmcp::model::JsonObject;
use teloxide::utils::command::{BotCommands, ParseError};

use crate::config::{Config, ServerConfig};

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
    #[command(description = "forget your tokens: /disconnect <server>")]
    Disconnect(String),
}

/// A command with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Start,
    Help,
    Servers,
    Status,
    Connect(String),
    Tools(String),
    Call {
        server: String,
        tool: String,
        arguments: Option<JsonObject>,
    },
    Disconnect(String),
}

/// What a text message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Not a command, or a command for another bot in a group.
    NotForUs,
    Request(Request),
    /// A command we know with bad arguments: the one-line hint to send back.
    Invalid(String),
    /// A command we don't know. In a group it may be another bot's, so it
    /// is answered there only when addressed to us by name.
    Unknown {
        hint: String,
        addressed: bool,
    },
}

const START_CONNECT_PREFIX: &str = "connect-";

/// The `/start` payload that makes a deep link continue with `/connect`.
pub fn start_payload_for_connect(server_id: &str) -> String {
    format!("{START_CONNECT_PREFIX}{server_id}")
}

pub fn parse(text: &str, bot_username: &str, config: &Config) -> Parsed {
    let text = text.trim_start();
    if !text.starts_with('/') {
        return Parsed::NotForUs;
    }
    // Users type "/Connect" too; commands are case-insensitive here.
    let (head, rest) = text.split_at(text.find(char::is_whitespace).unwrap_or(text.len()));
    let normalized = format!("{}{}", head.to_lowercase(), rest);
    let command = match Command::parse(&normalized, bot_username) {
        Ok(command) => command,
        Err(ParseError::WrongBotName(_)) => return Parsed::NotForUs,
        Err(_) => {
            return Parsed::Unknown {
                hint: format!(
                    "Unknown command {}. Send /help to see what I can do.",
                    head.split('@').next().unwrap_or(head)
                ),
                addressed: head.contains('@'),
            };
        }
    };
    match request(command, config) {
        Ok(request) => Parsed::Request(request),
        Err(hint) => Parsed::Invalid(hint),
    }
}

fn request(command: Command, config: &Config) -> Result<Request, String> {
    Ok(match command {
        Command::Start(payload) => match payload.trim().strip_prefix(START_CONNECT_PREFIX) {
            Some(server) => Request::Connect(server_id(server, "connect", config)?),
            None => Request::Start,
        },
        Command::Help(_) => Request::Help,
        Command::Servers(_) => Request::Servers,
        Command::Status(_) => Request::Status,
        Command::Connect(args) => Request::Connect(single_server(&args, "connect", config)?),
        Command::Tools(args) => Request::Tools(single_server(&args, "tools", config)?),
        Command::Disconnect(args) => {
            Request::Disconnect(single_server(&args, "disconnect", config)?)
        }
        Command::Call(args) => call(&args, config)?,
    })
}

fn usage(command: &str) -> &'static str {
    match command {
        "connect" => "Usage: /connect <server>",
        "tools" => "Usage: /tools <server>",
        "disconnect" => "Usage: /disconnect <server>",
        _ => "Usage: /call <server> <tool> {\"arg\": \"value\"}",
    }
}

fn server_list(config: &Config) -> String {
    if config.servers.is_empty() {
        return "No servers are configured.".to_owned();
    }
    let ids: Vec<&str> = config.servers.iter().map(|s| s.id.as_str()).collect();
    format!("Servers: {}.", ids.join(", "))
}

fn single_server(args: &str, command: &str, config: &Config) -> Result<String, String> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next()) {
        (Some(server), None) => server_id(server, command, config),
        _ => Err(format!("{}. {}", usage(command), server_list(config))),
    }
}

/// Resolves a typed server id (case-insensitively) to the configured one.
fn server_id(typed: &str, command: &str, config: &Config) -> Result<String, String> {
    find_server(typed, config)
        .map(|server| server.id.clone())
        .ok_or_else(|| {
            format!(
                "Unknown server \"{}\". {} {}",
                typed.chars().take(40).collect::<String>(),
                server_list(config),
                usage(command)
            )
        })
}

fn find_server<'a>(typed: &str, config: &'a Config) -> Option<&'a ServerConfig> {
    let typed = typed.to_lowercase();
    config.servers.iter().find(|server| server.id == typed)
}

fn call(args: &str, config: &Config) -> Result<Request, String> {
    let args = args.trim();
    let (server, rest) = split_word(args);
    if server.is_empty() {
        return Err(format!("{}. {}", usage("call"), server_list(config)));
    }
    let server = server_id(server, "call", config)?;
    let (tool, json) = split_word(rest);
    if tool.is_empty() {
        return Err(format!(
            "{}. See the tools with /tools {server}.",
            usage("call")
        ));
    }
    let arguments = if json.is_empty() {
        None
    } else {
        Some(parse_arguments(json)?)
    };
    Ok(Request::Call {
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
fn parse_arguments(text: &str) -> Result<JsonObject, String> {
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
        Ok(_) => {
            Err("Tool arguments must be a JSON object, e.g. {\"name\": \"Alice\"}.".to_owned())
        }
        Err(error) => Err(format!(
            "The arguments are not valid JSON ({error}). Example: {{\"name\": \"Alice\"}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
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
        crate::config::parse(text, std::path::Path::new("t"), &|_| None).unwrap()
    }

    fn parsed(text: &str) -> Parsed {
        parse(text, "mcpgram_bot", &config())
    }

    #[test]
    fn simple_commands_parse_case_insensitively_and_with_bot_name() {
        assert_eq!(parsed("/help"), Parsed::Request(Request::Help));
        assert_eq!(parsed("/HELP me"), Parsed::Request(Request::Help));
        assert_eq!(
            parsed("/servers@mcpgram_bot"),
            Parsed::Request(Request::Servers)
        );
        assert_eq!(parsed("/status@other_bot"), Parsed::NotForUs);
        assert_eq!(parsed("hello"), Parsed::NotForUs);
        assert_eq!(
            parsed("/Connect Demo"),
            Parsed::Request(Request::Connect("demo".into()))
        );
    }

    #[test]
    fn bad_arguments_get_a_one_line_hint() {
        for (text, needle) in [
            ("/connect", "Usage: /connect <server>"),
            ("/connect a b", "Usage: /connect <server>"),
            ("/tools nope", "Unknown server \"nope\""),
            ("/call", "Usage: /call"),
            ("/call demo", "See the tools with /tools demo"),
            ("/call demo greet {bad", "not valid JSON"),
            ("/call demo greet [1]", "must be a JSON object"),
        ] {
            match parsed(text) {
                Parsed::Invalid(hint) => {
                    assert!(hint.contains(needle), "{text}: {hint}");
                    assert!(!hint.contains('\n'), "{text}: {hint}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_commands_say_whether_they_named_us() {
        assert_eq!(
            parsed("/frobnicate now"),
            Parsed::Unknown {
                hint: "Unknown command /frobnicate. Send /help to see what I can do.".into(),
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
        let Parsed::Request(Request::Call {
            server,
            tool,
            arguments,
        }) = parsed("/call demo greet {\"name\": \"Ann  Lee\"}")
        else {
            panic!()
        };
        assert_eq!((server.as_str(), tool.as_str()), ("demo", "greet"));
        assert_eq!(arguments.unwrap()["name"], "Ann  Lee");
        assert_eq!(
            parsed("/call demo list"),
            Parsed::Request(Request::Call {
                server: "demo".into(),
                tool: "list".into(),
                arguments: None
            })
        );
    }

    #[test]
    fn typographic_quotes_from_phones_are_accepted() {
        let Parsed::Request(Request::Call { arguments, .. }) =
            parsed("/call demo greet {“name”: “Ann”}")
        else {
            panic!()
        };
        assert_eq!(arguments.unwrap()["name"], "Ann");
    }

    #[test]
    fn start_deep_link_continues_with_connect() {
        assert_eq!(
            parsed("/start connect-demo"),
            Parsed::Request(Request::Connect("demo".into()))
        );
        assert_eq!(parsed("/start"), Parsed::Request(Request::Start));
    }
}
