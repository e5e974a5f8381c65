//! Whether the bot can do its work now, for `/readyz`: each dependency it
//! cannot work without says whether it answers. Adapters provide their own
//! check (Telegram's answers `getMe`); the vault's is a read past its cache;
//! a shared database's is one round trip.

use futures_util::future::BoxFuture;

/// One dependency's check.
pub trait Dependency: Send + Sync {
    /// A fixed name for the report ("telegram", "vault").
    fn name(&self) -> &'static str;

    /// `Err` holds a short reason for the log, never a secret.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Every dependency's answer, checked side by side.
pub async fn check_all(
    dependencies: &[std::sync::Arc<dyn Dependency>],
) -> Vec<(&'static str, Result<(), String>)> {
    let checks = dependencies
        .iter()
        .map(|dependency| async move { (dependency.name(), dependency.check().await) });
    futures_util::future::join_all(checks).await
}

/// The vault: its system namespace read and decrypted from disk.
pub struct VaultReadable(pub std::sync::Arc<crate::vault::Vault>);

impl Dependency for VaultReadable {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .check()
                .await
                .map_err(|error| crate::logging::chain(&error).to_string())
        })
    }
}

/// The shared PostgreSQL store: a replica that cannot reach it can do
/// nothing for anyone, and should be taken out of rotation.
pub struct DatabaseReachable(pub crate::store::postgres::Database);

impl Dependency for DatabaseReachable {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .check()
                .await
                .map_err(|error| crate::logging::chain(&error).to_string())
        })
    }
}
