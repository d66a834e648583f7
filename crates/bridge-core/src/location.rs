//! Where a store is: an SQLite database file (the default), or a PostgreSQL
//! database named by URL.
//!
//! `--db` and `BRIDGE_DB` take either: `postgres://…` or `postgresql://…`
//! is PostgreSQL; `sqlite:PATH` or a plain path is SQLite; any other
//! `scheme://` is refused, so that a typo never becomes a file of that name.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a store is.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// An SQLite database file.
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

/// A PostgreSQL URL. Its password, if any, never shows: [`fmt::Display`]
/// and [`fmt::Debug`] print the URL without it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    shown: String,
}

impl PostgresUrl {
    /// The whole URL, password included: for the driver only.
    pub(crate) fn secret(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Location {
    /// Reads `--db`: a PostgreSQL URL, `sqlite:PATH`, or a path.
    pub fn parse(text: &str) -> Result<Location> {
        let invalid = |reason: String| Error::Invalid {
            field: "database",
            reason,
        };
        if let Some((scheme, rest)) = text.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => {
                    if rest.is_empty() {
                        return Err(invalid(format!("{scheme}:// names no server")));
                    }
                    Ok(Location::Postgres(PostgresUrl {
                        url: text.to_owned(),
                        shown: without_password(scheme, rest),
                    }))
                }
                "sqlite" => Ok(Location::File(PathBuf::from(rest))),
                _ => Err(invalid(format!(
                    "{scheme}:// is not a store mcp-bridge knows; give a file path, \
                     sqlite:PATH, or postgres://USER@HOST/DATABASE"
                ))),
            };
        }
        Ok(Location::File(PathBuf::from(
            text.strip_prefix("sqlite:").unwrap_or(text),
        )))
    }

    /// The database file, if the store is SQLite.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::File(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://rest` with the password of its user information left out.
fn without_password(scheme: &str, rest: &str) -> String {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_paths_and_the_sqlite_prefix_are_told_apart() {
        assert_eq!(
            Location::parse("/var/lib/bridge.db").unwrap(),
            Location::File("/var/lib/bridge.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:team.db").unwrap(),
            Location::File("team.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///srv/team.db").unwrap(),
            Location::File("/srv/team.db".into())
        );
        let url = "postgresql://bridge:s3cret@db.example:5432/team?sslmode=verify-full";
        let Location::Postgres(parsed) = Location::parse(url).unwrap() else {
            panic!("not PostgreSQL");
        };
        assert_eq!(parsed.secret(), url);
    }

    #[test]
    fn a_password_never_shows() {
        for (url, shown) in [
            (
                "postgres://bridge:s3cret@db.example:5432/team",
                "postgres://bridge@db.example:5432/team",
            ),
            (
                "postgres://db.example/team?password=s3cret&sslmode=require",
                "postgres://db.example/team?sslmode=require",
            ),
            (
                "postgres://db.example/team?password=s3cret",
                "postgres://db.example/team",
            ),
            (
                "postgres://bridge@db.example",
                "postgres://bridge@db.example",
            ),
        ] {
            let location = Location::parse(url).unwrap();
            assert_eq!(location.to_string(), shown);
            assert_eq!(format!("{location:?}"), shown);
            assert!(!location.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn an_unknown_scheme_is_refused_with_what_is_accepted() {
        let error = Location::parse("mysql://db.example/team").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid database: mysql:// is not a store mcp-bridge knows; give a file path, \
             sqlite:PATH, or postgres://USER@HOST/DATABASE"
        );
        let error = Location::parse("postgres://").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid database: postgres:// names no server"
        );
    }
}
