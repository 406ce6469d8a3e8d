//! The SQLite engine: the embedded database file of one server (WAL, so a killed server loses
//! nothing it acknowledged) opened with its pragmas, and its [`Db`]. Blocking.

use rusqlite::Connection;

use super::sql::{Cols, Db, Engine, Val};
use crate::Result;

/// Opens (or creates) the database file with the pragmas the store relies on.
pub(super) fn open(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// An SQLite connection (or the connection of an open transaction).
pub(super) struct Lite<'c>(pub(super) &'c Connection);

impl Db for Lite<'_> {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
        Ok(self.0.execute(sql, rusqlite::params_from_iter(params))? as u64)
    }
    fn each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }
}
