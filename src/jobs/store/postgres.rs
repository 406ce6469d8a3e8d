//! The PostgreSQL engine: a store shared by several replicas. Statements arrive with SQLite's
//! `?N` placeholders and are rewritten to `$N`; the client and its transactions are each a
//! [`Db`]. Blocking (the synchronous `postgres` client).

use super::sql::{Cols, Db, Engine, Val};
use crate::Result;

/// The advisory lock replicas starting together take, so that they migrate once.
pub(super) const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7250392)";

/// `?N` → `$N`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_params<'a>(params: &'a [Val<'_>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

macro_rules! pg_db {
    ($t:ty) => {
        impl Db for $t {
            fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
                Ok(self.execute(pg_sql(sql).as_str(), &pg_params(params))?)
            }
            fn each(
                &mut self,
                sql: &str,
                params: &[Val<'_>],
                f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
            ) -> Result<()> {
                for r in self.query(pg_sql(sql).as_str(), &pg_params(params))? {
                    f(&r)?;
                }
                Ok(())
            }
            fn batch(&mut self, sql: &str) -> Result<()> {
                Ok(self.batch_execute(sql)?)
            }
            fn engine(&self) -> Engine {
                Engine::Postgres
            }
        }
    };
}
pg_db!(postgres::Client);
pg_db!(postgres::Transaction<'_>);
