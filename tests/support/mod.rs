//! Helpers shared by the integration tests. The fake Telegram and the
//! third-party peers are crates of their own (`crates/`), built once.

#[allow(dead_code)]
pub mod bot;
#[allow(dead_code)]
pub mod scripted_mcp;

/// A `wait_for_message` predicate: the message text contains `needle`.
#[allow(dead_code)]
pub fn text_contains(needle: &'static str) -> impl Fn(&fake_telegram::SentMessage) -> bool {
    move |message| message.text.contains(needle)
}
