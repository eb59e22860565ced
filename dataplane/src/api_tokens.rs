//! Bearer tokens of TCP clients, read-write or read-only. A read-only token
//! may read: every GET (the configuration, counters, status, `/metrics`)
//! and the two questions asked by POST that change nothing (`/v1/trace`,
//! `/v1/why`). It may not change the configuration, nor capture packets
//! (their payloads are workload data, and a capture pauses the XDP tier).
//! So a Prometheus scraper's token cannot rewrite the configuration.

use axum::http::{HeaderMap, Method};

/// The tokens a daemon accepts on TCP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub read_write: Option<String>,
    pub read_only: Option<String>,
}

/// What a request's token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is neither.
    Wrong,
}

impl Tokens {
    pub fn any(&self) -> bool {
        self.read_write.is_some() || self.read_only.is_some()
    }

    /// What the bearer token in `headers` allows.
    pub fn access(&self, headers: &HeaderMap) -> Access {
        let Some(given) = bearer(headers) else { return Access::Missing };
        let given = given.trim().as_bytes();
        // Both compared, always, so timing does not tell which one was near.
        let rw = self.read_write.as_ref().is_some_and(|t| same_secret(given, t.as_bytes()));
        let ro = self.read_only.as_ref().is_some_and(|t| same_secret(given, t.as_bytes()));
        match (rw, ro) {
            (true, _) => Access::ReadWrite,
            (false, true) => Access::ReadOnly,
            _ => Access::Wrong,
        }
    }
}

/// Whether a request only reads.
pub fn is_read(method: &Method, path: &str) -> bool {
    method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && matches!(path, "/v1/trace" | "/v1/why"))
}

/// Compares without an early exit, so response time does not reveal how much
/// of a guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token a request presents, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization").and_then(|v| v.to_str().ok())?.strip_prefix("Bearer ")
}

/// Reads a token file: one token, at least 16 characters, surrounding
/// blanks ignored.
pub fn read_token_file(path: &std::path::Path) -> Result<String, TokenFileError> {
    let t = std::fs::read_to_string(path)
        .map_err(|source| TokenFileError::Read { path: path.into(), source })?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        return Err(TokenFileError::Short { path: path.into() });
    }
    Ok(t)
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: the token must be at least 16 characters", path.display())]
    Short { path: std::path::PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn each_token_gets_its_access() {
        let t = Tokens {
            read_write: Some("rw-0123456789abcdef".into()),
            read_only: Some("ro-0123456789abcdef".into()),
        };
        assert_eq!(t.access(&with("rw-0123456789abcdef")), Access::ReadWrite);
        assert_eq!(t.access(&with("ro-0123456789abcdef")), Access::ReadOnly);
        assert_eq!(t.access(&with("ro-0123456789abcdeX")), Access::Wrong);
        assert_eq!(t.access(&HeaderMap::new()), Access::Missing);
        let only_ro = Tokens { read_write: None, read_only: t.read_only.clone() };
        assert_eq!(only_ro.access(&with("rw-0123456789abcdef")), Access::Wrong);
    }

    #[test]
    fn reads_are_gets_and_the_questions() {
        assert!(is_read(&Method::GET, "/metrics"));
        assert!(is_read(&Method::POST, "/v1/why") && is_read(&Method::POST, "/v1/trace"));
        assert!(!is_read(&Method::POST, "/v1/config/ops"));
        assert!(!is_read(&Method::PUT, "/v1/config"));
        assert!(!is_read(&Method::POST, "/v1/capture"));
    }
}
