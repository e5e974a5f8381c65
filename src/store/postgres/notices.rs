//! PostgreSQL's `LISTEN`/`NOTIFY`, for what one replica must tell another
//! at once (a Cancel, a handed-over reply): one connection per listener,
//! opened again when it is lost.

use std::time::Duration;

use super::Database;

/// Sends `payload` on `channel` through `executor` (inside a transaction,
/// it leaves when the transaction commits).
pub async fn notify<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(executor)
        .await
        .map(|_| ())
}

/// Runs `on_notice` for each payload sent on `channel`, one after the
/// other, until the task is aborted.
pub async fn listen<F, Fut>(db: Database, channel: &'static str, mut on_notice: F)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(db.pool()).await?;
            listener.listen(channel).await?;
            loop {
                let notice = listener.recv().await?;
                on_notice(notice.payload().to_owned()).await;
            }
        };
        let error: sqlx::Error = match listening.await {
            Err(error) => error,
            Ok(never) => never,
        };
        tracing::warn!(channel, %error, "listening to other replicas failed; listening again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
