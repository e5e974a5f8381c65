//! What the bot is doing, for Prometheus: `/metrics` in the text format.
//!
//! Counters and histograms are recorded where things happen (the core and
//! the Telegram adapter); gauges of state (pending flows, warm sessions)
//! are read when scraped. Labels hold only server ids and fixed words:
//! never a user id, a tool argument or anything secret.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerOutcome {
    pub server: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Server {
    pub server: String,
}

type Histograms = Family<Server, Histogram, fn() -> Histogram>;

/// Bot API failures, counted wherever a send fails (the Telegram adapter
/// has no core handle on every path), and reported by every registry.
static TELEGRAM_ERRORS: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);

/// A Bot API request failed.
pub fn telegram_error() {
    TELEGRAM_ERRORS.inc();
}

fn call_buckets() -> Histogram {
    // 5 ms to ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

pub struct Metrics {
    registry: Registry,
    connects_started: Counter,
    connects: Family<Outcome, Counter>,
    callbacks: Family<Outcome, Counter>,
    tool_calls: Family<ServerOutcome, Counter>,
    call_seconds: Histograms,
    refreshes: Family<Outcome, Counter>,
    _telegram_errors: Counter,
    pending_flows: Gauge,
    warm_sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcpgram");
        let connects_started = Counter::default();
        registry.register(
            "connect_flows_started",
            "Authorization flows started (connect links sent)",
            connects_started.clone(),
        );
        let connects = Family::<Outcome, Counter>::default();
        registry.register(
            "connect_flows_ended",
            "Authorization flows ended, by outcome (completed, or why not)",
            connects.clone(),
        );
        let callbacks = Family::<Outcome, Counter>::default();
        registry.register(
            "oauth_callbacks",
            "Requests to the OAuth callback, by outcome",
            callbacks.clone(),
        );
        let tool_calls = Family::<ServerOutcome, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by server and outcome",
            tool_calls.clone(),
        );
        let call_seconds: Histograms = Family::new_with_constructor(call_buckets);
        registry.register(
            "tool_call_duration_seconds",
            "Time from a tool call leaving to its answer, by server",
            call_seconds.clone(),
        );
        let refreshes = Family::<Outcome, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access-token renewals, by outcome",
            refreshes.clone(),
        );
        let telegram_errors = TELEGRAM_ERRORS.clone();
        registry.register(
            "telegram_api_errors",
            "Bot API requests that failed",
            telegram_errors.clone(),
        );
        let pending_flows = Gauge::default();
        registry.register(
            "pending_flows",
            "Connect links waiting for their callback",
            pending_flows.clone(),
        );
        let warm_sessions = Gauge::default();
        registry.register(
            "warm_sessions",
            "MCP sessions open now",
            warm_sessions.clone(),
        );
        Self {
            registry,
            connects_started,
            connects,
            callbacks,
            tool_calls,
            call_seconds,
            refreshes,
            _telegram_errors: telegram_errors,
            pending_flows,
            warm_sessions,
        }
    }
}

impl Metrics {
    pub fn connect_started(&self) {
        self.connects_started.inc();
    }

    pub fn connect_ended(&self, outcome: &'static str) {
        self.connects.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn callback(&self, outcome: &'static str) {
        self.callbacks.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn tool_call(&self, server: &str, outcome: &'static str, took: Duration) {
        self.tool_calls
            .get_or_create(&ServerOutcome {
                server: server.to_owned(),
                outcome,
            })
            .inc();
        self.call_seconds
            .get_or_create(&Server {
                server: server.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes.get_or_create(&Outcome { outcome }).inc();
    }

    /// The text format, with the state gauges as they are now.
    pub fn render(&self, pending_flows: usize, warm_sessions: usize) -> String {
        self.pending_flows
            .set(i64::try_from(pending_flows).unwrap_or(i64::MAX));
        self.warm_sessions
            .set(i64::try_from(warm_sessions).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "could not encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_every_family_and_no_user_ids() {
        let metrics = Metrics::default();
        metrics.connect_started();
        metrics.connect_ended("completed");
        metrics.tool_call("demo", "ok", Duration::from_millis(12));
        let before = TELEGRAM_ERRORS.get();
        telegram_error();
        let text = metrics.render(3, 2);
        for line in [
            "mcpgram_connect_flows_started_total 1",
            "mcpgram_connect_flows_ended_total{outcome=\"completed\"} 1",
            "mcpgram_tool_calls_total{server=\"demo\",outcome=\"ok\"} 1",
            "mcpgram_tool_call_duration_seconds_count{server=\"demo\"} 1",
            "mcpgram_pending_flows 3",
            "mcpgram_warm_sessions 2",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(TELEGRAM_ERRORS.get() > before);
        assert!(
            text.contains("mcpgram_telegram_api_errors_total "),
            "{text}"
        );
    }
}
