//! The shim over the two SQL engines: the values a statement binds ([`Val`]), the columns a
//! row yields ([`Cols`]), one connection or transaction ([`Db`]) and the [`Engine`] it runs on,
//! so that every query is written once. The engines themselves are in `sqlite.rs` and
//! `postgres.rs`. Blocking.

use crate::jobs::JobState;
use crate::Result;

/// Which SQL engine a [`Db`] talks to: the few places the SQL differs ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The column jobs are ordered and paged by (PostgreSQL has no rowid; its jobs have `seq`).
    pub(super) fn order(self) -> &'static str {
        match self {
            Engine::Sqlite => "rowid",
            Engine::Postgres => "seq",
        }
    }

    /// What a claim's SELECT ends with so that two replicas never lock the same job
    /// (SQLite has one writer at a time and needs nothing).
    pub(super) fn skip_locked(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A value bound to a statement: the few column types the store uses, bindable on both
/// engines.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    OptText(Option<&'a str>),
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Val::Int(v) => v.to_sql(),
            Val::Real(v) => v.to_sql(),
            Val::Text(v) => v.to_sql(),
            Val::OptText(v) => v.to_sql(),
        }
    }
}

impl postgres::types::ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Val::Int(v) => v.to_sql(ty, out),
            Val::Real(v) => v.to_sql(ty, out),
            Val::Text(v) => v.to_sql(ty, out),
            Val::OptText(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [Type::INT8, Type::FLOAT8, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    postgres::types::to_sql_checked!();
}

impl Val<'_> {
    /// A job state, as the store keeps it (its number).
    pub(super) fn state(s: JobState) -> Self {
        Val::Int(s as i64)
    }
}

/// Reads one column of a result row, on either engine.
pub(super) trait Cols {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn real(&self, i: usize) -> Result<f64>;
    fn text(&self, i: usize) -> Result<String>;
}

macro_rules! cols {
    ($row:ty, $get:ident) => {
        impl Cols for $row {
            fn int(&self, i: usize) -> Result<i64> {
                Ok(self.$get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>> {
                Ok(self.$get(i)?)
            }
            fn real(&self, i: usize) -> Result<f64> {
                Ok(self.$get(i)?)
            }
            fn text(&self, i: usize) -> Result<String> {
                Ok(self.$get(i)?)
            }
        }
    };
}
cols!(rusqlite::Row<'_>, get);
cols!(postgres::Row, try_get);

/// One connection or transaction: statements are written once, with SQLite's `?N`
/// placeholders (rewritten to `$N` for PostgreSQL).
pub(super) trait Db {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64>;
    fn each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
    ) -> Result<()>;
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// The engine behind this connection.
    fn engine(&self) -> Engine;
}

pub(super) fn rows<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Val<'_>],
    map: fn(&dyn Cols) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    db.each(sql, params, &mut |r| {
        out.push(map(r)?);
        Ok(())
    })?;
    Ok(out)
}

pub(super) fn first<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Val<'_>],
    map: fn(&dyn Cols) -> Result<T>,
) -> Result<Option<T>> {
    Ok(rows(db, sql, params, map)?.into_iter().next())
}
