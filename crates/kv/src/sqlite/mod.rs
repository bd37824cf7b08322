//! `sqlite3://PATH`: the embedded default engine.
//!
//! One table `kv(k BLOB PRIMARY KEY, v BLOB)` in a WAL-mode database. SQLite allows one
//! writer at a time, so write transactions take the write lock up front with
//! `BEGIN IMMEDIATE` (no deadlock-prone lock upgrades) on one connection guarded by a
//! mutex; read-only transactions use a small pool of other connections and run beside
//! the writer thanks to WAL. Several processes may open the same file (two mounts of a
//! volume on one machine): they wait for each other through the busy timeout, and a
//! timeout surfaces as a temporary error that the transaction runner retries.
//!
//! Change feed: SQLite cannot say which keys another process changed, but it can say
//! that one did, cheaply: `PRAGMA data_version` on a connection changes when another
//! connection committed, and only then. Asked on the writer connection (this process's
//! only writer) every [`POLL`], it tells a follower "everything may have changed" after
//! each foreign commit, and never after this process's own. A volume mounted once sees
//! no event at all; two mounts of one database drop each other's caches on every change,
//! within `POLL` of its commit.

use crate::error::{Error, Result};
use crate::feed::{follow_with_retries, AnnouncedKeys, FeedEvent, FeedFollower, IdleTicks, Stop};
use crate::{KvEngine, KvTxn, TxnBody};
use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use std::path::PathBuf;
use std::time::Duration;

const READ_POOL: usize = 8;
/// How often a follower asks whether another process committed: the bound on how late
/// it hears of a change.
pub(crate) const POLL: Duration = Duration::from_millis(50);

pub struct SqliteEngine {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn map_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            Error::engine(format!("sqlite: {e}"), true)
        }
        Some(ErrorCode::DiskFull) => Error::Full("sqlite: the disk is full".into()),
        _ => Error::engine(format!("sqlite: {e}"), false),
    }
}

impl SqliteEngine {
    /// Opens (creating if needed) the database at `spec`, the part of the URL after
    /// `sqlite3://`; a query string such as `?cache=shared` is ignored.
    pub fn open(spec: &str) -> Result<Self> {
        let path = spec.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(Error::Invalid(
                "sqlite3:// URL without a path: use sqlite3:///var/lib/nectar/NAME.db".into(),
            ));
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "cannot open sqlite database {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
        }
        let writer = Self::connect(&path)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
            )
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot open sqlite database {}: {e}",
                    path.display()
                ))
            })?;
        Ok(SqliteEngine {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn connect(path: &PathBuf) -> Result<Connection> {
        let conn = Connection::open(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot open sqlite database {}: {e}",
                path.display()
            ))
        })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        // WAL with synchronous=NORMAL survives a killed process; only an OS crash may
        // lose the last commits, never consistency.
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;")
            .map_err(map_err)?;
        Ok(conn)
    }

    fn run(conn: &Connection, body: &mut TxnBody<'_>, begin: &str) -> Result<()> {
        // Prepared once per connection, like every statement here: preparing BEGIN and
        // COMMIT anew took a tenth of a metadata walk's CPU.
        let exec = |sql: &str| -> rusqlite::Result<()> {
            conn.prepare_cached(sql)?.execute([])?;
            Ok(())
        };
        exec(begin).map_err(map_err)?;
        let mut tx = SqliteTxn { conn };
        match body(&mut tx) {
            Ok(()) => match exec("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = exec("ROLLBACK");
                    Err(map_err(e))
                }
            },
            Err(e) => {
                let _ = exec("ROLLBACK");
                Err(e)
            }
        }
    }
}

struct SqliteTxn<'a> {
    conn: &'a Connection,
}

impl KvTxn for SqliteTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE k = ?1")
            .map_err(map_err)?;
        st.query_row(params![key], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map_err(map_err)
    }

    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3")
            .map_err(map_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![begin, end, limit], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(map_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            )
            .map_err(map_err)?;
        st.execute(params![key, value]).map_err(map_err)?;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("DELETE FROM kv WHERE k = ?1")
            .map_err(map_err)?;
        st.execute(params![key]).map_err(map_err)?;
        Ok(())
    }
}

impl KvEngine for SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite3"
    }

    fn embedded(&self) -> bool {
        true
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        if !read_only {
            let conn = self.writer.lock();
            return Self::run(&conn, body, "BEGIN IMMEDIATE");
        }
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => Self::connect(&self.path)?,
        };
        let res = Self::run(&conn, body, "BEGIN");
        let mut pool = self.readers.lock();
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        res
    }

    fn reset(&self) -> Result<()> {
        self.writer
            .lock()
            .execute_batch("DELETE FROM kv")
            .map_err(map_err)
    }

    /// Every commit is seen (see the module doc), so nothing needs announcing.
    fn announce_changes(&self, _: AnnouncedKeys) -> bool {
        true
    }

    fn follow_changes(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        let version = || {
            self.writer
                .lock()
                .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                .map_err(map_err)
        };
        follow_with_retries(follower, |follower| {
            let mut seen = version()?;
            if !follower(FeedEvent::Live) {
                return Ok(Stop::Asked);
            }
            let mut idle = IdleTicks::new();
            loop {
                std::thread::sleep(POLL);
                match version() {
                    Ok(now) if now != seen => {
                        seen = now;
                        if !follower(FeedEvent::Everything) {
                            return Ok(Stop::Asked);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Ok(Stop::Broken(e.to_string())),
                }
                if !idle.tick(follower) {
                    return Ok(Stop::Asked);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::heard::Heard;
    use std::sync::Arc;

    #[test]
    fn a_follower_hears_other_processes_commits_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.db");
        let open = || SqliteEngine::open(path.to_str().unwrap()).unwrap();
        // Two engines on one file stand for two processes: each has its own writer.
        let (mine, other) = (Arc::new(open()), open());
        assert!(mine.announce_changes(|_| true));
        let heard = Heard::follow(mine.clone());
        assert_eq!(heard.next(), "live");
        let commit = |e: &SqliteEngine, key: &[u8]| {
            e.attempt(&mut |tx: &mut dyn KvTxn| tx.set(key, b"v"), false)
                .unwrap()
        };
        commit(&mine, b"own");
        commit(&other, b"theirs");
        assert_eq!(
            heard.next(),
            "everything",
            "only the other's commit is heard"
        );
        commit(&other, b"theirs again");
        assert_eq!(heard.next(), "everything");
        assert!(heard.quiet_for(POLL * 4), "nothing more to hear");
        commit(&mine, b"own again");
        assert!(heard.quiet_for(POLL * 4), "its own commit is not heard");
    }
}
