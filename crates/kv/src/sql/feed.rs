//! Change feeds of the SQL engines: LISTEN/NOTIFY on PostgreSQL, a change-log table on
//! MySQL/MariaDB.
//!
//! PostgreSQL.
//! A read-write transaction that wrote announced keys sends `NOTIFY channel, 'payload'`
//! in the same message as its `COMMIT` (the engine issues BEGIN and COMMIT itself for
//! this), so announcing costs no round trip and PostgreSQL delivers the notification if
//! and only if the transaction commits. The payload is the announcement in hex: NOTIFY
//! carries text, under 8000 bytes, so a commit that changed more says "everything".
//! Channels are per database; the channel's name holds the table, so volumes sharing a
//! database under different tables do not hear each other.
//!
//! A follower holds one connection of its own (outside the engine's pool) that LISTENs.
//! PostgreSQL queues notifications for a listening session and for no one else: a
//! follower whose connection drops has missed what was sent meanwhile, so it reports
//! [`FeedEvent::Lost`] at once and `Live` only once it listens again. A connection that
//! silently stops delivering is found by a `SELECT 1` after each quiet second, which must
//! be answered within [`PING_TIMEOUT`].
//!
//! MySQL/MariaDB cannot push. A read-write transaction that wrote announced keys
//! inserts its announcement as a row of a change-log table (`<table>_changes`, an
//! AUTO_INCREMENT id and the payload) in the same text query as its `COMMIT`, so again
//! no round trip is added and the row exists if and only if the transaction committed.
//! A follower asks every [`LOG_POLL`] for the rows after the last id it saw, one
//! indexed range read. Ids are handed out at insert and become visible at commit, so a
//! commit may show up after a higher id: ids skipped over are remembered for
//! [`GAP_WAIT`] and asked for again; one that never comes (its transaction rolled back
//! after its insert, which takes a failed COMMIT) makes the follower drop everything once
//! its wait is over, and so does a follower that fell further behind than the log keeps.
//! Each client prunes rows [`LOG_KEPT`] ids behind its own insert every
//! [`PRUNE_EVERY`] announcing commits, after committing, on its own.

use super::{classify, Config, Dialect, SqlEngine, SqlPool};
use crate::feed::{
    deliver, follow_with_retries, from_hex, to_hex, FeedEvent, FeedFollower, IdleTicks, Stop,
    PING_TIMEOUT, QUIET,
};
use crate::{Error, Result};
use sqlx::mysql::MySqlConnection;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgListener, Postgres};
use sqlx::{AssertSqlSafe, Executor, Row};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; the announcement doubles
/// in hex.
const MAX_PAYLOAD: usize = 7998 / 2;
/// PostgreSQL truncates identifiers, channel names among them, to 63 bytes.
const MAX_CHANNEL: usize = 63;
/// The longest announcement a change-log row holds.
const MAX_LOG_PAYLOAD: usize = 4096;
/// How often a MySQL follower reads the change log: the bound on how late it hears of a
/// change, besides the commit itself.
pub(super) const LOG_POLL: Duration = Duration::from_millis(100);
/// Rows read at most per poll; a full page is followed by the next at once.
const LOG_PAGE: usize = 1000;
/// How long an id skipped over is waited for before everything counts as changed.
pub(super) const GAP_WAIT: Duration = Duration::from_secs(10);
/// Ids skipped over that a follower remembers; a larger gap counts as everything.
const MAX_MISSING: usize = 256;
/// How many ids of change log each client keeps behind its own latest row.
pub(super) const LOG_KEPT: i64 = 100_000;
/// One announcing commit in this many prunes the log.
pub(super) const PRUNE_EVERY: u64 = 1024;

/// How a volume's commits announce their changes.
pub(super) enum Feed {
    /// PostgreSQL: NOTIFY on a channel, heard by a LISTENing connection.
    Notify {
        opts: Box<PgConnectOptions>,
        channel: String,
    },
    /// MySQL/MariaDB: rows of a change-log table, polled.
    Log(ChangeLog),
}

impl Feed {
    /// The feed of the PostgreSQL volume in `table` (as written in SQL, schema-qualified
    /// or not).
    pub(super) fn notify(opts: PgConnectOptions, table: &str) -> Self {
        Feed::Notify {
            opts: Box::new(opts),
            channel: derived_name("nectar:", &table.replace('"', ""), MAX_CHANNEL),
        }
    }
}

/// `prefix` and `name` when that is short and plain, else `prefix` and a hash of `name`
/// (two long names must not meet in one truncated name).
fn derived_name(prefix: &str, name: &str, max: usize) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.chars().all(plain) && prefix.len() + name.len() <= max {
        return format!("{prefix}{name}");
    }
    // FNV-1a: stable across versions and builds, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{prefix}{hash:016x}")
}

/// The change-log table of a MySQL volume and its statements.
pub(super) struct ChangeLog {
    /// The table, quoted.
    table: String,
    create: String,
    prune: String,
}

impl ChangeLog {
    pub(super) fn new(cfg: &Config) -> Self {
        // MySQL names are at most 64 characters.
        let name = derived_name("", &format!("{}_changes", cfg.table), 64);
        let table = Dialect::MySql.quote(&name);
        ChangeLog {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} (id BIGINT NOT NULL AUTO_INCREMENT, \
                 payload VARBINARY({MAX_LOG_PAYLOAD}) NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB"
            ),
            prune: format!("DELETE FROM {table} WHERE id < LAST_INSERT_ID() - {LOG_KEPT}"),
            table,
        }
    }

    /// Creates the table when missing: the feed of this volume, or `None` when the user
    /// may not create it (the volume works, without a client cache, as before).
    pub(super) async fn setup(
        self,
        conn: &mut MySqlConnection,
        target: &str,
    ) -> Result<Option<Feed>> {
        match conn.execute(AssertSqlSafe(self.create.clone())).await {
            Ok(_) => Ok(Some(Feed::Log(self))),
            Err(e) => {
                tracing::warn!(
                    "no change feed on {target}: cannot create the change-log table {}: {}; \
                     clients of this volume keep no metadata cache (grant CREATE to enable it)",
                    self.table,
                    classify(e, target)
                );
                Ok(None)
            }
        }
    }
}

/// What a change-log follower has seen: every id up to `seen` but those in `missing`
/// (skipped over, perhaps not committed yet), each with when it was first missed.
struct LogCursor {
    seen: i64,
    /// The server's auto_increment_increment: ids one client's inserts are spaced by.
    step: i64,
    missing: BTreeMap<i64, Instant>,
}

impl LogCursor {
    fn new(seen: i64, step: i64) -> Self {
        LogCursor {
            seen,
            step: step.max(1),
            missing: BTreeMap::new(),
        }
    }

    /// Takes rows read after `seen` or among `missing`; returns the payloads not seen
    /// before, in id order, or `None` when everything must count as changed (a gap too
    /// large to track, or one waited for in vain).
    fn take(&mut self, mut rows: Vec<(i64, Vec<u8>)>, now: Instant) -> Option<Vec<Vec<u8>>> {
        rows.sort_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
        let mut everything = false;
        let mut new = Vec::new();
        for (id, payload) in rows {
            if id <= self.seen {
                if self.missing.remove(&id).is_some() {
                    new.push(payload);
                }
                continue;
            }
            let skipped = ((id - self.seen) / self.step - 1).max(0) as usize;
            if skipped + self.missing.len() > MAX_MISSING {
                everything = true;
                self.missing.clear();
            } else {
                let mut next = self.seen + self.step;
                while next < id {
                    self.missing.insert(next, now);
                    next += self.step;
                }
            }
            self.seen = id;
            new.push(payload);
        }
        let before = self.missing.len();
        self.missing
            .retain(|_, missed| now.duration_since(*missed) < GAP_WAIT);
        everything |= self.missing.len() < before;
        (!everything).then_some(new)
    }
}

impl SqlEngine {
    /// The statement that announces a commit of these keys (already filtered to the
    /// announced ones), sent with COMMIT, and the one to run after the commit; `None`
    /// when there is nothing to announce.
    pub(super) fn announcement(&self, keys: &[Vec<u8>]) -> (Option<String>, Option<&str>) {
        let Some(feed) = &self.feed else {
            return (None, None);
        };
        let max = match feed {
            Feed::Notify { .. } => MAX_PAYLOAD,
            Feed::Log(_) => MAX_LOG_PAYLOAD,
        };
        let keys = keys.iter().map(Vec::as_slice);
        let Some(payload) = crate::feed::encode(self.origin, keys, |_| true, max) else {
            return (None, None);
        };
        // The quoted names and the hex payload need no escaping.
        let hex = to_hex(&payload);
        match feed {
            Feed::Notify { channel, .. } => (Some(format!("NOTIFY \"{channel}\", '{hex}'")), None),
            Feed::Log(log) => {
                let n = self.announcing_commits.fetch_add(1, Ordering::Relaxed) + 1;
                let prune = n.is_multiple_of(PRUNE_EVERY).then_some(log.prune.as_str());
                let insert = format!("INSERT INTO {} (payload) VALUES (X'{hex}')", log.table);
                (Some(insert), prune)
            }
        }
    }

    /// Follows the volume's changes until `follower` says stop (see `crate::feed`).
    pub(super) fn follow(&self, feed: &Feed, follower: &mut FeedFollower<'_>) -> Result<()> {
        let rt = self.rt();
        let _ctx = rt.enter();
        match feed {
            Feed::Notify { opts, channel } => {
                // A pool of one connection only because PgListener connects through a
                // pool.
                let pool = PoolOptions::<Postgres>::new()
                    .max_connections(1)
                    .acquire_timeout(super::CONNECT_TIMEOUT)
                    .connect_lazy_with((**opts).clone());
                follow_with_retries(follower, |f| {
                    rt.block_on(self.listen_once(&pool, channel, f))
                })
            }
            Feed::Log(log) => {
                follow_with_retries(follower, |f| rt.block_on(self.poll_log_once(log, f)))
            }
        }
    }

    /// Reads the change log from its end until a read fails or the follower stops.
    async fn poll_log_once(
        &self,
        log: &ChangeLog,
        follower: &mut FeedFollower<'_>,
    ) -> Result<Stop> {
        let SqlPool::My(pool) = &self.pool else {
            unreachable!("only MySQL volumes have a change log")
        };
        let err = |e| classify(e, &self.target).context("change feed");
        let last: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT MAX(id) FROM {}", log.table)))
                .fetch_one(pool)
                .await
                .map_err(err)?;
        let step: i64 = sqlx::query_scalar("SELECT CAST(@@auto_increment_increment AS SIGNED)")
            .fetch_one(pool)
            .await
            .map_err(err)?;
        let mut cursor = LogCursor::new(last.unwrap_or(0), step);
        if !follower(FeedEvent::Live) {
            return Ok(Stop::Asked);
        }
        let after = format!(
            "SELECT id, payload FROM {} WHERE id > ? ORDER BY id LIMIT {LOG_PAGE}",
            log.table
        );
        let mut idle = IdleTicks::new();
        loop {
            let read = async {
                let rows = |r: Vec<sqlx::mysql::MySqlRow>| -> sqlx::Result<Vec<(i64, Vec<u8>)>> {
                    r.iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                        .collect()
                };
                let query = sqlx::query(AssertSqlSafe(after.clone())).bind(cursor.seen);
                let mut read = rows(query.fetch_all(pool).await?)?;
                let full = read.len() == LOG_PAGE;
                if !cursor.missing.is_empty() {
                    // Integers, written into the statement as they are.
                    let ids: Vec<String> = cursor.missing.keys().map(i64::to_string).collect();
                    let late = format!(
                        "SELECT id, payload FROM {} WHERE id IN ({})",
                        log.table,
                        ids.join(",")
                    );
                    read.extend(rows(
                        sqlx::query(AssertSqlSafe(late)).fetch_all(pool).await?,
                    )?);
                }
                Ok::<_, sqlx::Error>((read, full))
            };
            let (rows, full) = match read.await {
                Ok(r) => r,
                Err(e) => return Ok(Stop::Broken(classify(e, &self.target).to_string())),
            };
            let go_on = match cursor.take(rows, Instant::now()) {
                Some(payloads) => payloads.iter().all(|p| deliver(p, self.origin, follower)),
                None => follower(FeedEvent::Everything),
            };
            if !go_on || !idle.tick(follower) {
                return Ok(Stop::Asked);
            }
            if !full {
                tokio::time::sleep(LOG_POLL).await;
            }
        }
    }

    /// One listening connection, from connecting until it breaks or the follower stops.
    async fn listen_once(
        &self,
        pool: &sqlx::Pool<Postgres>,
        channel: &str,
        follower: &mut FeedFollower<'_>,
    ) -> Result<Stop> {
        let connect = async {
            let mut listener = PgListener::connect_with(pool).await?;
            // A lost connection is reported, and only then made again.
            listener.eager_reconnect(false);
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match tokio::time::timeout(super::CONNECT_TIMEOUT, connect).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(classify(e, &self.target).context("change feed")),
            Err(_) => {
                return Err(Error::engine(
                    format!(
                        "change feed: no answer from {} within {:?}",
                        self.target,
                        super::CONNECT_TIMEOUT
                    ),
                    true,
                ))
            }
        };
        if !follower(FeedEvent::Live) {
            return Ok(Stop::Asked);
        }
        let broken = |why: String| Ok(Stop::Broken(format!("{}: {why}", self.target)));
        let mut idle = IdleTicks::new();
        loop {
            match tokio::time::timeout(QUIET, listener.try_recv()).await {
                Ok(Ok(Some(n))) => {
                    let payload = from_hex(n.payload()).unwrap_or_default();
                    if !deliver(&payload, self.origin, follower) {
                        return Ok(Stop::Asked);
                    }
                }
                Ok(Ok(None)) => return broken("the listening connection closed".into()),
                Ok(Err(e)) => return broken(e.to_string()),
                Err(_) => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(PING_TIMEOUT, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return broken(format!("no answer to a ping: {e}")),
                        Err(_) => {
                            return broken(format!("no answer to a ping within {PING_TIMEOUT:?}"))
                        }
                    }
                }
            }
            if !idle.tick(follower) {
                return Ok(Stop::Asked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(table: &str) -> String {
        match Feed::notify(PgConnectOptions::new(), table) {
            Feed::Notify { channel, .. } => channel,
            Feed::Log(_) => unreachable!(),
        }
    }

    #[test]
    fn channels_name_the_table_or_hash_it() {
        assert_eq!(channel("\"nectar_kv\""), "nectar:nectar_kv");
        assert_eq!(channel("\"meta\".\"t1\""), "nectar:meta.t1");
        let odd = channel("\"we ird\".\"t\"");
        assert!(odd.starts_with("nectar:") && odd.len() == 7 + 16, "{odd}");
        let long = format!("\"{}\".\"t\"", "s".repeat(60));
        let other = format!("\"{}\".\"u\"", "s".repeat(60));
        assert_ne!(channel(&long), channel(&other));
        assert!(channel(&long).len() <= MAX_CHANNEL);
        assert_eq!(
            derived_name("", "nectar_kv_changes", 64),
            "nectar_kv_changes"
        );
        assert_eq!(derived_name("", &"t".repeat(70), 64).len(), 16);
    }

    fn rows(ids: &[i64]) -> Vec<(i64, Vec<u8>)> {
        ids.iter().map(|&i| (i, vec![i as u8])).collect()
    }

    fn payloads(ids: &[i64]) -> Option<Vec<Vec<u8>>> {
        Some(ids.iter().map(|&i| vec![i as u8]).collect())
    }

    #[test]
    fn the_log_cursor_waits_for_ids_committed_late() {
        let t0 = Instant::now();
        let mut c = LogCursor::new(10, 1);
        assert_eq!(c.take(rows(&[11, 12]), t0), payloads(&[11, 12]));
        // 13 and 14 were handed out but are not committed yet.
        assert_eq!(c.take(rows(&[15]), t0), payloads(&[15]));
        assert_eq!(c.missing.keys().copied().collect::<Vec<_>>(), [13, 14]);
        // 14 commits: heard once, even when read twice.
        assert_eq!(c.take(rows(&[14, 16]), t0), payloads(&[14, 16]));
        assert_eq!(c.take(rows(&[14]), t0), payloads(&[]));
        // 13 never comes: after the wait everything counts as changed, once.
        let later = t0 + GAP_WAIT;
        assert_eq!(c.take(rows(&[]), later), None);
        assert_eq!(c.take(rows(&[17]), later), payloads(&[17]));
        assert!(c.missing.is_empty());
    }

    #[test]
    fn the_log_cursor_gives_up_on_gaps_too_large_and_steps_as_the_server() {
        let now = Instant::now();
        let mut c = LogCursor::new(0, 1);
        assert_eq!(c.take(rows(&[MAX_MISSING as i64 + 5]), now), None);
        assert!(c.missing.is_empty());
        assert_eq!(c.seen, MAX_MISSING as i64 + 5);
        // auto_increment_increment 2: 1, 3, 5... are one server's ids.
        let mut c = LogCursor::new(1, 2);
        assert_eq!(c.take(rows(&[3, 7]), now), payloads(&[3, 7]));
        assert_eq!(c.missing.keys().copied().collect::<Vec<_>>(), [5]);
    }
}
