//! SQLite failures in the catalog's vocabulary: the one place database error codes are read.

use sqlx::error::ErrorKind;

use crate::catalog::CatalogError;

/// Translates a database failure into a [`CatalogError`].
///
/// `duplicate` names what a unique violation collided with (`segment abc`), `missing` what a
/// foreign-key violation could not find (`folder …`). The methods check for both before they
/// write, inside the same transaction, so these mappings are the backstop, not the main path.
/// Everything else (I/O, a locked database past the busy timeout, a corrupt file, a check
/// constraint) is a [`CatalogError::Backend`].
pub(super) fn catalog_error(error: sqlx::Error, duplicate: &str, missing: &str) -> CatalogError {
    if let sqlx::Error::Database(database_error) = &error {
        match database_error.kind() {
            ErrorKind::UniqueViolation => return CatalogError::AlreadyExists(duplicate.to_owned()),
            ErrorKind::ForeignKeyViolation => return CatalogError::NotFound(missing.to_owned()),
            _ => {}
        }
    }
    CatalogError::Backend(error.to_string())
}

/// Whether SQLite refused because another connection holds a lock (`SQLITE_BUSY` and its
/// extended codes), so that trying again later can succeed.
pub(super) fn is_busy(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    match error {
        sqlx::Error::Database(database_error) => database_error
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_BUSY),
        _ => false,
    }
}

/// [`catalog_error`] for statements whose constraints name nothing a caller could fix.
pub(super) fn backend_error(error: sqlx::Error) -> CatalogError {
    catalog_error(error, "record", "referenced record")
}

/// A failed schema migration.
pub(super) fn migration_error(error: sqlx::migrate::MigrateError) -> CatalogError {
    CatalogError::Backend(format!("catalog schema migration failed: {error}"))
}

/// A stored value that does not decode into its domain type: the file was changed behind
/// segmart's back or written by an incompatible version.
pub(super) fn corrupt(what: &str, why: impl std::fmt::Display) -> CatalogError {
    CatalogError::Backend(format!("corrupt catalog data: {what}: {why}"))
}
