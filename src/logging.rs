//! Tracing setup that keeps secrets out of logs even at debug level.
//!
//! `RUST_LOG` chooses verbosity as usual, but a few dependencies print
//! secrets at debug level (rmcp logs the authorization code it exchanges;
//! HTTP client internals can print URLs with tokens), so those targets are
//! capped at INFO whatever `RUST_LOG` says. As a last line, every line is
//! scrubbed on its way out: query strings of URLs (an MCP server's URL may
//! carry an API key there, and error texts of HTTP clients quote URLs) and
//! Bot API paths (which hold the bot token) never reach the log.

use std::error::Error;
use std::fmt;
use std::io::{IsTerminal, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Targets never shown below INFO.
const CAPPED: &[&str] = &[
    "rmcp::transport::auth",
    "oauth2",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "teloxide",
    "teloxide_core",
];

/// Whether an event may be logged at all, regardless of `RUST_LOG`.
pub fn permitted(metadata: &Metadata<'_>) -> bool {
    if *metadata.level() <= Level::INFO {
        return true;
    }
    let target = metadata.target();
    !CAPPED.iter().any(|capped| {
        target == *capped
            || target
                .strip_prefix(capped)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// For people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs to stderr as text; call once at start.
pub fn init() {
    init_with(Format::Text);
}

/// What is logged when `RUST_LOG` is unset: the bot's own INFO, and only
/// warnings from rmcp, whose INFO lines (a session opened, its stream
/// ended, with the server's whole self-description) come per user and
/// session and would drown the rest.
const DEFAULT_FILTER: &str = "info,rmcp=warn";

/// Logs to stderr in `format`; call once at start.
pub fn init_with(format: Format) {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry();
    let _ = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(Scrubbed)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter())
                    .with_filter(FilterFn::new(permitted)),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(Scrubbed)
                    .with_filter(filter())
                    .with_filter(FilterFn::new(permitted)),
            )
            .try_init(),
    };
}

/// An error and its causes for a log line: `what failed: because: because`.
/// A cause whose text its parent already quotes is not repeated.
pub fn chain(error: &dyn Error) -> Chain<'_> {
    Chain(error)
}

pub struct Chain<'a>(&'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

/// Writes log lines to stderr with [`scrub`] applied.
struct Scrubbed;

impl<'a> MakeWriter<'a> for Scrubbed {
    type Writer = ScrubbedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter
    }
}

struct ScrubbedWriter;

impl Write for ScrubbedWriter {
    /// The fmt layer hands over each formatted event in one buffer.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `text` with URL query strings and Bot API tokens replaced by
/// `[redacted]`.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // Copy up to the end of the scheme separator, then walk the URL.
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let url = match url.split_once('?') {
            Some((base, _query)) => format!("{base}?[redacted]"),
            None => url.to_owned(),
        };
        out.push_str(&redact_bot_token(&url));
        rest = tail;
    }
    out.push_str(rest);
    redact_bot_token(&out)
}

/// Bot API paths look like `/bot123456:AAE…/getMe`.
fn redact_bot_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/bot") {
        let (before, after) = rest.split_at(at + 4);
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let token_end = after[digits..]
            .strip_prefix(':')
            .map(|token| {
                digits
                    + 1
                    + token
                        .bytes()
                        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                        .count()
            })
            .filter(|_| digits > 0);
        match token_end {
            Some(end) => {
                out.push_str("[redacted]");
                rest = &after[end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_bot_tokens_are_scrubbed() {
        assert_eq!(
            scrub("error sending request for url (https://mcp.example.com/mcp?api_key=SECRET&x=1)"),
            "error sending request for url (https://mcp.example.com/mcp?[redacted])"
        );
        assert_eq!(
            scrub("GET http://127.0.0.1:9/bot123456:AAE-x_y/getMe failed"),
            "GET http://127.0.0.1:9/bot[redacted]/getMe failed"
        );
        let plain = "connected to http://localhost:3000/mcp, user=7";
        assert_eq!(scrub(plain), plain);
        assert_eq!(scrub("/bots are fine"), "/bots are fine");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn a_chain_shows_each_cause_once() {
        let error = Layer(
            "call failed",
            Some(Box::new(Layer(
                "transport: connection refused",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            chain(&error).to_string(),
            "call failed: transport: connection refused"
        );
    }
}
