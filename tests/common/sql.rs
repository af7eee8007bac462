//! The SQL servers (PostgreSQL and MariaDB, started by `scripts/test`) as the tests and
//! benches reach them: their URLs, table names of a run's own, and a connection of the test's
//! (or bench's) own to set up tables and read rows back. Benches reach this module through
//! `tests/common/mod.rs`, included by path.

// Each test or bench uses only some of it.
#![allow(dead_code)]

use sqlx::{ColumnIndex, Decode, MySqlPool, PgPool, Row, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Postgres,
    MySql,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Postgres => "postgres",
            Flavor::MySql => "mysql",
        }
    }

    /// `SLUICE_TEST_POSTGRES` or `SLUICE_TEST_MYSQL`, default the server on loopback.
    pub fn url(self) -> String {
        match self {
            Flavor::Postgres => std::env::var("SLUICE_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            Flavor::MySql => std::env::var("SLUICE_TEST_MYSQL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
        }
    }
}

/// `<prefix>_<random>`, so runs never share a table ([`super::unique`] joins with `-`, which
/// table names cannot hold unquoted).
pub fn unique_table(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The test's (or bench's) own connection to the database, not the agent's.
pub enum Db {
    Pg(PgPool),
    My(MySqlPool),
}

impl Db {
    /// Panics naming the server when it is not there.
    pub async fn connect(f: Flavor) -> Db {
        let url = f.url();
        let db = match f {
            Flavor::Postgres => PgPool::connect(&url).await.map(Db::Pg),
            Flavor::MySql => MySqlPool::connect(&url).await.map(Db::My),
        };
        db.unwrap_or_else(|e| panic!("{f:?} at {url}: {e}"))
    }

    pub async fn exec(&self, sql: &str) {
        let r = match self {
            Db::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Db::My(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The one signed BIGINT `sql` selects (MySQL's `COUNT(*)` may be unsigned: cast it).
    pub async fn count(&self, sql: &str) -> i64 {
        let r = match self {
            Db::Pg(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Db::My(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every row of `sql`, each column read as text (the query casts them).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let rows = match self {
            Db::Pg(p) => sqlx::query(sql).fetch_all(p).await.map(texts),
            Db::My(p) => sqlx::query(sql).fetch_all(p).await.map(texts),
        };
        rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// Each column of each row as text; one generic function for both databases' row types.
fn texts<R: Row>(rows: Vec<R>) -> Vec<Vec<Option<String>>>
where
    usize: ColumnIndex<R>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}
