//! What mcpgram remembers, behind small ports.
//!
//! The OAuth engine and the application core see only these traits; the
//! embedded implementations (an in-memory table for pending flows and
//! refresh locks, the age vault for credentials and client registrations)
//! are the default, and a store shared by several replicas can be added
//! without touching either.
//!
//! - [`records`]: the records themselves.
//! - [`flows`]: pending flows in a table, kept on disk encrypted.
//! - [`memory`]: process-local refresh locks and command guards.
//! - [`journal`]: the updates being handled, in this process (one
//!   replica has nobody to hand them to; it drops redeliveries).
//! - [`sealed`]: credentials and registrations in the age vault.
//! - [`migrate`]: everything of one store copied into another, port by
//!   port (`mcpgram vault migrate`).
//! - [`postgres`]: every port in PostgreSQL, shared by several replicas;
//!   secrets sealed with the vault's key before they leave the process.

#[cfg(test)]
pub mod flow_contract;
pub mod flows;
pub mod journal;
pub mod memory;
pub mod migrate;
pub mod postgres;
pub mod records;
pub mod sealed;

use std::sync::Arc;

use rmcp::transport::auth::StoredCredentials;

use crate::secret::Secret;
use crate::vault::{Vault, VaultError};

pub use records::{
    ChatMessage, ClientRecord, Connection, FlowOwner, FlowState, PendingFlow, Resume, ResumeOp,
};

/// Why a store could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the encrypted vault failed")]
    Vault(#[from] VaultError),
    /// PostgreSQL refused or could not be reached; the cause (never the
    /// connection URL) is in the source chain for the log.
    #[error("the database failed")]
    Database(#[source] sqlx::Error),
    #[error("the database schema could not be brought up to date")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A sealed value opened, but it was sealed for another row: someone
    /// with write access to the database moved it (another user's tokens
    /// pasted into this user's row, say). Refused rather than used.
    #[error("a stored record was sealed for another place")]
    Misplaced,
}

/// Why a `state` or start id found no flow.
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

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("the user already has {0} links waiting")]
    TooMany(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Take(#[from] TakeError),
    /// Another browser took the flow first.
    #[error("the flow is bound to another browser")]
    AlreadyBound { owner: FlowOwner, server_id: String },
}

/// Authorization flows waiting for their callback.
#[async_trait::async_trait]
pub trait FlowStore: Send + Sync {
    /// Keeps `flow`. An older flow of the same user for the same server is
    /// dropped: only the newest link works, so nobody is left guessing
    /// which button is live. Refuses when the owner already has
    /// `max_per_user` other flows waiting.
    async fn insert(&self, flow: PendingFlow, max_per_user: u32) -> Result<(), InsertError>;

    /// The flow a start page shows, without consuming it.
    async fn by_start_id(&self, start_id: &str) -> Result<PendingFlow, TakeError>;

    /// Binds the flow to one browser (`binding` is the hash of its
    /// cookie): the first browser wins, a second one is refused.
    async fn bind(&self, start_id: &str, binding: &str) -> Result<PendingFlow, BindError>;

    /// Records where the link was posted (found by its start id).
    async fn set_message(&self, start_id: &str, message: ChatMessage) -> Result<(), StoreError>;

    /// Removes and returns the flow of `state`: a second take of the same
    /// value always fails, so a callback can complete a flow once.
    async fn take(&self, state: &str) -> Result<PendingFlow, TakeError>;

    /// Puts back a flow taken by a callback that failed for a passing
    /// reason (the token endpoint was down), so a retry can complete it.
    async fn restore(&self, flow: PendingFlow) -> Result<(), StoreError>;

    /// Removes and returns every expired flow.
    async fn sweep(&self) -> Result<Vec<PendingFlow>, StoreError>;

    /// Flows waiting for their callback now.
    async fn count(&self) -> Result<usize, StoreError>;
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

    /// Drops the server's registration (the server no longer knows it).
    async fn forget(&self, server_id: &str) -> Result<(), StoreError>;

    /// Every registration, with its server id: what a move to another
    /// store copies (`mcpgram vault migrate`), so users keep the clients
    /// their tokens were issued to and nobody registers again.
    async fn all(&self) -> Result<Vec<(String, ClientRecord)>, StoreError>;
}

/// The tools each user has allowed to run without asking first (tools
/// that may change things ask before every call otherwise). Kept in the
/// user's own namespace.
#[async_trait::async_trait]
pub trait Consents: Send + Sync {
    async fn allows(&self, user_id: u64, server_id: &str, tool: &str) -> Result<bool, StoreError>;
    async fn allow(&self, user_id: u64, server_id: &str, tool: &str) -> Result<(), StoreError>;
    /// Every (server id, tool) the user allowed, sorted.
    async fn allowed(&self, user_id: u64) -> Result<Vec<(String, String)>, StoreError>;
    /// Answers whether the tool was allowed.
    async fn withdraw(&self, user_id: u64, server_id: &str, tool: &str)
    -> Result<bool, StoreError>;
}

/// The tokens users gave themselves (`/token`) for servers that take a
/// personal token, each in its user's own namespace.
#[async_trait::async_trait]
pub trait PersonalTokens: Send + Sync {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Secret>, StoreError>;
    async fn save(&self, user_id: u64, server_id: &str, token: &Secret) -> Result<(), StoreError>;
    /// Answers whether there was one.
    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError>;
}

/// Everything kept for one user, as a whole.
#[async_trait::async_trait]
pub trait UserData: Send + Sync {
    /// Deletes all of it; answers whether there was anything.
    async fn forget(&self, user_id: u64) -> Result<bool, StoreError>;

    /// Every user the store keeps anything for, sorted: a move to another store (`mcpgram vault migrate`) walks
    /// them all, not only the servers the config names today.
    async fn users(&self) -> Result<Vec<u64>, StoreError>;

    /// The server ids the user holds anything for (a connection, a
    /// personal token, a consent), sorted; servers since removed from the
    /// config included, so a move leaves nothing behind.
    async fn servers(&self, user_id: u64) -> Result<Vec<String>, StoreError>;
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

/// Where each user's open dialogue lives, for replies that reach another
/// replica. A single node has nothing to hand over: the defaults.
#[async_trait::async_trait]
pub trait Handoffs: Send + Sync {
    /// Whether other replicas may hold dialogues (so an update is worth
    /// preparing for them).
    fn shared(&self) -> bool {
        false
    }

    /// This replica holds the user's dialogue from now on.
    async fn claim(&self, _user_id: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// This replica's dialogue with the user ended.
    async fn leave(&self, _user_id: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Hands `update` (as Telegram sent it) to the replica holding the
    /// user's dialogue, when that is another; answers whether it took it.
    async fn hand_over(
        &self,
        _user_id: u64,
        _update: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Delivers the updates other replicas hand to this one, until the
    /// task is aborted; `None` where nothing is ever handed over.
    fn listen(
        self: Arc<Self>,
        _deliver: Box<dyn Fn(serde_json::Value) + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// One process holds every dialogue.
pub struct SingleNode;

impl Handoffs for SingleNode {}

/// Held while one of a user's commands runs; dropping it ends the command.
pub type CommandTicket = Box<dyn Send + Sync>;

/// One command at a time per user: while one runs, the next is answered
/// at once instead of queueing behind it, so no user can hold up others.
#[async_trait::async_trait]
pub trait CommandGuards: Send + Sync {
    /// A ticket for `label`, or what is still running.
    async fn try_begin(&self, user_id: u64, label: &str) -> Result<CommandTicket, Running>;

    /// Asks the other replicas to cancel the user's running call (`call`,
    /// or any), when the user has a command running somewhere; answers
    /// whether it asked. A single node has no one to ask.
    async fn cancel_elsewhere(
        &self,
        _user_id: u64,
        _call: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// The command a user is still waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub label: String,
    /// The user was already told once while it runs: a flood of commands
    /// gets one answer, not one each (each would be a message to send).
    pub told: bool,
}

/// An update Telegram delivered, as the journal keeps it: who to tell and
/// where if its handling is cut short, and never what the user wrote (a
/// `/call`'s arguments, or a reply holding a token, may be secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub update_id: i64,
    pub user_id: Option<u64>,
    /// Where to tell the user; `None` when the update asked nothing of
    /// the bot.
    pub chat_id: Option<i64>,
    /// The command's name (`/call`), when it was one.
    pub command: Option<String>,
}

/// The updates this replica acknowledged to Telegram and has not finished
/// handling. Telegram never sends an acknowledged update again, so one
/// whose replica dies would go unanswered: written down before the
/// acknowledgement, it is found by another replica, which tells the user.
#[async_trait::async_trait]
pub trait UpdateJournal: Send + Sync {
    /// Records `entry` as handled here; `false` when it was recorded
    /// before (Telegram sent it again because an answer got lost): the
    /// caller acknowledges it and does nothing else.
    async fn record(&self, entry: &JournalEntry) -> Result<bool, StoreError>;

    /// The handling of `update_id` ended. Written soon after, not waited
    /// for: the answer to the user does not pay for it.
    fn finish(&self, update_id: i64);

    /// Returns once every update finished so far is written (at shutdown).
    async fn flush(&self);

    /// Forgets `update_id` at once: it was refused after all (the
    /// replica is stopping), and Telegram's next delivery of it is not a
    /// repeat.
    async fn release(&self, update_id: i64) -> Result<(), StoreError>;

    /// Renews this replica's hold on the updates it is handling.
    async fn renew(&self) -> Result<(), StoreError>;

    /// Takes the updates whose replica stopped renewing them (it died),
    /// each by one replica only, and frees the users that replica left
    /// busy, so they can send their request again at once.
    async fn take_abandoned(&self) -> Result<Vec<JournalEntry>, StoreError>;

    /// Forgets finished updates too old to be sent again.
    async fn purge(&self) -> Result<(), StoreError>;

    /// How often [`UpdateJournal::renew`] and
    /// [`UpdateJournal::take_abandoned`] are due.
    fn period(&self) -> std::time::Duration;
}

/// Every port, as the rest of the bot receives them.
#[derive(Clone)]
pub struct Stores {
    pub flows: Arc<dyn FlowStore>,
    pub credentials: Arc<dyn CredentialStore>,
    pub registrations: Arc<dyn RegistrationStore>,
    pub refresh_locks: Arc<dyn RefreshLocks>,
    pub commands: Arc<dyn CommandGuards>,
    pub consents: Arc<dyn Consents>,
    pub personal_tokens: Arc<dyn PersonalTokens>,
    pub user_data: Arc<dyn UserData>,
    pub handoffs: Arc<dyn Handoffs>,
    pub journal: Arc<dyn UpdateJournal>,
}

impl Stores {
    /// Like [`Stores::embedded`], but pending flows only in memory: for
    /// front ends that complete no browser flows (the terminal's commands)
    /// and must leave the running bot's flows alone, and for tests.
    pub fn with_flows_in_memory(vault: Arc<Vault>) -> Self {
        Self {
            flows: Arc::new(flows::FlowTable::in_memory()),
            credentials: Arc::new(sealed::VaultCredentials::new(vault.clone())),
            registrations: Arc::new(sealed::VaultRegistrations::new(vault.clone())),
            refresh_locks: Arc::new(memory::LocalRefreshLocks::default()),
            commands: Arc::new(memory::LocalCommandGuards::default()),
            consents: Arc::new(sealed::VaultConsents::new(vault.clone())),
            personal_tokens: Arc::new(sealed::VaultPersonalTokens::new(vault.clone())),
            user_data: Arc::new(sealed::VaultUserData::new(vault)),
            handoffs: Arc::new(SingleNode),
            journal: Arc::new(journal::LocalJournal::default()),
        }
    }

    /// The single-node default: the vault on disk (pending flows too, so
    /// they survive a restart), locks in memory.
    pub async fn embedded(vault: Arc<Vault>) -> Result<Self, StoreError> {
        Ok(Self {
            flows: Arc::new(flows::FlowTable::durable(vault.clone()).await?),
            credentials: Arc::new(sealed::VaultCredentials::new(vault.clone())),
            registrations: Arc::new(sealed::VaultRegistrations::new(vault.clone())),
            refresh_locks: Arc::new(memory::LocalRefreshLocks::default()),
            commands: Arc::new(memory::LocalCommandGuards::default()),
            consents: Arc::new(sealed::VaultConsents::new(vault.clone())),
            personal_tokens: Arc::new(sealed::VaultPersonalTokens::new(vault.clone())),
            user_data: Arc::new(sealed::VaultUserData::new(vault)),
            handoffs: Arc::new(SingleNode),
            journal: Arc::new(journal::LocalJournal::default()),
        })
    }

    /// Several replicas on one PostgreSQL database: every port shared
    /// there, secrets sealed with the vault's key (every replica needs the
    /// same key).
    pub fn postgres(db: postgres::Database, vault: Arc<Vault>) -> Self {
        use postgres::{
            commands, credentials, flows, handoffs, journal, locks, registrations, users,
        };
        Self {
            flows: Arc::new(flows::PgFlows::new(db.clone(), vault.clone())),
            credentials: Arc::new(credentials::PgCredentials::new(db.clone(), vault.clone())),
            registrations: Arc::new(registrations::PgRegistrations::new(
                db.clone(),
                vault.clone(),
            )),
            refresh_locks: Arc::new(locks::PgRefreshLocks::new(db.clone())),
            commands: Arc::new(commands::PgCommandGuards::new(db.clone())),
            consents: Arc::new(users::PgConsents::new(db.clone())),
            personal_tokens: Arc::new(users::PgPersonalTokens::new(db.clone(), vault.clone())),
            user_data: Arc::new(users::PgUserData::new(db.clone())),
            journal: Arc::new(journal::PgJournal::new(db.clone())),
            handoffs: Arc::new(handoffs::PgHandoffs::new(db, vault)),
        }
    }
}
