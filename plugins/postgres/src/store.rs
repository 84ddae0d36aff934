use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use plugin_abi::{Driver, Health, PluginError};
use tokio_postgres::NoTls;

use crate::errors::{db_error, pool_error};
use crate::transactions::Transactions;
use crate::Config;

pub struct Postgres {
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    pub(crate) config: Config,
    pub(crate) transactions: std::sync::Arc<Transactions>,
    reaper: tokio::task::AbortHandle,
    expiry_reaper: tokio::task::AbortHandle,
}

/// How often rows past their `expires_at` are deleted (they are invisible at once).
const REAP_EXPIRED_EVERY: Duration = Duration::from_secs(1);

/// Quoted table names, built once from validated identifiers.
pub(crate) struct Sql {
    pub kv: String,
    pub queue: String,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.reaper.abort();
        self.expiry_reaper.abort();
    }
}

impl Postgres {
    pub(crate) async fn client(&self) -> Result<Object, PluginError> {
        self.pool.get().await.map_err(pool_error)
    }
}

impl Driver for Postgres {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }

    fn check(config: &Config) -> Result<(), PluginError> {
        config.check()
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let crate::tls::Target { config: mut pg_config, tls } = crate::tls::parse(&config.url)?;
        pg_config
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .options(format!("-c statement_timeout={}", config.statement_timeout_ms))
            .application_name("prism");
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls {
            Some(tls) => Manager::from_config(pg_config, tls, recycling),
            None => Manager::from_config(pg_config, NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .build()
            .map_err(|e| PluginError::internal(format!("cannot build the connection pool: {e}")))?;
        let sql = Sql {
            kv: format!("\"{}\".\"{}\"", config.schema, config.table),
            queue: format!("\"{}\".\"{}\"", config.schema, config.queue_table),
        };
        create_tables(&pool, &config, &sql).await?;
        let transactions = std::sync::Arc::new(Transactions::new(pool.clone()));
        let reaper =
            tokio::spawn(crate::transactions::reap(std::sync::Arc::downgrade(&transactions))).abort_handle();
        let expiry_reaper =
            tokio::spawn(crate::keyvalue::reap_expired(pool.clone(), sql.kv.clone(), REAP_EXPIRED_EVERY))
                .abort_handle();
        Ok(Postgres { pool, sql, config, transactions, reaper, expiry_reaper })
    }

    async fn health(&self) -> Health {
        let check = async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(db_error)?;
            Ok::<_, PluginError>(())
        };
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(())) => Health::serving(),
            Ok(Err(error)) => Health::unhealthy(error.message().to_owned()),
            Err(_) => Health::unhealthy("postgres did not answer SELECT 1 within 2s"),
        }
    }

    async fn shutdown(&self) {
        self.transactions.rollback_all().await;
        self.pool.close();
    }
}

async fn relation_exists(
    transaction: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<bool, PluginError> {
    let row =
        transaction.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.map_err(db_error)?;
    Ok(row.get(0))
}

/// Creates the schema's tables and indexes if missing. An advisory lock keeps several
/// instances starting at once from racing on the catalog.
async fn create_tables(pool: &Pool, config: &Config, sql: &Sql) -> Result<(), PluginError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    let lock_name = format!("prism:{}.{}:{}", config.schema, config.table, config.queue_table);
    transaction
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_name])
        .await
        .map_err(db_error)?;
    let (schema, kv, queue, queue_table) = (&config.schema, &sql.kv, &sql.queue, &config.queue_table);
    // Versions come from one sequence per table (the column's default, which every write
    // sets again), so a key deleted and written again never gets back a version it had.
    let versions = format!("\"{schema}\".\"{}_versions\"", config.table);
    let had_versions = relation_exists(&transaction, &versions).await?;
    // CREATE INDEX takes a lock on its table even when the index exists, which waits for
    // every open write transaction and holds up every writer queued behind it: an
    // instance starting (a gateway, a reload's probe, a restarted plugin process) must
    // not stall the table, so each index is created only when it is missing.
    let mut indexes = String::new();
    let wanted = [
        (format!("{queue_table}_ready"), format!("{queue} (queue, id) WHERE dead_at IS NULL")),
        (format!("{queue_table}_dead"), format!("{queue} (queue, id) WHERE dead_at IS NOT NULL")),
        (format!("{}_expiry", config.table), format!("{kv} (expires_at) WHERE expires_at IS NOT NULL")),
    ];
    for (name, on) in wanted {
        if !relation_exists(&transaction, &format!("\"{schema}\".\"{name}\"")).await? {
            indexes += &format!("CREATE INDEX IF NOT EXISTS \"{name}\" ON {on};\n");
        }
    }
    transaction
        .batch_execute(&format!(
            r#"
            CREATE SCHEMA IF NOT EXISTS "{schema}";
            CREATE TABLE IF NOT EXISTS {kv} (
                key BYTEA PRIMARY KEY,
                value BYTEA NOT NULL,
                version BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NULL
            );
            CREATE TABLE IF NOT EXISTS {queue} (
                id BIGSERIAL PRIMARY KEY,
                queue TEXT NOT NULL,
                payload BYTEA NOT NULL,
                enqueued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
                visible_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
                deliveries INTEGER NOT NULL DEFAULT 0,
                receipt TEXT NULL,
                dead_at TIMESTAMPTZ NULL
            );
            "#
        ))
        .await
        .map_err(db_error)?;
    // A table from before keyvalue_ttl gets the column (no default, so no rewrite) once.
    let has_expiry: bool = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 AND column_name = 'expires_at')",
            &[&config.schema, &config.table],
        )
        .await
        .map_err(db_error)?
        .get(0);
    if !has_expiry {
        transaction
            .batch_execute(&format!("ALTER TABLE {kv} ADD COLUMN expires_at TIMESTAMPTZ NULL"))
            .await
            .map_err(db_error)?;
    }
    transaction.batch_execute(&indexes).await.map_err(db_error)?;
    if !had_versions {
        // Once per table (ALTER TABLE locks it, so not at every start): the sequence,
        // the column default every write sets again, and for a table from before the
        // sequence, a start above its highest version.
        transaction
            .batch_execute(&format!(
                "CREATE SEQUENCE {versions} OWNED BY {kv}.version;
                 ALTER TABLE {kv} ALTER COLUMN version SET DEFAULT nextval('{versions}');
                 SELECT setval('{versions}', m) FROM (SELECT MAX(version) AS m FROM {kv}) AS highest WHERE m IS NOT NULL;"
            ))
            .await
            .map_err(db_error)?;
    }
    transaction.commit().await.map_err(db_error)
}
