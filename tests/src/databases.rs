//! The Postgres side of a test system: where the server is, each service's database and its
//! two roles — created with the deployed provisioning script, `deploy/postgres/provision.sql`,
//! so every test runs the services as they run in production: migrating as the owner role,
//! running as a role that may only read and write its own database's rows — and dropping
//! them afterwards. The services migrate their databases themselves.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::io::AsyncWriteExt as _;

use crate::postgres_server;

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

/// `server_url` with another port, e.g. a proxy's in front of the server.
pub fn with_port(server_url: &str, port: u16) -> Result<String> {
    let mut url =
        reqwest::Url::parse(server_url).with_context(|| format!("{server_url} is not a URL"))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("{server_url} cannot have a port"))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Drops the databases (`WITH (FORCE)`, so connections a killed service left behind do not
/// block it). Missing databases are fine.
pub async fn drop_databases(databases: &[String]) -> Result<()> {
    let url = database_url("postgres");
    let mut connection = PgConnection::connect(&url)
        .await
        .with_context(|| format!("failed to connect to {url} to drop test databases"))?;
    for database in databases {
        drop_database(&mut connection, database).await?;
    }
    connection.close().await.ok();
    Ok(())
}

async fn drop_database(connection: &mut PgConnection, database: &str) -> Result<()> {
    // Names are ours (`<prefix>_<service>`), but a name is spliced into SQL here, so make
    // sure it cannot be anything but an identifier.
    anyhow::ensure!(
        is_plain_identifier(database),
        "refusing to drop database {database:?}: not a plain identifier"
    );
    let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    sqlx::query(AssertSqlSafe(statement))
        .execute(connection)
        .await
        .with_context(|| format!("failed to drop database {database}"))?;
    Ok(())
}

/// One service's database of a test system and the two roles the provisioning script
/// creates for it: `<database>_owner` owns it and runs the migrations
/// (`DATABASE_MIGRATION_URL`), `<database>_app` is what the service runs as (`DATABASE_URL`).
/// Each role gets a password of its own, made up for the run (the local server trusts every
/// connection, but the URLs carry them as a deployment's do).
#[derive(Debug, Clone)]
pub struct ServiceDatabase {
    pub name: String,
    pub owner_role: String,
    owner_password: String,
    pub app_role: String,
    app_password: String,
}

impl ServiceDatabase {
    /// The database `name` (a plain identifier, see [`is_plain_identifier`]) and its roles.
    pub fn new(name: &str) -> ServiceDatabase {
        let password = || format!("{:032x}", rand::random::<u128>());
        ServiceDatabase {
            name: name.to_owned(),
            owner_role: format!("{name}_owner"),
            owner_password: password(),
            app_role: format!("{name}_app"),
            app_password: password(),
        }
    }

    /// The URL of the database as its owner role, on the server of `server_url` (any user in
    /// it is replaced).
    pub fn owner_url(&self, server_url: &str) -> Result<String> {
        self.url_as(server_url, &self.owner_role, &self.owner_password)
    }

    /// The URL of the database as its run-time role, on the server of `server_url`.
    pub fn app_url(&self, server_url: &str) -> Result<String> {
        self.url_as(server_url, &self.app_role, &self.app_password)
    }

    fn url_as(&self, server_url: &str, role: &str, password: &str) -> Result<String> {
        let mut url = reqwest::Url::parse(server_url)
            .with_context(|| format!("{server_url} is not a URL"))?;
        let credentials = url
            .set_username(role)
            .and_then(|()| url.set_password(Some(password)));
        anyhow::ensure!(credentials.is_ok(), "{server_url} cannot carry credentials");
        url.set_path(&self.name);
        Ok(url.to_string())
    }
}

/// The provisioning script of the deploy files.
fn provision_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/postgres/provision.sql")
}

/// Creates each database with its roles on the server of `server_url` (a superuser's, without
/// a database), by running `deploy/postgres/provision.sql` with `psql` once per database, as
/// the deploy files do.
pub async fn provision(server_url: &str, databases: &[ServiceDatabase]) -> Result<()> {
    let script = provision_script();
    let script = script
        .canonicalize()
        .with_context(|| format!("the provisioning script {} is missing", script.display()))?;
    let mut commands = String::new();
    for database in databases {
        // Spliced into psql's input: names and passwords must be plain (they are ours).
        for value in [
            &database.name,
            &database.owner_role,
            &database.owner_password,
            &database.app_role,
            &database.app_password,
        ] {
            anyhow::ensure!(
                is_plain_identifier(value),
                "refusing to provision {value:?}: not a plain identifier"
            );
        }
        commands.push_str(&format!(
            "\\set database {}\n\\set owner_role {}\n\\set owner_password {}\n\
             \\set app_role {}\n\\set app_password {}\n\\i '{}'\n",
            database.name,
            database.owner_role,
            database.owner_password,
            database.app_role,
            database.app_password,
            script.display().to_string().replace('\'', "''"),
        ));
    }
    let psql = postgres_server::binaries().join("psql");
    let mut child = tokio::process::Command::new(&psql)
        .args([
            "--no-psqlrc",
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
        ])
        .arg(format!("{}/postgres", server_url.trim_end_matches('/')))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to run {}", psql.display()))?;
    let mut stdin = child.stdin.take().context("psql has no stdin")?;
    stdin.write_all(commands.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    anyhow::ensure!(
        output.status.success(),
        "provisioning the databases with {} failed ({}):\n{}",
        provision_script().display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Drops each database and then its roles, on the server of `server_url`. Missing ones are
/// fine.
pub async fn drop_service_databases(server_url: &str, databases: &[ServiceDatabase]) -> Result<()> {
    let url = format!("{}/postgres", server_url.trim_end_matches('/'));
    let mut connection = PgConnection::connect(&url)
        .await
        .with_context(|| format!("failed to connect to {url} to drop test databases"))?;
    for database in databases {
        drop_database(&mut connection, &database.name).await?;
        for role in [&database.app_role, &database.owner_role] {
            anyhow::ensure!(
                is_plain_identifier(role),
                "refusing to drop role {role:?}: not a plain identifier"
            );
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
                    .bind(role)
                    .fetch_one(&mut connection)
                    .await?;
            if !exists {
                continue;
            }
            // With its database gone a role owns nothing and holds no privileges but those
            // of another database, if a test gave it any: DROP OWNED takes those here.
            for statement in [
                format!("DROP OWNED BY \"{role}\""),
                format!("DROP ROLE \"{role}\""),
            ] {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await
                    .with_context(|| format!("failed to drop role {role}"))?;
            }
        }
    }
    connection.close().await.ok();
    Ok(())
}

/// [`drop_service_databases`] for synchronous code (a `Drop`): runs it on its own thread with
/// its own runtime, because blocking on a future inside the caller's runtime would panic.
pub fn drop_service_databases_blocking(
    server_url: String,
    databases: Vec<ServiceDatabase>,
) -> Result<()> {
    std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to build a runtime to drop test databases")?;
        runtime.block_on(drop_service_databases(&server_url, &databases))
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
    fn a_service_database_has_an_owner_and_an_app_role_each_with_a_password() {
        let database = ServiceDatabase::new("e2e_1a2b3c4d_order");
        assert_eq!(database.owner_role, "e2e_1a2b3c4d_order_owner");
        assert_eq!(database.app_role, "e2e_1a2b3c4d_order_app");
        assert_ne!(database.owner_password, database.app_password);
        let app = database
            .app_url("postgres://postgres@127.0.0.1:5432")
            .unwrap();
        assert_eq!(
            app,
            format!(
                "postgres://e2e_1a2b3c4d_order_app:{}@127.0.0.1:5432/e2e_1a2b3c4d_order",
                database.app_password
            )
        );
        let owner = database
            .owner_url("postgres://postgres@127.0.0.1:6000/")
            .unwrap();
        assert!(
            owner.starts_with("postgres://e2e_1a2b3c4d_order_owner:")
                && owner.ends_with("@127.0.0.1:6000/e2e_1a2b3c4d_order"),
            "{owner}"
        );
    }

    #[test]
    fn only_plain_identifiers_are_dropped() {
        assert!(is_plain_identifier("e2e_1a2b3c4d_order"));
        assert!(!is_plain_identifier("x\"; DROP"));
        assert!(!is_plain_identifier(""));
    }
}
