//! The Postgres side of a test system: where the server is, the URL of each service's
//! database, and dropping those databases afterwards. The services create and migrate their
//! own databases; the harness only names them and cleans up.

use std::env;

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The server and superuser the suite uses, without a database name:
/// `E2E_POSTGRES_URL`, else the local trust-auth server.
pub fn server_url() -> String {
    env::var("E2E_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The URL of one database on [`server_url`].
pub fn database_url(database: &str) -> String {
    format!("{}/{database}", server_url())
}

/// Drops the databases (`WITH (FORCE)`, so connections a killed service left behind do not
/// block it). Missing databases are fine.
pub async fn drop_databases(databases: &[String]) -> Result<()> {
    let url = database_url("postgres");
    let mut connection = PgConnection::connect(&url)
        .await
        .with_context(|| format!("failed to connect to {url} to drop test databases"))?;
    for database in databases {
        // Names are ours (`<prefix>_<service>`), but a name is spliced into SQL here, so make
        // sure it cannot be anything but an identifier.
        anyhow::ensure!(
            is_plain_identifier(database),
            "refusing to drop database {database:?}: not a plain identifier"
        );
        let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .with_context(|| format!("failed to drop database {database}"))?;
    }
    connection.close().await.ok();
    Ok(())
}

/// [`drop_databases`] for synchronous code (a `Drop`): runs it on its own thread with its own
/// runtime, because blocking on a future inside the caller's runtime would panic.
pub fn drop_databases_blocking(databases: Vec<String>) -> Result<()> {
    std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to build a runtime to drop test databases")?;
        runtime.block_on(drop_databases(&databases))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread dropping test databases panicked"))?
}

fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_dropped() {
        assert!(is_plain_identifier("e2e_1a2b3c4d_order"));
        assert!(!is_plain_identifier("x\"; DROP"));
        assert!(!is_plain_identifier(""));
    }
}
