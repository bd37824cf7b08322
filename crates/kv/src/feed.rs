//! Change feeds: how one client hears which keys other clients committed.
//!
//! The design: a client that caches metadata must learn of every change another client
//! commits, soon and without fail, or stop trusting its cache. Engines that can push
//! do so in the commit itself, so a change and its announcement are one atomic step:
//! Redis `PUBLISH`es inside the transaction's `MULTI`/`EXEC`; PostgreSQL sends `NOTIFY`
//! in the message that commits; etcd needs no announcement at all (a watch on the
//! volume's prefix sees every committed key). SQLite can only tell that another process
//! committed something, which its follower reports as "everything". The caller says
//! which keys are worth announcing ([`KvEngine::announce_changes`]; the file system
//! announces attributes, entries, chunks and xattrs, not counters or sessions), and
//! follows the others' announcements with [`KvEngine::follow_changes`], which runs on the
//! caller's thread and reports [`FeedEvent`]s:
//!
//! - `Live` when the feed is (again) connected: everything cached before may have
//!   changed unseen, so the follower starts from an empty cache;
//! - `Changed(keys)` for each commit of another client;
//! - `Everything` when a commit changed too much to list (its announcement would be too
//!   large): the follower drops its whole cache;
//! - `Lost` when the connection broke or stopped answering: from then on nothing is
//!   announced to this client until the next `Live`, so it must stop trusting its cache;
//! - `Idle` at least once a second, so the follower can decide to stop.
//!
//! Announcements carry the announcing client's random id so that a client skips its
//! own (it already knows what it wrote). Their payload is binary ([`encode`]): a version
//! byte, the origin, then each key with a two-byte length.

use crate::Result;
use std::time::Duration;

/// What a change feed reports to its follower.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedEvent<'a> {
    /// Connected: announcements reach this client from now on.
    Live,
    /// Another client committed changes to these keys.
    Changed(&'a [Vec<u8>]),
    /// Another client committed more changes than one announcement lists.
    Everything,
    /// The feed broke (its message says why); announcements may be missed until `Live`.
    Lost(&'a str),
    /// Nothing happened for a while.
    Idle,
}

/// Follows a feed: called with each event; returns false to stop following.
pub type FeedFollower<'a> = dyn FnMut(FeedEvent<'_>) -> bool + 'a;

/// Selects the keys a commit announces.
pub type AnnouncedKeys = fn(&[u8]) -> bool;

/// An announcement longer than its engine's limit says "everything changed" instead of
/// listing keys (Redis and PostgreSQL deliver each message whole; a rm of a big file
/// changes thousands of chunk keys in one transaction). Redis takes up to this much.
pub const MAX_ANNOUNCEMENT: usize = 32 << 10;

const VERSION: u8 = 1;
/// Version byte of an announcement that lists no keys: everything may have changed.
const EVERYTHING: u8 = 0xFE;

/// A random id for this client's announcements.
pub fn new_origin() -> u64 {
    rand::random::<u64>() | 1
}

/// The announcement of a commit of `origin` that changed `keys`, at most `max` bytes
/// long, or `None` when no key is worth announcing.
pub fn encode<'k>(
    origin: u64,
    keys: impl IntoIterator<Item = &'k [u8]>,
    announced: AnnouncedKeys,
    max: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.extend_from_slice(&origin.to_le_bytes());
    for key in keys.into_iter().filter(|k| announced(k)) {
        if out.len() + 2 + key.len() > max || key.len() > u16::MAX as usize {
            out.truncate(1 + 8);
            out[0] = EVERYTHING;
            return Some(out);
        }
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
    }
    (out.len() > 1 + 8).then_some(out)
}

/// What an announcement says.
#[derive(Debug, PartialEq, Eq)]
pub enum Announcement {
    Keys { origin: u64, keys: Vec<Vec<u8>> },
    Everything { origin: u64 },
}

/// Reads an announcement; `None` when it is not one this version understands (a
/// follower then treats it as "everything changed").
pub fn decode(payload: &[u8]) -> Option<Announcement> {
    let (&version, rest) = payload.split_first()?;
    let origin = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let mut rest = &rest[8..];
    match version {
        EVERYTHING => Some(Announcement::Everything { origin }),
        VERSION => {
            let mut keys = Vec::new();
            while !rest.is_empty() {
                let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
                keys.push(rest.get(2..2 + len)?.to_vec());
                rest = &rest[2 + len..];
            }
            Some(Announcement::Keys { origin, keys })
        }
        _ => None,
    }
}

/// An announcement as text, for channels that carry only text (PostgreSQL's NOTIFY):
/// lowercase hex, which also needs no quoting inside an SQL string literal.
pub(crate) fn to_hex(payload: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(payload.len() * 2);
    for b in payload {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The bytes of [`to_hex`]'s text; `None` when it is not such text (the follower then
/// treats it as "everything changed").
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Hands a received announcement to the follower, skipping this client's own. Returns
/// what the follower returned (true: go on).
pub(crate) fn deliver(payload: &[u8], own: u64, follower: &mut FeedFollower<'_>) -> bool {
    match decode(payload) {
        Some(Announcement::Keys { origin, .. } | Announcement::Everything { origin })
            if origin == own =>
        {
            true
        }
        Some(Announcement::Keys { keys, .. }) => follower(FeedEvent::Changed(&keys)),
        Some(Announcement::Everything { .. }) | None => follower(FeedEvent::Everything),
    }
}

/// How long a feed may stay quiet before its connection is checked (a ping that must
/// be answered within [`PING_TIMEOUT`]), and how often at least the follower hears from
/// it.
pub(crate) const QUIET: Duration = Duration::from_secs(1);
/// How long the check of a quiet feed's connection may take before the feed counts as
/// lost.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between two tries to connect again.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Tells the follower "idle" at least every [`QUIET`] even while announcements keep
/// coming, so that it can stop.
pub(crate) struct IdleTicks(std::time::Instant);

impl IdleTicks {
    pub(crate) fn new() -> Self {
        IdleTicks(std::time::Instant::now())
    }

    /// False when the follower, told it is idle, asks to stop.
    pub(crate) fn tick(&mut self, follower: &mut FeedFollower<'_>) -> bool {
        if self.0.elapsed() < QUIET {
            return true;
        }
        self.0 = std::time::Instant::now();
        follower(FeedEvent::Idle)
    }
}

/// Why one connection of a feed ended.
pub(crate) enum Stop {
    /// The follower asked to stop.
    Asked,
    /// The connection broke after it was live.
    Broken(String),
}

/// Runs `connection` (one connection of an engine's feed, from connecting until it
/// breaks or the follower stops) again and again: a break is reported as
/// [`FeedEvent::Lost`] once, not at every failed try to come back, and the tries slow
/// down to one every [`MAX_RETRY`].
pub(crate) fn follow_with_retries(
    follower: &mut FeedFollower<'_>,
    mut connection: impl FnMut(&mut FeedFollower<'_>) -> Result<Stop>,
) -> Result<()> {
    let mut retry = Duration::from_millis(100);
    let mut lost_reported = false;
    loop {
        match connection(follower) {
            Ok(Stop::Asked) => return Ok(()),
            // It was live: report the break and come back quickly.
            Ok(Stop::Broken(why)) => {
                retry = Duration::from_millis(100);
                tracing::debug!("change feed lost: {why}");
                if !follower(FeedEvent::Lost(&why)) {
                    return Ok(());
                }
                lost_reported = true;
            }
            Err(e) => {
                if !lost_reported && !follower(FeedEvent::Lost(&e.to_string())) {
                    return Ok(());
                }
                lost_reported = true;
            }
        }
        std::thread::sleep(retry);
        retry = (retry * 2).min(MAX_RETRY);
        if !follower(FeedEvent::Idle) {
            return Ok(());
        }
    }
}

/// The answer of an engine without a feed.
pub(crate) fn unsupported(engine: &str) -> Result<()> {
    Err(crate::Error::Failed(format!(
        "the {engine} engine cannot announce changes to other clients"
    )))
}

/// Following an engine's feed in a test: what it heard, as text.
#[cfg(test)]
pub(crate) mod heard {
    use super::FeedEvent;
    use crate::KvEngine;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// The events a follower thread heard: "live", "lost", "everything" or
    /// "changed KEY,KEY" (keys as lossy UTF-8); the thread stops when this is dropped.
    pub(crate) struct Heard {
        rx: mpsc::Receiver<String>,
        stop: Arc<AtomicBool>,
    }

    impl Heard {
        pub(crate) fn follow(engine: Arc<dyn KvEngine>) -> Self {
            let (tx, rx) = mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = stop.clone();
            std::thread::spawn(move || {
                engine.follow_changes(&mut |e| {
                    let text = match e {
                        FeedEvent::Changed(keys) => format!(
                            "changed {}",
                            keys.iter()
                                .map(|k| String::from_utf8_lossy(k).into_owned())
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                        FeedEvent::Lost(_) => "lost".into(),
                        FeedEvent::Idle => return !stopped.load(Ordering::Relaxed),
                        other => format!("{other:?}").to_lowercase(),
                    };
                    tx.send(text).is_ok()
                })
            });
            Heard { rx, stop }
        }

        /// The next event, waiting up to 10 s.
        pub(crate) fn next(&self) -> String {
            self.rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the feed reported nothing within 10 s")
        }

        /// True when nothing but idle ticks is heard for `time`.
        pub(crate) fn quiet_for(&self, time: Duration) -> bool {
            matches!(
                self.rx.recv_timeout(time),
                Err(mpsc::RecvTimeoutError::Timeout)
            )
        }
    }

    impl Drop for Heard {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &[u8]) -> bool {
        true
    }

    #[test]
    fn announcements_round_trip_and_skip_unannounced_keys() {
        let keys: Vec<&[u8]> = vec![b"AxI", b"Cused", b"AyD\xffname"];
        let p = encode(7, keys.iter().copied(), |k| k[0] == b'A', MAX_ANNOUNCEMENT).unwrap();
        assert_eq!(
            decode(&p),
            Some(Announcement::Keys {
                origin: 7,
                keys: vec![b"AxI".to_vec(), b"AyD\xffname".to_vec()]
            })
        );
        let only_a = |k: &[u8]| k[0] == b'A';
        assert_eq!(encode(7, [b"Cused".as_slice()], only_a, 100), None);
    }

    #[test]
    fn a_huge_commit_announces_everything() {
        let key = vec![b'A'; 1000];
        let p = encode(
            9,
            std::iter::repeat_n(key.as_slice(), 100),
            all,
            MAX_ANNOUNCEMENT,
        );
        let p = p.unwrap();
        assert!(p.len() < 16);
        assert_eq!(decode(&p), Some(Announcement::Everything { origin: 9 }));
        // The limit is the engine's: two such keys fit Redis's, not one in 1000 bytes.
        let two = std::iter::repeat_n(key.as_slice(), 2);
        assert!(
            matches!(decode(&encode(9, two.clone(), all, MAX_ANNOUNCEMENT).unwrap()), Some(Announcement::Keys { keys, .. }) if keys.len() == 2)
        );
        assert_eq!(
            decode(&encode(9, two, all, 1000).unwrap()),
            Some(Announcement::Everything { origin: 9 })
        );
    }

    #[test]
    fn hex_text_round_trips_and_rejects_what_it_did_not_write() {
        let p = encode(3, [b"A\x00\xff'".as_slice()], all, MAX_ANNOUNCEMENT).unwrap();
        let text = to_hex(&p);
        assert!(text.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(from_hex(&text), Some(p));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn own_and_unreadable_announcements() {
        let p = encode(5, [b"k".as_slice()], all, MAX_ANNOUNCEMENT).unwrap();
        let mut seen = Vec::new();
        let mut f = |e: FeedEvent<'_>| {
            seen.push(format!("{e:?}"));
            true
        };
        assert!(deliver(&p, 5, &mut f));
        assert!(deliver(&p, 6, &mut f));
        assert!(deliver(b"\x09garbage", 6, &mut f));
        assert!(deliver(&p[..p.len() - 1], 6, &mut f));
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("Changed"));
        assert_eq!(seen[1], "Everything");
        assert_eq!(seen[2], "Everything", "a truncated message is not trusted");
    }
}
