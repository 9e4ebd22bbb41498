//! The inbox: which events each consumer has already applied. Recorded in the transaction
//! that applies the event, so "applied" and "recorded" can never disagree. A row is kept for
//! `INBOX_RETENTION`, as long as a copy of its event can still arrive by id, then deleted by
//! the pruner ([`crate::pruning`]).

use futures::TryStreamExt;
use sqlx::postgres::PgQueryResult;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

/// Records that `consumer` is applying `event_id`, after running `before` — statements
/// without parameters, each ending in `;` — in the same round trip. Returns false when the
/// consumer already applied the event: the caller must then change nothing. A concurrent
/// delivery of the same event waits on the first one's row lock and then sees it as already
/// applied.
///
/// Why one round trip: under load a consumer waits for round trips, not for statements, and
/// the statements around this one (a batch's savepoints, its advisory locks) take no
/// parameters. So the insert is sent as text in the same simple query, its values written in
/// as literals: the event id is a UUID, and the consumer name is quoted.
pub async fn record(
    tx: &mut PgConnection,
    before: &str,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let sql = format!("{before}{}", insert(consumer, event_id));
    let results: Vec<_> = sqlx::raw_sql(AssertSqlSafe(sql))
        .execute_many(tx)
        .try_collect()
        .await?;
    Ok(inserted(&results))
}

/// The statement that records `event_id` for `consumer`, as text with its values written in
/// (see [`record`]), for a caller that sends it with other statements itself.
pub fn insert(consumer: &str, event_id: Uuid) -> String {
    format!(
        "INSERT INTO inbox (consumer, event_id) VALUES ({}, '{event_id}') ON CONFLICT DO NOTHING",
        quote_literal(consumer)
    )
}

/// Whether [`insert`], the last of the statements that gave `results` (one per statement),
/// recorded the event: false when the consumer had already applied it.
pub fn inserted(results: &[PgQueryResult]) -> bool {
    results
        .last()
        .is_some_and(|inserted| inserted.rows_affected() == 1)
}

/// `text` as an SQL string literal. The escape-string form (`E'…'`) reads backslashes the
/// same way whatever the server's `standard_conforming_strings`, so doubling both quotes and
/// backslashes is all the quoting it needs.
fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_backslashes() {
        assert_eq!(quote_literal("payment-order"), "E'payment-order'");
        assert_eq!(quote_literal(r"it's a \ test"), r"E'it''s a \\ test'");
        assert_eq!(
            quote_literal(r"\'; DROP TABLE inbox; --"),
            r"E'\\''; DROP TABLE inbox; --'"
        );
    }
}
