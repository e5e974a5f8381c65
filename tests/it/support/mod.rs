//! Helpers shared by the integration tests. The fake Telegram and the
//! third-party peers are crates of their own (`crates/`), built once.

pub mod bot;
pub mod scripted_mcp;

/// A `wait_for_message` predicate: the message text contains `needle`.
pub fn text_contains(needle: &'static str) -> impl Fn(&fake_telegram::SentMessage) -> bool {
    move |message| message.text.contains(needle)
}
