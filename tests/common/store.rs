//! The job store a test server uses: the embedded SQLite file, or a fresh database on the
//! PostgreSQL named by `NOISEDA_TEST_POSTGRES` (`.ci/run` starts one with
//! `scripts/postgres.sh`), dropped when the test ends.

use std::path::Path;

pub const POSTGRES_ENV: &str = "NOISEDA_TEST_POSTGRES";

pub enum Backend {
    Sqlite,
    Postgres(PgDb),
}

impl Backend {
    /// A fresh PostgreSQL database for one test, or None (with the reason printed) when
    /// `NOISEDA_TEST_POSTGRES` is not set.
    pub fn postgres(test: &str) -> Option<Self> {
        PgDb::create(test).map(Backend::Postgres)
    }

    /// `extra` plus the flags that select this store. On PostgreSQL the server gets a fixed
    /// replica id (a restarted server takes its jobs back at once) and a short lease.
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = extra.to_vec();
        if let Backend::Postgres(db) = self {
            args.extend(["--store", db.url.as_str(), "--lease-ms", "3000"]);
            if !extra.contains(&"--replica-id") {
                args.extend(["--replica-id", "test-replica"]);
            }
        }
        args
    }

    /// Runs one statement with one text parameter (`?1`) on the store of `data_dir`.
    pub fn exec(&self, data_dir: &Path, sql: &str, param: &str) {
        match self {
            Backend::Sqlite => {
                let db = rusqlite::Connection::open(data_dir.join("noiseda.db")).unwrap();
                db.execute(sql, [param]).unwrap();
            }
            Backend::Postgres(db) => {
                let (url, sql, param) =
                    (db.url.clone(), sql.replace("?1", "$1"), param.to_string());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.execute(sql.as_str(), &[&param]).unwrap();
                })
                .join()
                .unwrap();
            }
        }
    }
}

/// A database created for one test.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    pub fn create(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var(POSTGRES_ENV) else {
            eprintln!(
                "skipping the PostgreSQL variant of {test}: {POSTGRES_ENV} is not set \
                 (export {POSTGRES_ENV}=\"$(scripts/postgres.sh)\")"
            );
            return None;
        };
        let name = format!(
            "noiseda_{}_{}",
            test.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(30)
                .collect::<String>(),
            uuid::Uuid::new_v4().simple()
        );
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{POSTGRES_ENV} must end in /<database>: {admin}"),
        };
        admin_sql(&admin, format!("CREATE DATABASE {name}"));
        Some(Self { url, admin, name })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        admin_sql(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// The sync client runs its own runtime, so it gets a thread of its own (tests run on tokio).
fn admin_sql(admin: &str, sql: String) {
    let admin = admin.to_string();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot connect: {e}"));
        c.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap();
}
