//! Stand-ins for the outside world, shared by the integration tests.

pub mod bot;
pub mod browser;
pub mod fake_telegram;
pub mod peers;
