//! Tracing setup that keeps secrets out of logs even at debug level.
//!
//! `RUST_LOG` chooses verbosity as usual, but a few dependencies print
//! secrets at debug level (rmcp logs the authorization code it exchanges;
//! HTTP client internals can print URLs with tokens), so those targets are
//! capped at INFO whatever `RUST_LOG` says.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
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

/// Logs to stderr; call once at start.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(FilterFn::new(permitted));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
