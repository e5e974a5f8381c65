//! Stand-ins for the outside world, shared by the integration tests.

pub mod bot;
pub mod browser;
pub mod fake_telegram;
pub mod peers;

/// A `wait_for_message` predicate: the message text contains `needle`.
#[allow(dead_code)]
pub fn text_contains(needle: &'static str) -> impl Fn(&fake_telegram::SentMessage) -> bool {
    move |message| message.text.contains(needle)
}
