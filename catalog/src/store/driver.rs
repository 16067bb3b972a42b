//! How one query text runs on both catalog backends, each with its own column types.
//!
//! On PostgreSQL the catalog keeps ids as `uuid`, instants as `timestamptz` and JSON as `jsonb`,
//! the types a DBA expects in psql; on SQLite they stay TEXT, INTEGER milliseconds and TEXT.
//! sqlx's `Any` driver can carry neither `uuid` nor `timestamptz`, so the store holds a native
//! `PgPool` or `SqlitePool`, and keeps one copy of each query this way:
//!
//! - [`on!`] runs a query body on whichever driver a pool or write transaction has: the body is
//!   written once and compiled once per driver;
//! - values whose column type differs per backend are bound and read as [`Id`], [`Millis`] and
//!   sqlx's `Json`, which encode to each driver's column type;
//! - rows are read through [`CatalogRow`], so each row conversion is written once over `PgRow`
//!   and `SqliteRow`.

use serde::de::DeserializeOwned;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgRow, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteRow, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{
    Decode, Encode, PgConnection, PgPool, Postgres, Row, Sqlite, SqliteConnection, SqlitePool,
    Transaction, Type,
};
use tenantgate_config::db_url::Engine;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::CatalogError;

/// The catalog's connection pool, on the backend's native sqlx driver.
///
/// For code that must run SQL the store does not offer (tests inspecting the schema, one-off
/// operator tools); everything else goes through [`super::Catalog`]'s methods.
#[derive(Clone, Debug)]
pub enum CatalogPool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One value per backend; what [`on!`] dispatches on.
pub(crate) enum Native<P, S> {
    Postgres(P),
    Sqlite(S),
}

/// `on!(target, db => body)`: evaluate `body` with `db` bound to the native executor inside
/// `target` (a [`Native`], from `Catalog::db()` or `WriteTx::db()`).
///
/// The body is expanded once per driver, so it must produce the same type on both: decode rows
/// inside it (through [`CatalogRow`]) rather than returning them.
macro_rules! on {
    ($target:expr, $db:ident => $body:expr) => {
        match $target {
            $crate::store::driver::Native::Postgres($db) => $body,
            $crate::store::driver::Native::Sqlite($db) => $body,
        }
    };
}
pub(crate) use on;

/// An open catalog write, from [`super::Catalog::begin_write`].
///
/// It holds the catalog write lock until [`WriteTx::commit`]; dropping it rolls the write back.
/// Store functions that write take `&mut WriteTx`, so a write can only happen under the lock.
pub struct WriteTx(Native<Transaction<'static, Postgres>, Transaction<'static, Sqlite>>);

impl WriteTx {
    pub(crate) fn postgres(tx: Transaction<'static, Postgres>) -> WriteTx {
        WriteTx(Native::Postgres(tx))
    }

    pub(crate) fn sqlite(tx: Transaction<'static, Sqlite>) -> WriteTx {
        WriteTx(Native::Sqlite(tx))
    }

    /// Make the write durable and release the catalog write lock.
    pub async fn commit(self) -> Result<(), CatalogError> {
        on!(self.0, tx => tx.commit().await?);
        Ok(())
    }

    /// Undo the write and release the lock (what dropping the transaction does, but awaited).
    pub async fn rollback(self) -> Result<(), CatalogError> {
        on!(self.0, tx => tx.rollback().await?);
        Ok(())
    }

    /// The backend this write runs on.
    pub fn engine(&self) -> Engine {
        match self.0 {
            Native::Postgres(_) => Engine::Postgres,
            Native::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// The transaction's connection, for [`on!`].
    pub(crate) fn db(&mut self) -> Native<&mut PgConnection, &mut SqliteConnection> {
        match &mut self.0 {
            Native::Postgres(tx) => Native::Postgres(&mut **tx),
            Native::Sqlite(tx) => Native::Sqlite(&mut **tx),
        }
    }
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WriteTx").field(&self.engine()).finish()
    }
}

/// A type the catalog reads from a column on both backends.
pub(crate) trait Decodable:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Decodable for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A result row of either driver, read by column name.
pub(crate) trait CatalogRow {
    /// The value of `column`. A value that does not decode is [`CatalogError::Corrupt`].
    fn get<T: Decodable>(&self, column: &'static str) -> Result<T, CatalogError>;

    /// An id column ([`Id`]).
    fn id(&self, column: &'static str) -> Result<Uuid, CatalogError> {
        Ok(self.get::<Id>(column)?.0)
    }

    /// A nullable id column.
    fn opt_id(&self, column: &'static str) -> Result<Option<Uuid>, CatalogError> {
        Ok(self.get::<Option<Id>>(column)?.map(|id| id.0))
    }

    /// An instant column ([`Millis`]), in milliseconds.
    fn millis(&self, column: &'static str) -> Result<i64, CatalogError> {
        Ok(self.get::<Millis>(column)?.0)
    }

    /// A nullable instant column.
    fn opt_millis(&self, column: &'static str) -> Result<Option<i64>, CatalogError> {
        Ok(self.get::<Option<Millis>>(column)?.map(|at| at.0))
    }

    /// A JSON column (`jsonb` on PostgreSQL, TEXT on SQLite).
    fn json<T: DeserializeOwned + 'static>(&self, column: &'static str) -> Result<T, CatalogError> {
        Ok(self.get::<Json<T>>(column)?.0)
    }

    /// A nullable JSON column.
    fn opt_json<T: DeserializeOwned + 'static>(
        &self,
        column: &'static str,
    ) -> Result<Option<T>, CatalogError> {
        Ok(self.get::<Option<Json<T>>>(column)?.map(|json| json.0))
    }
}

impl CatalogRow for PgRow {
    fn get<T: Decodable>(&self, column: &'static str) -> Result<T, CatalogError> {
        decoded(self.try_get(column), column)
    }
}

impl CatalogRow for SqliteRow {
    fn get<T: Decodable>(&self, column: &'static str) -> Result<T, CatalogError> {
        decoded(self.try_get(column), column)
    }
}

fn decoded<T>(value: Result<T, sqlx::Error>, column: &'static str) -> Result<T, CatalogError> {
    value.map_err(|e| match e {
        sqlx::Error::ColumnDecode { source, .. } => crate::error::corrupt(column, source),
        other => CatalogError::Database(other),
    })
}

/// A catalog id: `uuid` on PostgreSQL, hyphenated lower-case TEXT on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(pub(crate) Uuid);

impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for Id {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Id(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl Decode<'_, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Id(Uuid::parse_str(<&str as Decode<Sqlite>>::decode(
            value,
        )?)?))
    }
}

/// An instant as the model keeps it, milliseconds since the Unix epoch: `timestamptz` on
/// PostgreSQL, INTEGER milliseconds on SQLite.
///
/// `timestamptz` holds microseconds, so every millisecond value round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Millis(pub(crate) i64);

impl Millis {
    /// Now, by the wall clock.
    pub(crate) fn now() -> Millis {
        Millis(tenantgate_contract::time::now_ms())
    }
}

impl Type<Postgres> for Millis {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Millis {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)?;
        Encode::<Postgres>::encode(at, buf)
    }
}

impl Decode<'_, Postgres> for Millis {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let at = <OffsetDateTime as Decode<Postgres>>::decode(value)?;
        // Floor, not truncation toward zero, so instants before 1970 stay in order too.
        Ok(Millis(i64::try_from(
            at.unix_timestamp_nanos().div_euclid(1_000_000),
        )?))
    }
}

impl Type<Sqlite> for Millis {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Millis {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0, buf)
    }
}

impl Decode<'_, Sqlite> for Millis {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Millis(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}
