//! The inbox: which events each consumer has already applied. Recorded in the transaction
//! that applies the event, so "applied" and "recorded" can never disagree. A row is kept for
//! `INBOX_RETENTION`, as long as a copy of its event can still arrive by id, then deleted by
//! the pruner ([`crate::pruning`]).

use sqlx::PgConnection;
use uuid::Uuid;

/// Records that `consumer` is applying `event_id`. Returns false when it already did: the
/// caller must then change nothing. A concurrent delivery of the same event waits on the
/// first one's row lock and then sees it as already applied.
pub async fn record(
    tx: &mut PgConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
