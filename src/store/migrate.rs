//! Everything one store keeps, copied into another: from the vault's
//! files to PostgreSQL when a second replica is coming, and back.
//!
//! The copy goes through the ports, so each side seals as it always does
//! (the files per namespace, PostgreSQL per row with the vault's key) and
//! nothing here knows either format. Every write is an upsert, so a copy
//! cut short is finished by running it again, without duplicates. The
//! source is only read.
//!
//! Pending flows are not copied: they expire within minutes, and the user
//! whose link was still open asks for a new one.

use super::{StoreError, Stores};

/// Why a copy stopped; what was written before stays written.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot copy the registered OAuth clients")]
    Registrations(#[source] StoreError),
    #[error("cannot list the users")]
    Users(#[source] StoreError),
    #[error("cannot copy the data of user {user_id}")]
    User {
        user_id: u64,
        #[source]
        source: StoreError,
    },
}

/// What one user had copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserCopied {
    pub user_id: u64,
    pub connections: usize,
    pub personal_tokens: usize,
    pub consents: usize,
}

/// What the whole copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub connections: usize,
    pub personal_tokens: usize,
    pub consents: usize,
    pub registrations: usize,
}

/// Copies the registered clients, then every user's connections,
/// personal tokens and consents, from `from` into `to`; `each` hears of
/// every user when they are done, so a long copy shows its progress.
pub async fn copy(
    from: &Stores,
    to: &Stores,
    mut each: impl FnMut(&UserCopied),
) -> Result<Copied, MigrateError> {
    let mut copied = Copied {
        registrations: registrations(from, to)
            .await
            .map_err(MigrateError::Registrations)?,
        ..Copied::default()
    };
    let users = from.user_data.users().await.map_err(MigrateError::Users)?;
    for user_id in users {
        let user = self::user(from, to, user_id)
            .await
            .map_err(|source| MigrateError::User { user_id, source })?;
        each(&user);
        copied.users += 1;
        copied.connections += user.connections;
        copied.personal_tokens += user.personal_tokens;
        copied.consents += user.consents;
    }
    Ok(copied)
}

/// The files keep one registration per server (the newest one is the one
/// in use); a database may hold several, one per redirect URI or issuer
/// the bot ever had, and into the files the last one listed stays.
async fn registrations(from: &Stores, to: &Stores) -> Result<usize, StoreError> {
    let all = from.registrations.all().await?;
    for (server_id, client) in &all {
        to.registrations.remember(server_id, client).await?;
    }
    Ok(all.len())
}

/// One user's data for every server it names.
async fn user(from: &Stores, to: &Stores, user_id: u64) -> Result<UserCopied, StoreError> {
    let mut copied = UserCopied {
        user_id,
        ..UserCopied::default()
    };
    for server_id in from.user_data.servers(user_id).await? {
        if let Some(connection) = from.credentials.load(user_id, &server_id).await? {
            to.credentials
                .save(user_id, &server_id, &connection)
                .await?;
            copied.connections += 1;
        }
        if let Some(token) = from.personal_tokens.load(user_id, &server_id).await? {
            to.personal_tokens.save(user_id, &server_id, &token).await?;
            copied.personal_tokens += 1;
        }
    }
    for (server_id, tool) in from.consents.allowed(user_id).await? {
        to.consents.allow(user_id, &server_id, &tool).await?;
        copied.consents += 1;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::transport::auth::StoredCredentials;

    use super::*;
    use crate::secret::Secret;
    use crate::store::{ClientRecord, Connection};
    use crate::vault::{KeySource, Vault};

    fn client(id: &str) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_secret: Some(Secret::new("s3cret")),
            redirect_uri: "http://127.0.0.1/cb".into(),
            issuer: None,
            scopes: vec![],
            assumed_endpoints: false,
            challenge: None,
        }
    }

    /// Between two vaults of the same key: the ports alone carry it.
    #[tokio::test]
    async fn a_copy_moves_every_item_and_a_second_one_changes_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let key = KeySource::File(temp.path().join("k"));
        let open = |dir: &str| Arc::new(Vault::open(&temp.path().join(dir), &key).unwrap());
        let from = Stores::with_flows_in_memory(open("from"));
        let to = Stores::with_flows_in_memory(open("to"));
        let connection = Connection {
            credentials: StoredCredentials::new("c1".into(), None, vec!["a".into()], None),
            client: client("c1"),
        };
        from.credentials.save(1, "demo", &connection).await.unwrap();
        from.credentials.save(1, "gone", &connection).await.unwrap();
        from.personal_tokens
            .save(2, "pat", &Secret::new("t0k"))
            .await
            .unwrap();
        from.consents.allow(2, "demo", "greet").await.unwrap();
        from.registrations
            .remember("demo", &client("shared"))
            .await
            .unwrap();

        let mut seen = Vec::new();
        let copied = copy(&from, &to, |user| seen.push(*user)).await.unwrap();
        let expected = Copied {
            users: 2,
            connections: 2,
            personal_tokens: 1,
            consents: 1,
            registrations: 1,
        };
        assert_eq!(copied, expected);
        assert_eq!(seen.iter().map(|u| u.user_id).collect::<Vec<_>>(), [1, 2]);
        let moved = to.credentials.load(1, "gone").await.unwrap().unwrap();
        assert_eq!(moved.client.client_secret.unwrap().expose(), "s3cret");
        assert_eq!(
            to.personal_tokens
                .load(2, "pat")
                .await
                .unwrap()
                .unwrap()
                .expose(),
            "t0k"
        );
        assert!(to.consents.allows(2, "demo", "greet").await.unwrap());
        assert_eq!(to.registrations.all().await.unwrap().len(), 1);
        assert_eq!(to.user_data.servers(1).await.unwrap(), ["demo", "gone"]);

        assert_eq!(copy(&from, &to, |_| {}).await.unwrap(), expected);
        assert_eq!(to.consents.allowed(2).await.unwrap().len(), 1);
        assert!(
            from.credentials.load(1, "demo").await.unwrap().is_some(),
            "the source is left as it was"
        );
    }
}
