//! What the engines would otherwise repeat: the runtime an async client runs on, the
//! decoding and redaction of META-URLs, error messages that keep their causes, and the
//! read-only guard's answer.

use crate::error::{Error, Result};

/// The runtime a networked engine's client library runs on, its threads named
/// `nectar-<engine>`: requests block the calling thread on it (`block_on`) while the
/// library's connection tasks run on its two workers. (One worker measured the same
/// within this machine's noise, which is ±40% from run to run for single operations.)
pub(crate) fn engine_runtime(engine: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("nectar-{engine}"))
        .enable_all()
        .build()
        .map_err(|e| {
            Error::engine(
                format!("cannot start the {engine} client runtime: {e}"),
                false,
            )
        })
}

/// Removes the password from a URL for messages and session info. Works without a
/// URL parser, because JuiceFS-style URLs such as `mysql://u:pw@(host:3306)/db` are not
/// valid URLs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    // The user info ends at the last '@' of the authority (a password may contain '@',
    // and the `(host:port)` form has its '/' only after the host).
    let Some(at) = rest[..authority_end.max(rest.find(")/").map_or(0, |p| p + 1))].rfind('@')
    else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// What an engine answers to a write inside a read-only transaction: a bug of the
/// caller's, never a user's doing.
pub(crate) fn write_in_read_only() -> Error {
    Error::Corrupt("write in a read-only transaction".into())
}

/// Decodes `%XX` escapes as Go's `url.Parse` does (JuiceFS parses its META-URLs with it):
/// `None` when a `%` is not followed by two hex digits. `+` stays `+`, except in a query
/// value, where Go reads it as a space (`plus_is_space`).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// An error and its causes, "a: b: c", each said once (tonic's "tcp connect error" alone
/// hides the useful "Connection refused" underneath).
pub(crate) fn causes(first: String, mut cur: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = vec![first];
    while let Some(c) = cur {
        let m = c.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379/1"),
            "redis://:****@127.0.0.1:6379/1"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/db?sslmode=disable"),
            "postgres://u:****@h:5432/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("mysql://nectar:pw@(127.0.0.1:3306)/nectar2"),
            "mysql://nectar:****@(127.0.0.1:3306)/nectar2"
        );
        assert_eq!(
            redact_url("etcd://root:pw@h1:2379,h2:2379/pfx"),
            "etcd://root:****@h1:2379,h2:2379/pfx"
        );
        assert_eq!(
            redact_url("sqlite3:///var/lib/nectar/a@b.db"),
            "sqlite3:///var/lib/nectar/a@b.db"
        );
        assert_eq!(redact_url("redis://h:6379/1"), "redis://h:6379/1");
        assert_eq!(redact_url("no-scheme"), "no-scheme");
    }

    #[test]
    fn percent_escapes_decode_as_go_does() {
        assert_eq!(percent_decode("a%2Fb%40c", false).unwrap(), b"a/b@c");
        assert_eq!(percent_decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(percent_decode("a+b", true).unwrap(), b"a b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("50%", false), None);
        assert_eq!(percent_decode("%4", false), None);
    }
}
