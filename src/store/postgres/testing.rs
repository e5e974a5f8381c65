//! A database of its own for each test, in the test binary's throwaway
//! PostgreSQL cluster (see `test_peers::postgres`).

use std::sync::Arc;

use super::Database;
use crate::secret::Secret;
use crate::vault::{KeySource, Vault};

pub(super) struct TestDb {
    pub database: Database,
    pub vault: Arc<Vault>,
    pub url: Secret,
    _dir: tempfile::TempDir,
    _db: test_peers::postgres::Database,
}

impl TestDb {
    /// Another replica's connections to the same database.
    pub async fn replica(&self) -> Database {
        Database::connect(&self.url).await.unwrap()
    }

    /// Runs `sql` and returns the first column of every row as bytes
    /// (`BYTEA`, or text cast to it), to look at what the database holds.
    pub async fn raw(&self, sql: &'static str) -> Vec<Vec<u8>> {
        use sqlx::Row;
        sqlx::query(sql)
            .fetch_all(self.database.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<Vec<u8>, _>(0))
            .collect()
    }
}

/// Connected, schema not applied.
pub(super) async fn empty() -> TestDb {
    let db = test_peers::postgres::cluster().database();
    let url = Secret::new(db.url.clone());
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(Vault::open(dir.path(), &KeySource::File(dir.path().join("k"))).unwrap());
    TestDb {
        database: Database::connect(&url).await.unwrap(),
        vault,
        url,
        _dir: dir,
        _db: db,
    }
}

/// Connected, schema applied.
pub(super) async fn migrated() -> TestDb {
    let db = empty().await;
    db.database.migrate().await.unwrap();
    db
}
