//! What mcpgram remembers, behind small ports.
//!
//! The OAuth engine and the application core see only these traits; the
//! embedded implementations (an in-memory table for pending flows and
//! refresh locks, the age vault for credentials and client registrations)
//! are the default, and a store shared by several replicas can be added
//! without touching either.
//!
//! - [`records`]: the records themselves.
//! - [`memory`]: process-local pending flows and refresh locks.
//! - [`sealed`]: credentials and registrations in the age vault.

pub mod memory;
pub mod records;
pub mod sealed;

use std::sync::Arc;

use rmcp::transport::auth::StoredCredentials;

use crate::vault::{Vault, VaultError};

pub use records::{ClientRecord, Connection, FlowOwner, FlowState, PendingFlow};

/// Why a store could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the encrypted vault failed")]
    Vault(#[from] VaultError),
}

/// Why a `state` found no flow to complete.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Never issued, already used, or replaced by a newer link.
    #[error("no pending flow has this state")]
    Unknown,
    /// Issued, but its time is up. The flow is gone all the same.
    #[error("the pending flow expired")]
    Expired { owner: FlowOwner, server_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Authorization flows waiting for their callback.
#[async_trait::async_trait]
pub trait FlowStore: Send + Sync {
    /// Keeps `flow` under a fresh state and returns that state. An older
    /// flow of the same user for the same server is dropped: only the
    /// newest link works, so nobody is left guessing which button is live.
    async fn insert(&self, flow: PendingFlow) -> Result<FlowState, StoreError>;

    /// Removes and returns the flow of `state`: a second take of the same
    /// value always fails, so a callback can complete a flow once.
    async fn take(&self, state: &str) -> Result<PendingFlow, TakeError>;
}

/// Each user's tokens per server, and the client they were issued to.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Connection>, StoreError>;

    /// Tokens and client together, in one write: after a code exchange.
    async fn save(
        &self,
        user_id: u64,
        server_id: &str,
        connection: &Connection,
    ) -> Result<(), StoreError>;

    /// New tokens for the client already stored: after a refresh.
    async fn save_tokens(
        &self,
        user_id: u64,
        server_id: &str,
        credentials: &StoredCredentials,
    ) -> Result<(), StoreError>;

    /// Drops the tokens, keeps the client (a refresh token was rejected).
    async fn clear_tokens(&self, user_id: u64, server_id: &str) -> Result<(), StoreError>;

    /// Drops tokens and client; answers whether there was anything.
    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError>;
}

/// OAuth clients registered dynamically, reused for every user.
#[async_trait::async_trait]
pub trait RegistrationStore: Send + Sync {
    /// The client registered for `server_id` with this redirect URI at
    /// this issuer, if any.
    async fn find(
        &self,
        server_id: &str,
        redirect_uri: &str,
        issuer: Option<&str>,
    ) -> Result<Option<ClientRecord>, StoreError>;

    async fn remember(&self, server_id: &str, client: &ClientRecord) -> Result<(), StoreError>;
}

/// Held while one (user, server) refreshes its tokens; dropping it lets the
/// next refresh in.
pub type RefreshGuard = Box<dyn Send>;

/// Single-flight refreshes per (user, server): a rotating refresh token
/// must never be spent twice.
#[async_trait::async_trait]
pub trait RefreshLocks: Send + Sync {
    async fn acquire(&self, user_id: u64, server_id: &str) -> Result<RefreshGuard, StoreError>;
}

/// Every port, as the rest of the bot receives them.
#[derive(Clone)]
pub struct Stores {
    pub flows: Arc<dyn FlowStore>,
    pub credentials: Arc<dyn CredentialStore>,
    pub registrations: Arc<dyn RegistrationStore>,
    pub refresh_locks: Arc<dyn RefreshLocks>,
}

impl Stores {
    /// The single-node default: the vault on disk, the rest in memory.
    pub fn embedded(vault: Arc<Vault>) -> Self {
        Self {
            flows: Arc::new(memory::MemoryFlows::default()),
            credentials: Arc::new(sealed::VaultCredentials::new(vault.clone())),
            registrations: Arc::new(sealed::VaultRegistrations::new(vault)),
            refresh_locks: Arc::new(memory::LocalRefreshLocks::default()),
        }
    }
}
