//! Description of the host's token table.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Well-known token types. Any other string the host uses works too.
pub mod token_types {
    /// E-mail address verification links.
    pub const EMAIL_VERIFICATION: &str = "email_verification";
    /// Password reset links.
    pub const PASSWORD_RESET: &str = "password_reset";
    /// Passwordless sign-in links.
    pub const MAGIC_LINK: &str = "magic_link";
    /// Invitations.
    pub const INVITE: &str = "invite";
    /// The four well-known types.
    pub const ALL: [&str; 4] = [EMAIL_VERIFICATION, PASSWORD_RESET, MAGIC_LINK, INVITE];
}

/// Longest identifier accepted (PostgreSQL's limit).
const MAX_IDENT_LEN: usize = 63;

/// A validated SQL identifier: ASCII letter or `_` first, then letters, digits or `_`.
///
/// Identifiers are still quoted by the query builder; validation makes a hostile name an
/// error at construction instead of something the database ever sees.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(String);

impl Ident {
    /// Validates `value` as an identifier of the given `kind` (used in the error).
    pub fn new(kind: &'static str, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let reason = if value.is_empty() {
            Some("it is empty")
        } else if value.len() > MAX_IDENT_LEN {
            Some("it is longer than 63 bytes")
        } else if !value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            Some("it must start with an ASCII letter or `_`")
        } else if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Some("only ASCII letters, digits and `_` are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidIdentifier {
                kind,
                value,
                reason,
            }),
            None => Ok(Ident(value)),
        }
    }

    /// The identifier text (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Ident {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Ident::new("identifier", value)
    }
}

impl From<Ident> for String {
    fn from(value: Ident) -> Self {
        value.0
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an SQLite table stores instants (SQLite has no time type).
///
/// The cutoff is bound in the same representation, so that comparisons in SQL are exact
/// and the expiry index is used. PostgreSQL and MySQL use native time types and ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeFormat {
    /// RFC 3339 text in UTC with a `+00:00` offset, as sqlx writes a `DateTime<Utc>`:
    /// `2026-01-01T12:00:00+00:00`, `2026-01-01T12:00:00.250+00:00`.
    #[default]
    Rfc3339Text,
    /// SQLite `datetime()` text in UTC: `2026-01-01 12:00:00`, optionally with a fraction
    /// (`strftime('%Y-%m-%d %H:%M:%f')`), as sqlx writes a `NaiveDateTime`.
    SqliteDatetimeText,
    /// Integer seconds since the Unix epoch.
    UnixSeconds,
    /// Integer milliseconds since the Unix epoch.
    UnixMillis,
}

/// The host's token table: where tokens live and which columns matter.
///
/// The default is table `verification_tokens` with columns `id`, `token_type`,
/// `expires_at` and `used_at`, which is what [`TokenStore::migrate`] creates.
///
/// ```
/// use token_cleanup_core::{TimeFormat, TokenTable};
///
/// let table = TokenTable::builder()
///     .schema("auth")
///     .table("email_tokens")
///     .expires_column("valid_until")
///     .used_column(None::<String>)
///     .time_format(TimeFormat::UnixSeconds)
///     .build()?;
/// assert_eq!(table.table().as_str(), "email_tokens");
///
/// // Anything that is not a plain identifier is refused before any SQL is built.
/// assert!(TokenTable::builder().table("tokens; DROP TABLE users").build().is_err());
/// # Ok::<(), token_cleanup_core::Error>(())
/// ```
///
/// [`TokenStore::migrate`]: crate::TokenStore::migrate
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenTable {
    schema: Option<Ident>,
    table: Ident,
    id_column: Ident,
    type_column: Ident,
    expires_column: Ident,
    used_column: Option<Ident>,
    time_format: TimeFormat,
}

impl Default for TokenTable {
    fn default() -> Self {
        TokenTableBuilder::default()
            .build()
            .expect("default identifiers are valid")
    }
}

impl TokenTable {
    /// Default table name.
    pub const DEFAULT_TABLE: &'static str = "verification_tokens";

    /// Starts a builder holding the defaults.
    pub fn builder() -> TokenTableBuilder {
        TokenTableBuilder::default()
    }

    /// The default layout under another table name.
    ///
    /// ```
    /// let table = token_cleanup_core::TokenTable::named("tokens")?;
    /// assert_eq!(table.expires_column().as_str(), "expires_at");
    /// # Ok::<(), token_cleanup_core::Error>(())
    /// ```
    pub fn named(table: impl Into<String>) -> Result<Self> {
        Self::builder().table(table).build()
    }

    /// Schema (PostgreSQL schema, MySQL database), if any.
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }
    /// Table name.
    pub fn table(&self) -> &Ident {
        &self.table
    }
    /// Primary key column.
    pub fn id_column(&self) -> &Ident {
        &self.id_column
    }
    /// Token type column.
    pub fn type_column(&self) -> &Ident {
        &self.type_column
    }
    /// Expiry column.
    pub fn expires_column(&self) -> &Ident {
        &self.expires_column
    }
    /// Used/consumed-at column, if the table has one.
    pub fn used_column(&self) -> Option<&Ident> {
        self.used_column.as_ref()
    }
    /// How SQLite stores the time columns.
    pub fn time_format(&self) -> TimeFormat {
        self.time_format
    }

    /// `schema.table` or `table`, for messages and lock names.
    pub fn qualified_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.table),
            None => self.table.to_string(),
        }
    }
}

/// Builds a [`TokenTable`]; every name is validated in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct TokenTableBuilder {
    schema: Option<String>,
    table: String,
    id_column: String,
    type_column: String,
    expires_column: String,
    used_column: Option<String>,
    time_format: TimeFormat,
}

impl Default for TokenTableBuilder {
    fn default() -> Self {
        Self {
            schema: None,
            table: TokenTable::DEFAULT_TABLE.into(),
            id_column: "id".into(),
            type_column: "token_type".into(),
            expires_column: "expires_at".into(),
            used_column: Some("used_at".into()),
            time_format: TimeFormat::default(),
        }
    }
}

impl TokenTableBuilder {
    /// Schema (PostgreSQL) or database (MySQL) that holds the table.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
    /// Table name (default `verification_tokens`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }
    /// Primary key column (default `id`).
    pub fn id_column(mut self, column: impl Into<String>) -> Self {
        self.id_column = column.into();
        self
    }
    /// Token type column (default `token_type`).
    pub fn type_column(mut self, column: impl Into<String>) -> Self {
        self.type_column = column.into();
        self
    }
    /// Expiry column (default `expires_at`).
    pub fn expires_column(mut self, column: impl Into<String>) -> Self {
        self.expires_column = column.into();
        self
    }
    /// Used-at column (default `used_at`); `None` when the table has none.
    pub fn used_column(mut self, column: Option<impl Into<String>>) -> Self {
        self.used_column = column.map(Into::into);
        self
    }
    /// SQLite time representation (default [`TimeFormat::Rfc3339Text`]).
    pub fn time_format(mut self, format: TimeFormat) -> Self {
        self.time_format = format;
        self
    }

    /// Validates every identifier.
    pub fn build(self) -> Result<TokenTable> {
        Ok(TokenTable {
            schema: self.schema.map(|s| Ident::new("schema", s)).transpose()?,
            table: Ident::new("table", self.table)?,
            id_column: Ident::new("column", self.id_column)?,
            type_column: Ident::new("column", self.type_column)?,
            expires_column: Ident::new("column", self.expires_column)?,
            used_column: self
                .used_column
                .map(|c| Ident::new("column", c))
                .transpose()?,
            time_format: self.time_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_that_smuggle_sql_are_refused() {
        for bad in [
            "",
            "t; DROP TABLE users",
            "t\"",
            "t`x",
            "1abc",
            "a b",
            "tokens--",
            "é",
            &"x".repeat(64),
        ] {
            let err = TokenTable::builder().table(bad).build().unwrap_err();
            assert!(
                matches!(err, Error::InvalidIdentifier { kind: "table", .. }),
                "{bad}"
            );
            let err = TokenTable::builder()
                .expires_column(bad)
                .build()
                .unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidIdentifier { kind: "column", .. }
            ));
            let err = TokenTable::builder().schema(bad).build().unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidIdentifier { kind: "schema", .. }
            ));
        }
        assert!(TokenTable::builder().table("_tokens_2").build().is_ok());
    }

    #[test]
    fn deserializing_validates_too() {
        let mut json = serde_json::to_value(TokenTable::default()).unwrap();
        json["table"] = "x; drop".into();
        assert!(serde_json::from_value::<TokenTable>(json).is_err());
    }
}
