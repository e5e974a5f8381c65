//! Two bot replicas as an admin runs them for availability: one
//! PostgreSQL database, one vault key, webhook mode, and a round-robin
//! front (`test_peers::round_robin`) that Telegram's webhook and the
//! browsers' callbacks go through.

use std::net::SocketAddr;
use std::path::Path;

use age::secrecy::ExposeSecret;
use fake_telegram::FakeTelegram;
use test_peers::round_robin::RoundRobin;

use super::bot::{base_config, postgres_store};
use super::free_port;

/// The webhook secret every replica is given.
pub const SECRET: &str = "replicas_Webhook-secret";

/// What the replicas share, before any of them starts.
pub struct Shared {
    pub front: RoundRobin,
    /// The front's address: the replicas' `http.public_url`.
    pub public: String,
    /// Where each replica listens.
    pub ports: [u16; 2],
    key: String,
    db: test_peers::postgres::Database,
}

impl Shared {
    /// A database of its own, a vault key and the front.
    pub fn start() -> Self {
        let db = test_peers::postgres::cluster().database();
        let key = age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let public = format!("http://{}", listener.local_addr().unwrap());
        let ports = [free_port(), free_port()];
        let front = RoundRobin::start(
            listener,
            ports
                .iter()
                .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
        );
        Self {
            front,
            public,
            ports,
            key,
            db,
        }
    }

    /// The database's URL, for a test that looks into it.
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// The environment every replica gets (the config reads it).
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("DATABASE_URL", self.db.url.as_str()),
            ("MCPGRAM_VAULT_KEY", &self.key),
            ("WEBHOOK_SECRET", SECRET),
        ]
    }

    /// Replica `index`'s config: webhook mode behind the front, the
    /// shared store; the servers are the caller's to add.
    pub fn config(&self, telegram: &FakeTelegram, dir: &Path, index: usize) -> String {
        base_config(telegram, dir)
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!(
                    "listen = \"127.0.0.1:{}\"\npublic_url = \"{}\"",
                    self.ports[index], self.public
                ),
            )
            .replace(
                "[http]",
                "mode = \"webhook\"\nwebhook_secret = \"${WEBHOOK_SECRET}\"\n\n[http]",
            )
            + &postgres_store()
    }
}
