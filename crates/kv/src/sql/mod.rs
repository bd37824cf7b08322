//! `postgres://` / `postgresql://` and `mysql://`: PostgreSQL and MySQL/MariaDB.
//!
//! Design. A volume is one table `nectar_kv(k, v)` (BYTEA on PostgreSQL, VARBINARY(1024)
//! and LONGBLOB on MySQL) whose primary key is the raw key bytes, so a range scan is an
//! index range scan in byte order: both servers compare these types with memcmp. Every
//! attempt is one real server-side transaction on one pooled connection, so reads see the
//! transaction's own writes without any client-side buffer. On PostgreSQL a read-write
//! transaction runs at SERIALIZABLE: its SSI aborts one side of every dangerous conflict
//! with SQLSTATE 40001 (40P01 on deadlock), which becomes [`Error::Conflict`] and the
//! [`crate::Kv`] runner retries. MySQL/MariaDB's SERIALIZABLE only turns reads into shared
//! locks that deadlock on every read-then-write, so there a read-write transaction runs at
//! REPEATABLE READ and reads with `SELECT ... FOR UPDATE`: every key read and every
//! scanned range is locked exclusively (next-key locks cover the gaps too, so an absent
//! key or a range cannot change under the transaction), concurrent writers queue, and a
//! deadlock (1213) or lock wait timeout (1205) becomes a conflict. Read-only transactions
//! take no locks and open no server transaction: each of their statements runs on its
//! own (autocommit) and sees the latest commits, as a read-only transaction does on Redis;
//! a lookup is one statement (see `gets_and_follow`) instead of BEGIN, two statements and
//! ROLLBACK. Read-write transactions send BEGIN and COMMIT themselves rather than
//! through sqlx's transactions, so that COMMIT carries the transaction's held-back writes
//! (`batch`) and its change announcement (`feed`) in the same message. Writes are upserts (`ON CONFLICT` / `ON
//! DUPLICATE KEY UPDATE`); `append` concatenates on the server. The dialects differ only
//! in SQL text (built once per engine), the BEGIN statements and error codes; the one copy
//! of the transaction logic runs on either driver through a two-arm match
//! (`with_conn!`). sqlx is async: the engine owns a two-thread tokio runtime and blocks on
//! it from the calling thread, which is never an async task.
//!
//! URLs:
//!
//! ```text
//! postgres://USER[:PASSWORD]@HOST[:5432]/DB[?sslmode=disable|prefer|require&search_path=SCHEMA]
//! mysql://USER[:PASSWORD]@HOST[:3306]/DB
//! mysql://USER[:PASSWORD]@(HOST:PORT)/DB        (JuiceFS / Go driver form; also tcp(...)
//!                                                and unix(/path/to/mysqld.sock))
//! ```
//!
//! Options in the query string, besides the driver's own (`sslmode`, `sslrootcert`, ...):
//! `max_connections=N` (connection pool size, default 10), `table=NAME` (default
//! `nectar_kv`; several volumes can share one database under different tables), and on
//! PostgreSQL `search_path=SCHEMA` (the table lives in the first schema of the list; a
//! missing schema is created, which needs the CREATE privilege on the database). A
//! password missing from the URL is taken from `META_PASSWORD`. Opening the engine
//! connects once, so a wrong address, password or database is reported at once, and
//! creates the schema and table when missing (so `nectar format` needs nothing prepared
//! beyond the database and its user).

mod batch;
mod feed;

use crate::error::{Error, Result};
use crate::feed::{AnnouncedKeys, FeedFollower};
use crate::{Follow, Followed, KvEngine, KvTxn, TxnBody};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError};
use sqlx::pool::{Pool, PoolConnection, PoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, Postgres};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use url::Url;

const DEFAULT_TABLE: &str = "nectar_kv";
const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long opening the engine waits for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt waits for a pooled connection; sqlx keeps retrying a refused
/// connection until then. The timeout is a temporary error, so the `Kv` runner tries
/// again until its retry timeout: this only bounds how far past that deadline an
/// operation can run while the server is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys a one-statement [`KvTxn::gets_and_follow`] asks for.
const MAX_FOLLOW_KEYS: usize = 8;
/// Statement shapes for batch gets: a batch is padded up to the next size (repeating its
/// last key), so a handful of prepared statements serve every batch.
const BATCH_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres://user:password@127.0.0.1:5432/db?sslmode=disable",
            Dialect::MySql => "mysql://user:password@127.0.0.1:3306/db",
        }
    }

    fn placeholder(self, i: usize) -> String {
        match self {
            Dialect::Postgres => format!("${i}"),
            Dialect::MySql => "?".into(),
        }
    }

    fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::MySql => format!("`{}`", ident.replace('`', "``")),
        }
    }

    /// The statement that starts a read-write transaction.
    fn begin(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            // The session's isolation level is set to REPEATABLE READ on connect: it is
            // what makes FOR UPDATE take next-key (gap) locks.
            Dialect::MySql => "START TRANSACTION READ WRITE",
        }
    }
}

/// The SQL of one engine, built once. Arrays of two are indexed by `read_only as usize`.
struct Statements {
    get: [Arc<str>; 2],
    /// One statement per entry of [`BATCH_SIZES`].
    gets: [Vec<Arc<str>>; 2],
    scan: [Arc<str>; 2],
    set: Arc<str>,
    append: Arc<str>,
    clear: Arc<str>,
}

impl Statements {
    fn new(d: Dialect, table: &str) -> Self {
        // Read-write transactions on MySQL lock what they read; see the module doc.
        let lock = match d {
            Dialect::MySql => " FOR UPDATE",
            Dialect::Postgres => "",
        };
        let both = |sql: String| -> [Arc<str>; 2] { [format!("{sql}{lock}").into(), sql.into()] };
        let p = |i| d.placeholder(i);
        let gets = BATCH_SIZES.map(|n| {
            let list: Vec<String> = (1..=n).map(p).collect();
            both(format!(
                "SELECT k, v FROM {table} WHERE k IN ({})",
                list.join(", ")
            ))
        });
        let (set, append) = match d {
            Dialect::Postgres => (
                format!(
                    "INSERT INTO {table} AS t (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
                format!(
                    "INSERT INTO {table} AS t (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = t.v || EXCLUDED.v"
                ),
            ),
            // VALUES(col) is deprecated on MySQL 8 but the alias syntax that replaces it
            // does not exist on MariaDB; VALUES() works on both.
            Dialect::MySql => (
                format!(
                    "INSERT INTO {table} (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
                ),
                format!(
                    "INSERT INTO {table} (k, v) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE v = CONCAT(v, VALUES(v))"
                ),
            ),
        };
        Statements {
            get: both(format!("SELECT k, v FROM {table} WHERE k = {}", p(1))),
            gets: [
                gets.iter().map(|s| s[0].clone()).collect(),
                gets.iter().map(|s| s[1].clone()).collect(),
            ],
            scan: both(format!(
                "SELECT k, v FROM {table} WHERE k >= {} AND k < {} ORDER BY k LIMIT {}",
                p(1),
                p(2),
                p(3)
            )),
            set: set.into(),
            append: append.into(),
            clear: format!("DELETE FROM {table}").into(),
        }
    }
}

/// What a META-URL says, split into the driver's options and Nectar's own.
struct Config {
    dialect: Dialect,
    /// The URL without Nectar's options, for the driver.
    url: Url,
    schema: Option<String>,
    table: String,
    max_connections: u32,
}

impl Config {
    fn parse(scheme: &str, rest: &str) -> Result<Self> {
        let dialect = match scheme {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" => Dialect::MySql,
            other => {
                return Err(Error::Invalid(format!(
                    "{other}:// is not a SQL metadata engine"
                )))
            }
        };
        // Messages never repeat the URL: it may hold a password.
        let invalid = |why: String| {
            Error::Invalid(format!(
                "invalid {scheme}:// META-URL: {why}; expected {}",
                dialect.example()
            ))
        };
        let full = match dialect {
            Dialect::Postgres => format!("postgres://{rest}"),
            Dialect::MySql => format!("mysql://{}", normalize_mysql(rest).map_err(invalid)?),
        };
        let mut url = Url::parse(&full).map_err(|e| invalid(e.to_string()))?;
        let mut schema = None;
        let mut table = DEFAULT_TABLE.to_string();
        let mut max_connections = DEFAULT_MAX_CONNECTIONS;
        let mut keep = Vec::new();
        for (k, v) in url.query_pairs() {
            match &*k {
                "max_connections" | "max-connections" => {
                    max_connections = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "max_connections={v} is not a number from 1 to 10000"
                            ))
                        })?;
                }
                "table" => {
                    if v.is_empty()
                        || v.len() > 63
                        || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(invalid(format!(
                            "table={v}: use 1 to 63 letters, digits or underscores"
                        )));
                    }
                    table = v.into_owned();
                }
                "search_path" if dialect == Dialect::Postgres => {
                    schema = parse_schema(&v);
                }
                _ => keep.push((k.into_owned(), v.into_owned())),
            }
        }
        url.set_query(None);
        if !keep.is_empty() {
            url.query_pairs_mut().extend_pairs(keep);
        }
        if url.host_str().is_none_or(|h| h.is_empty())
            && !url.query_pairs().any(|(k, _)| k == "host" || k == "socket")
        {
            return Err(invalid("no server address".into()));
        }
        if dialect == Dialect::MySql && url.path().trim_start_matches('/').is_empty() {
            return Err(invalid("no database name after the address".into()));
        }
        if url.password().is_none() {
            if let Ok(pw) = std::env::var("META_PASSWORD") {
                if !pw.is_empty() && url.set_password(Some(&pw)).is_err() {
                    return Err(invalid("cannot apply META_PASSWORD to this URL".into()));
                }
            }
        }
        Ok(Config {
            dialect,
            url,
            schema,
            table,
            max_connections,
        })
    }

    /// The table name as written in SQL, schema-qualified when a schema was given.
    fn qualified_table(&self) -> String {
        let t = self.dialect.quote(&self.table);
        match &self.schema {
            Some(s) => format!("{}.{t}", self.dialect.quote(s)),
            None => t,
        }
    }
}

/// The schema a `search_path` value names: its first entry, folded to lower case unless
/// quoted, as PostgreSQL itself reads search_path.
fn parse_schema(v: &str) -> Option<String> {
    let first = v.split(',').next().unwrap_or_default().trim();
    if first.is_empty() || first == "$user" {
        return None;
    }
    match first.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) if !quoted.is_empty() => Some(quoted.to_string()),
        _ => Some(first.to_lowercase()),
    }
}

/// Rewrites the Go driver's address form that JuiceFS uses, `user:pw@(host:port)/db`
/// (also `tcp(host:port)` and `unix(/path)`), into a URL. A plain URL is returned as is.
fn normalize_mysql(rest: &str) -> std::result::Result<String, String> {
    let opener = ["@(", "@tcp(", "@unix("]
        .iter()
        .filter_map(|p| rest.rfind(p).map(|i| (i, p.len())))
        .max();
    let (at, open) = match opener {
        Some((at, len)) => (Some(at), at + len),
        None if rest.starts_with('(') => (None, 1),
        None if rest.starts_with("tcp(") => (None, 4),
        None if rest.starts_with("unix(") => (None, 5),
        None => return Ok(rest.to_string()),
    };
    let net_start = at.map_or(0, |a| a + 1);
    let net = &rest[net_start..open - 1];
    let close = rest[open..]
        .find(')')
        .map(|i| open + i)
        .ok_or("unclosed '(' in the server address")?;
    let addr = &rest[open..close];
    let tail = rest[close + 1..].trim_start_matches('/');
    let (db, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut url = Url::parse("mysql://localhost/").map_err(|e| e.to_string())?;
    let mut extra = Vec::new();
    if net == "unix" {
        extra.push(("socket".to_string(), addr.to_string()));
    } else {
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (
                h,
                Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            ),
            _ => (addr, None),
        };
        if !host.is_empty() {
            url.set_host(Some(host))
                .map_err(|e| format!("bad host {host:?}: {e}"))?;
        }
        url.set_port(port).map_err(|_| "cannot set the port")?;
    }
    if let Some(at) = at {
        let userinfo = &rest[..at];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        url.set_username(user).map_err(|_| "cannot set the user")?;
        url.set_password(password)
            .map_err(|_| "cannot set the password")?;
    }
    url.set_path(db);
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    pairs.extend(extra);
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    Ok(url.as_str().trim_start_matches("mysql://").to_string())
}

/// A connection pool of either driver.
enum SqlPool {
    Pg(Pool<Postgres>),
    My(Pool<MySql>),
}

/// An open server-side transaction of either driver, or, for a read-only transaction,
/// a plain connection whose statements each run on their own (autocommit).
enum Tx {
    Pg(OwnTxn<Postgres>),
    My(OwnTxn<MySql>),
    PgAuto(PoolConnection<Postgres>),
    MyAuto(PoolConnection<MySql>),
}

/// Runs the same code on the connection of either driver: only the SQL text differs
/// between dialects, so the code is written once and compiled for both.
macro_rules! with_conn {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            Tx::Pg(t) => {
                let $c: &mut PgConnection = &mut *t.conn;
                $body
            }
            Tx::My(t) => {
                let $c: &mut MySqlConnection = &mut *t.conn;
                $body
            }
            Tx::PgAuto(t) => {
                let $c: &mut PgConnection = &mut **t;
                $body
            }
            Tx::MyAuto(t) => {
                let $c: &mut MySqlConnection = &mut **t;
                $body
            }
        }
    };
}

#[derive(Clone, Copy)]
enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

macro_rules! bound_query {
    ($sql:expr, $args:expr) => {{
        let mut q = sqlx::query(AssertSqlSafe($sql.clone()));
        for a in $args {
            q = match *a {
                Arg::Bytes(b) => q.bind(b),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }};
}

impl Tx {
    async fn fetch(
        &mut self,
        sql: &Arc<str>,
        args: &[Arg<'_>],
    ) -> sqlx::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        with_conn!(self, c => {
            let rows = bound_query!(sql, args).fetch_all(c).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    async fn exec(&mut self, sql: &Arc<str>, args: &[Arg<'_>]) -> sqlx::Result<u64> {
        with_conn!(self, c => Ok(bound_query!(sql, args).execute(c).await?.rows_affected()))
    }

    /// Runs SQL text without arguments: one simple query, several statements allowed.
    async fn exec_text(&mut self, sql: String) -> sqlx::Result<()> {
        with_conn!(self, c => c.execute(AssertSqlSafe(sql)).await.map(drop))
    }

    /// Commits, sending `before` (the held-back writes and the statement announcing the
    /// commit's changes, see `batch` and `feed`) in the same message as COMMIT, so they
    /// cost no round trip; then runs `after` on its own, ignoring its failure (the
    /// commit stands).
    async fn commit(self, before: Option<String>, after: Option<&str>) -> sqlx::Result<()> {
        let end = before.map_or("COMMIT".into(), |b| b + "; COMMIT");
        match self {
            Tx::Pg(t) => t.end(&end, after).await,
            Tx::My(t) => t.end(&end, after).await,
            Tx::PgAuto(_) | Tx::MyAuto(_) => Ok(()),
        }
    }

    async fn rollback(self) -> sqlx::Result<()> {
        match self {
            Tx::Pg(t) => t.end("ROLLBACK", None).await,
            Tx::My(t) => t.end("ROLLBACK", None).await,
            Tx::PgAuto(_) | Tx::MyAuto(_) => Ok(()),
        }
    }
}

/// A transaction whose BEGIN and COMMIT the engine sends itself (sqlx's own transactions
/// send COMMIT alone), so that COMMIT can carry the commit's announcement. Plain SQL
/// without arguments goes as one text query, several statements in one round trip.
struct OwnTxn<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    /// Until COMMIT or ROLLBACK succeeded: a connection dropped while its transaction may
    /// still be open (a failed end, a panic in the body) is closed, not pooled.
    open: bool,
}

impl<DB: sqlx::Database> OwnTxn<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn begin(mut conn: PoolConnection<DB>, stmt: &'static str) -> sqlx::Result<Self> {
        (&mut *conn).execute(stmt).await?;
        Ok(OwnTxn { conn, open: true })
    }

    async fn end(mut self, sql: &str, after: Option<&str>) -> sqlx::Result<()> {
        if let Err(e) = (&mut *self.conn)
            .execute(AssertSqlSafe(sql.to_owned()))
            .await
        {
            // The server refused a statement (a conflict, most often): the connection is
            // fine once the transaction is rolled back, so it goes back to the pool.
            if e.as_database_error().is_some()
                && (&mut *self.conn).execute("ROLLBACK").await.is_ok()
            {
                self.open = false;
            }
            return Err(e);
        }
        self.open = false;
        if let Some(after) = after {
            if let Err(e) = (&mut *self.conn)
                .execute(AssertSqlSafe(after.to_owned()))
                .await
            {
                tracing::debug!("after a commit: {e}");
            }
        }
        Ok(())
    }
}

impl<DB: sqlx::Database> Drop for OwnTxn<DB> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

pub struct SqlEngine {
    dialect: Dialect,
    pool: SqlPool,
    stmts: Statements,
    /// "PostgreSQL at host:port/db", for messages.
    target: String,
    /// The table as written in SQL.
    table: String,
    /// Statements of [`KvTxn::gets_and_follow`] made so far, by key count and follow
    /// (a lookup is the only user: one or two entries).
    follow_stmts: parking_lot::Mutex<Vec<(usize, Follow, Arc<str>)>>,
    /// Taken out in `drop` to shut it down without blocking (the engine may be dropped
    /// on an async thread, where a blocking shutdown panics).
    rt: Option<Runtime>,
    /// How commits announce their changes and followers hear them (see `feed`).
    feed: Option<feed::Feed>,
    /// This client's id in its announcements.
    origin: u64,
    /// Commits that announced something, counted to prune the change log now and then.
    announcing_commits: std::sync::atomic::AtomicU64,
    /// Which keys commits announce; unset: none.
    announced: std::sync::OnceLock<AnnouncedKeys>,
}

impl SqlEngine {
    /// Opens the engine for `SCHEME://REST`: connects once (so a bad address, login or
    /// database is reported now), creates the schema and table when missing, and keeps
    /// a lazily filled connection pool.
    pub fn open(scheme: &str, rest: &str) -> Result<Self> {
        let cfg = Config::parse(scheme, rest)?;
        let rt = crate::shared::engine_runtime("sql")?;
        // sqlx spawns pool maintenance onto the current runtime.
        let _ctx = rt.enter();
        let invalid = |e: sqlx::Error| {
            Error::Invalid(format!(
                "invalid {scheme}:// META-URL: {e}; expected {}",
                cfg.dialect.example()
            ))
        };
        let table = cfg.qualified_table();
        let feed;
        let (pool, target) = match cfg.dialect {
            Dialect::Postgres => {
                let mut opts = PgConnectOptions::from_url(&cfg.url).map_err(invalid)?;
                if opts.get_application_name().is_none() {
                    opts = opts.application_name("nectar");
                }
                let target = format!(
                    "{} at {}/{}",
                    cfg.dialect.label(),
                    match opts.get_socket() {
                        Some(s) => s.display().to_string(),
                        None => format!("{}:{}", opts.get_host(), opts.get_port()),
                    },
                    opts.get_database().unwrap_or(opts.get_username())
                );
                rt.block_on(async {
                    let mut conn = connect(PgConnection::connect_with(&opts), &target).await?;
                    let res = setup_postgres(&mut conn, &cfg, &table, &target).await;
                    let _ = conn.close().await;
                    res
                })?;
                let pool = PoolOptions::<Postgres>::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // A dead pooled connection fails its first statement, which is a
                    // temporary error the runner retries; pinging each time costs a round
                    // trip per transaction.
                    .test_before_acquire(false)
                    .connect_lazy_with(opts.clone());
                feed = Some(feed::Feed::notify(opts, &table));
                (SqlPool::Pg(pool), target)
            }
            Dialect::MySql => {
                let opts = MySqlConnectOptions::from_url(&cfg.url).map_err(invalid)?;
                let target = format!(
                    "{} at {}/{}",
                    cfg.dialect.label(),
                    match opts.get_socket() {
                        Some(s) => s.display().to_string(),
                        None => format!("{}:{}", opts.get_host(), opts.get_port()),
                    },
                    opts.get_database().unwrap_or_default()
                );
                let log = feed::ChangeLog::new(&cfg);
                feed = rt.block_on(async {
                    let mut conn = connect(MySqlConnection::connect_with(&opts), &target).await?;
                    let res = match setup_mysql(&mut conn, &cfg, &table, &target).await {
                        Ok(()) => log.setup(&mut conn, &target).await,
                        Err(e) => Err(e),
                    };
                    let _ = conn.close().await;
                    res
                })?;
                let pool = PoolOptions::<MySql>::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(false)
                    // Set per session rather than trusting the server's default (often
                    // READ COMMITTED elsewhere): FOR UPDATE locks gaps only in REPEATABLE
                    // READ. This syntax works on MySQL and on MariaDB, which still names
                    // the variable tx_isolation.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                                .await
                                .map(|_| ())
                        })
                    })
                    .connect_lazy_with(opts);
                (SqlPool::My(pool), target)
            }
        };
        Ok(SqlEngine {
            dialect: cfg.dialect,
            stmts: Statements::new(cfg.dialect, &table),
            table,
            follow_stmts: Default::default(),
            pool,
            target,
            rt: Some(rt),
            feed,
            origin: crate::feed::new_origin(),
            announcing_commits: Default::default(),
            announced: std::sync::OnceLock::new(),
        })
    }

    /// The statement of [`KvTxn::gets_and_follow`] for `n` keys, made once.
    fn follow_stmt(&self, n: usize, follow: &Follow) -> Arc<str> {
        let mut made = self.follow_stmts.lock();
        if let Some((.., sql)) = made.iter().find(|(m, f, _)| *m == n && f == follow) {
            return sql.clone();
        }
        let sql: Arc<str> = self.follow_sql(n, follow).into();
        made.push((n, *follow, sql.clone()));
        sql
    }

    /// The statement of [`KvTxn::gets_and_follow`] for `n` keys. Arguments: the keys,
    /// then the prefix and suffix of the followed key, then the last key again. The
    /// followed key's middle is cut from the last key's value by the server, byte by
    /// byte where reversed (PostgreSQL has no bytea reverse).
    fn follow_sql(&self, n: usize, follow: &Follow) -> String {
        let d = self.dialect;
        let p = |i: usize| d.placeholder(i);
        let keys: Vec<String> = (1..=n).map(p).collect();
        let (from, to) = (follow.from, follow.to);
        let middle = match (d, follow.reverse) {
            (Dialect::Postgres, false) => {
                format!("substring(v from {} for {})", from + 1, to - from)
            }
            (Dialect::Postgres, true) => (from + 1..=to)
                .rev()
                .map(|i| format!("substring(v from {i} for 1)"))
                .collect::<Vec<_>>()
                .join(" || "),
            (Dialect::MySql, false) => format!("SUBSTRING(v, {}, {})", from + 1, to - from),
            (Dialect::MySql, true) => format!("REVERSE(SUBSTRING(v, {}, {}))", from + 1, to - from),
        };
        let key = match d {
            Dialect::Postgres => format!("{} || {middle} || {}", p(n + 1), p(n + 2)),
            Dialect::MySql => format!("CONCAT(?, {middle}, ?)"),
        };
        let table = &self.table;
        format!(
            "SELECT k, v FROM {table} WHERE k IN ({}) UNION ALL \
             SELECT k, v FROM {table} WHERE k = \
             (SELECT {key} FROM {table} WHERE k = {} AND length(v) >= {to})",
            keys.join(", "),
            p(n + 3)
        )
    }

    fn rt(&self) -> &Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives until the engine is dropped")
    }

    fn err(&self, e: sqlx::Error) -> Error {
        classify(e, &self.target)
    }

    /// Starts a read-write transaction, or takes a connection for a read-only one: its
    /// statements run on their own, without BEGIN and ROLLBACK (a lookup is two
    /// statements, not four). Each read then sees the latest commits, but several reads
    /// are not one snapshot, which is what read-only transactions promise on every
    /// engine (Redis reads without WATCH alike).
    async fn begin(&self, read_only: bool) -> sqlx::Result<Tx> {
        let stmt = self.dialect.begin();
        Ok(match (&self.pool, read_only) {
            (SqlPool::Pg(p), true) => Tx::PgAuto(p.acquire().await?),
            (SqlPool::My(p), true) => Tx::MyAuto(p.acquire().await?),
            (SqlPool::Pg(p), false) => Tx::Pg(OwnTxn::begin(p.acquire().await?, stmt).await?),
            (SqlPool::My(p), false) => Tx::My(OwnTxn::begin(p.acquire().await?, stmt).await?),
        })
    }
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The first connection, with a time limit and a message that names the server.
async fn connect<C>(
    fut: impl std::future::Future<Output = sqlx::Result<C>>,
    target: &str,
) -> Result<C> {
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(res) => res.map_err(|e| classify(e, target)),
        Err(_) => Err(Error::engine(
            format!(
                "cannot reach {target}: no answer within {} s (is the address right and the server up?)",
                CONNECT_TIMEOUT.as_secs()
            ),
            true,
        )),
    }
}

/// Whether `e` is a server error with one of these codes (SQLSTATE on PostgreSQL, the
/// error number on MySQL).
fn has_code(e: &sqlx::Error, pg: &[&str], my: &[u16]) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    if let Some(p) = db.try_downcast_ref::<PgDatabaseError>() {
        return pg.contains(&p.code());
    }
    if let Some(m) = db.try_downcast_ref::<MySqlDatabaseError>() {
        return my.contains(&m.number());
    }
    false
}

async fn setup_postgres(
    conn: &mut PgConnection,
    cfg: &Config,
    table: &str,
    target: &str,
) -> Result<()> {
    let fail = |e: sqlx::Error, what: &str| classify(e, target).context(what);
    // Look before creating: CREATE ... IF NOT EXISTS checks the CREATE privilege first,
    // so it would fail for a user who may use an existing schema but not create one.
    if let Some(schema) = &cfg.schema {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| fail(e, "cannot look up the schema"))?;
        if !exists {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", cfg.dialect.quote(schema));
            match conn.execute(AssertSqlSafe(sql)).await {
                // A concurrent creator may win the race on the catalog's unique index.
                Err(e) if !has_code(&e, &["42P06", "23505"], &[]) => {
                    return Err(fail(
                        e,
                        &format!(
                        "cannot create schema {schema:?} (from search_path), which does not exist"
                    ),
                    ))
                }
                _ => {}
            }
        }
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| fail(e, "cannot look up the table"))?;
    if !exists {
        let sql =
            format!("CREATE TABLE IF NOT EXISTS {table} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)");
        match conn.execute(AssertSqlSafe(sql)).await {
            Err(e) if !has_code(&e, &["42P07", "23505"], &[]) => {
                return Err(fail(e, &format!("cannot create table {table}")))
            }
            _ => {}
        }
    }
    Ok(())
}

async fn setup_mysql(
    conn: &mut MySqlConnection,
    cfg: &Config,
    table: &str,
    target: &str,
) -> Result<()> {
    let fail = |e: sqlx::Error, what: &str| classify(e, target).context(what);
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&cfg.table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| fail(e, "cannot look up the table"))?;
    if exists == 0 {
        // Binary columns compare bytewise with no collation or trailing-space padding.
        // 1024 bytes of key fit InnoDB's 3072-byte index limit (DYNAMIC rows); keys are
        // at most about 270 bytes. LONGBLOB holds values of any size.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {table} (k VARBINARY(1024) NOT NULL, v LONGBLOB NOT NULL, \
             PRIMARY KEY (k)) ENGINE=InnoDB ROW_FORMAT=DYNAMIC"
        );
        match conn.execute(AssertSqlSafe(sql)).await {
            Err(e) if !has_code(&e, &[], &[1050]) => {
                return Err(fail(e, &format!("cannot create table {table}")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Turns a driver error into a conflict (retry now), a temporary error (retry later) or
/// a permanent one whose message says what to fix.
fn classify(e: sqlx::Error, target: &str) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(p) = db.try_downcast_ref::<PgDatabaseError>() {
                return classify_postgres(p.code(), p.message(), target);
            }
            if let Some(m) = db.try_downcast_ref::<MySqlDatabaseError>() {
                return classify_mysql(m.number(), m.message(), target);
            }
            Error::engine(format!("{target}: {db}"), false)
        }
        sqlx::Error::Io(io) => {
            let hint = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => " (is the server running and listening there?)",
                std::io::ErrorKind::NotFound => " (no such socket or host)",
                _ => "",
            };
            Error::engine(format!("cannot reach {target}: {io}{hint}"), true)
        }
        sqlx::Error::PoolTimedOut => Error::engine(
            format!(
                "no connection to {target} within {} s: the server is unreachable or all max_connections are busy",
                ACQUIRE_TIMEOUT.as_secs()
            ),
            true,
        ),
        sqlx::Error::Tls(t) => Error::engine(
            format!(
                "TLS with {target} failed: {t}; use sslmode=disable for a server without TLS, or fix its certificate"
            ),
            false,
        ),
        // A garbled reply means a broken connection; a fresh one may do.
        sqlx::Error::Protocol(p) => Error::engine(format!("{target}: protocol error: {p}"), true),
        other => Error::engine(format!("{target}: {other}"), false),
    }
}

fn classify_postgres(code: &str, msg: &str, target: &str) -> Error {
    let permanent = |hint: &str| Error::engine(format!("{target}: {msg} [{code}]{hint}"), false);
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Error::Conflict,
        "28P01" | "28000" => permanent(
            "; check the user and password in the META-URL (or META_PASSWORD) and pg_hba.conf",
        ),
        "3D000" => permanent("; create the database first (CREATE DATABASE name OWNER user)"),
        "3F000" => permanent("; create the schema first or fix search_path"),
        "42501" => permanent(
            "; grant the user the privilege (it needs CREATE on the database or schema to create the table, and read/write on the table)",
        ),
        "25006" => permanent("; the server accepts only reads (a standby?): connect to the primary"),
        "53100" => Error::Full(format!("{target}: the database disk is full: {msg}")),
        // The transaction already failed on an earlier statement whose error was
        // swallowed by the body; running it again is the only way out.
        "25P02" => Error::engine(format!("{target}: {msg} [{code}]"), true),
        // connection exceptions, too many connections, out of memory, server shutting
        // down or starting, lock timeouts, statement timeouts
        c if c.starts_with("08")
            || c.starts_with("57P")
            || matches!(c, "53300" | "53200" | "55P03" | "57014" | "40003") =>
        {
            Error::engine(format!("{target}: {msg} [{code}]"), true)
        }
        _ => permanent(""),
    }
}

fn classify_mysql(number: u16, msg: &str, target: &str) -> Error {
    let permanent = |hint: &str| Error::engine(format!("{target}: {msg} [{number}]{hint}"), false);
    match number {
        // deadlock, lock wait timeout, MariaDB's snapshot-isolation write conflict
        1213 | 1205 | 1020 => Error::Conflict,
        1045 => permanent("; check the user and password in the META-URL (or META_PASSWORD)"),
        1049 => permanent("; create the database first (CREATE DATABASE name)"),
        // MySQL answers 1044 rather than 1049 for a database the user may not see.
        1044 => permanent(
            "; the database does not exist or the user has no rights on it: create the database first (CREATE DATABASE name) and GRANT ALL ON name.* to the user",
        ),
        1142 | 1227 => permanent("; grant the user ALL on the database"),
        1290 | 1792 | 1836 => permanent("; the server accepts only reads: connect to the primary"),
        1021 | 1114 => Error::Full(format!("{target}: the table or disk is full: {msg}")),
        // too many connections, server shutting down, connection killed, network
        // errors, query interrupted or timed out
        1040 | 1053 | 1077 | 1152..=1161 | 1203 | 1317 | 1927 | 2006 | 2013 | 3024 => {
            Error::engine(format!("{target}: {msg} [{number}]"), true)
        }
        _ => permanent(""),
    }
}

struct SqlTxn<'e> {
    engine: &'e SqlEngine,
    tx: Tx,
    read_only: bool,
    /// The keys written so far that the commit announces.
    announced: Vec<Vec<u8>>,
    /// Writes not sent yet (see `batch`).
    held: batch::Batch,
}

impl SqlTxn<'_> {
    fn fetch(&mut self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // A read sees the transaction's own writes.
        self.send_held()?;
        let engine = self.engine;
        engine
            .rt()
            .block_on(self.tx.fetch(sql, args))
            .map_err(|e| engine.err(e))
    }

    /// Sends the held-back writes now.
    fn send_held(&mut self) -> Result<()> {
        let engine = self.engine;
        let Some(sql) = self.held.take_sql(engine.dialect, &engine.table) else {
            return Ok(());
        };
        engine
            .rt()
            .block_on(self.tx.exec_text(sql))
            .map_err(|e| engine.err(e))
    }

    /// Holds a set (`None`: a delete) of `key` back to go with the commit.
    fn hold(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        self.held.put(key, value);
        self.note_written(key);
        Ok(())
    }

    /// Writes `key` by statement `sql` now, after what was held (appends, large values).
    fn write_now(&mut self, sql: &Arc<str>, key: &[u8], value: &[u8]) -> Result<()> {
        self.send_held()?;
        self.exec(sql, &[Arg::Bytes(key), Arg::Bytes(value)])?;
        self.note_written(key);
        Ok(())
    }

    /// Remembers a written key when the commit announces it.
    fn note_written(&mut self, key: &[u8]) {
        if self.engine.announced.get().is_some_and(|a| a(key)) {
            self.announced.push(key.to_vec());
        }
    }

    fn exec(&mut self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<u64> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        let engine = self.engine;
        engine
            .rt()
            .block_on(self.tx.exec(sql, args))
            .map_err(|e| engine.err(e))
    }
}

impl KvTxn for SqlTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let st = &self.engine.stmts;
        let rows = self.fetch(&st.get[self.read_only as usize], &[Arg::Bytes(key)])?;
        Ok(rows.into_iter().next().map(|(_, v)| v))
    }

    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let st = &self.engine.stmts;
        let largest = BATCH_SIZES[BATCH_SIZES.len() - 1];
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(largest) {
            let slot = BATCH_SIZES
                .iter()
                .position(|&n| n >= batch.len())
                .unwrap_or(BATCH_SIZES.len() - 1);
            let last = batch.len() - 1;
            let args: Vec<Arg<'_>> = (0..BATCH_SIZES[slot])
                .map(|i| Arg::Bytes(&batch[i.min(last)]))
                .collect();
            found.extend(self.fetch(&st.gets[self.read_only as usize][slot], &args)?);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if begin >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let st = &self.engine.stmts;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.fetch(
            &st.scan[self.read_only as usize],
            &[Arg::Bytes(begin), Arg::Bytes(end), Arg::Int(limit)],
        )
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if value.len() > batch::MAX_BATCHED_VALUE {
            let st = &self.engine.stmts;
            return self.write_now(&st.set, key, value);
        }
        self.hold(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.hold(key, None)
    }

    /// Read-only, the keys and the key their last value leads to are read by one
    /// statement: a UNION of the keys' rows and the row whose key the server builds
    /// from the last value (a lookup: the directory, the entry and the inode's
    /// attributes, one round trip instead of two). Read-write transactions read in two
    /// steps, which lock what they read as any read does (see the module doc).
    fn gets_and_follow(&mut self, keys: &[Vec<u8>], follow: &Follow) -> Result<Followed> {
        if !self.read_only || keys.is_empty() || keys.len() > MAX_FOLLOW_KEYS {
            return crate::follow_in_two_reads(self, keys, follow);
        }
        let sql = self.engine.follow_stmt(keys.len(), follow);
        let last = &keys[keys.len() - 1];
        let mut args: Vec<Arg<'_>> = keys.iter().map(|k| Arg::Bytes(k)).collect();
        args.extend([
            Arg::Bytes(follow.prefix),
            Arg::Bytes(follow.suffix),
            Arg::Bytes(last),
        ]);
        let found: HashMap<Vec<u8>, Vec<u8>> = self.fetch(&sql, &args)?.into_iter().collect();
        let values: Vec<Option<Vec<u8>>> = keys.iter().map(|k| found.get(k).cloned()).collect();
        let followed = values
            .last()
            .and_then(|v| follow.key(v.as_deref()?))
            .map(|k| {
                let v = found.get(&k).cloned();
                (k, v)
            });
        Ok((values, followed))
    }

    /// One statement on the server instead of reading and rewriting the whole value.
    /// The upsert locks the row (and reads its latest version), so concurrent appends
    /// queue on MySQL and fail one side with 40001 on PostgreSQL: none is lost.
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let st = &self.engine.stmts;
        self.write_now(&st.append, key, value)
    }
}

impl KvEngine for SqlEngine {
    fn name(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        let rt = self.rt();
        // Dropping a pooled connection spawns its return to the pool, which needs the
        // runtime as the current context; the caller's thread is not one of ours.
        let _ctx = rt.enter();
        let tx = rt
            .block_on(self.begin(read_only))
            .map_err(|e| self.err(e))?;
        let mut txn = SqlTxn {
            engine: self,
            tx,
            read_only,
            announced: Vec::new(),
            held: Default::default(),
        };
        match body(&mut txn) {
            // A read-only transaction has nothing to commit (see `begin`).
            Ok(()) if read_only => Ok(()),
            Ok(()) => {
                let (announce, after) = self.announcement(&txn.announced);
                let held = txn.held.take_sql(self.dialect, &self.table);
                let before = match (held, announce) {
                    (Some(h), Some(a)) => Some(format!("{h}; {a}")),
                    (h, a) => h.or(a),
                };
                rt.block_on(txn.tx.commit(before, after))
                    .map_err(|e| self.err(e))
            }
            Err(e) => {
                // The rollback's own failure does not matter: a broken connection is
                // dropped by the pool, and the body's error is the one to report.
                let _ = rt.block_on(txn.tx.rollback());
                Err(e)
            }
        }
    }

    fn reset(&self) -> Result<()> {
        let rt = self.rt();
        let _ctx = rt.enter();
        rt.block_on(async {
            let mut tx = self.begin(false).await?;
            tx.exec(&self.stmts.clear, &[]).await?;
            tx.commit(None, None).await
        })
        .map_err(|e| self.err(e))
    }

    fn announce_changes(&self, announced: AnnouncedKeys) -> bool {
        if self.feed.is_none() {
            return false;
        }
        let _ = self.announced.set(announced);
        true
    }

    fn follow_changes(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        match &self.feed {
            Some(feed) => self.follow(feed, follower),
            None => crate::feed::unsupported(self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Config> {
        let (scheme, rest) = url.split_once("://").expect("test URL has a scheme");
        Config::parse(scheme, rest)
    }

    #[test]
    fn postgres_urls() {
        let c = parse("postgres://u:p%40ss@db.example:5433/vol?sslmode=disable&search_path=Meta,public&max_connections=3&table=t1").unwrap();
        assert_eq!(c.dialect, Dialect::Postgres);
        assert_eq!(c.schema.as_deref(), Some("meta"));
        assert_eq!(c.table, "t1");
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.qualified_table(), "\"meta\".\"t1\"");
        assert_eq!(c.url.query(), Some("sslmode=disable"));
        let o = PgConnectOptions::from_url(&c.url).unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("db.example", 5433));
        assert_eq!(o.get_database(), Some("vol"));
        let c = parse("postgresql://u@h/vol?search_path=%22MixedCase%22").unwrap();
        assert_eq!(c.schema.as_deref(), Some("MixedCase"));
        assert_eq!(c.qualified_table(), "\"MixedCase\".\"nectar_kv\"");
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        for bad in [
            "postgres://u@h/db?max_connections=0",
            "postgres://u@h/db?max_connections=x",
            "postgres://u@h/db?table=a;drop",
            "postgres://u:secret@/db",
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(e.contains("expected postgres://"), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn mysql_urls() {
        assert_eq!(
            normalize_mysql("root:pw@(127.0.0.1:3306)/juicefs").unwrap(),
            "root:pw@127.0.0.1:3306/juicefs"
        );
        assert_eq!(
            normalize_mysql("u:p@ss:w/rd@tcp(db:3307)/vol?charset=utf8mb4").unwrap(),
            "u:p%40ss%3Aw%2Frd@db:3307/vol?charset=utf8mb4"
        );
        assert_eq!(
            normalize_mysql("u@unix(/run/mysqld/mysqld.sock)/vol").unwrap(),
            "u@localhost/vol?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        );
        assert_eq!(normalize_mysql("(db)/vol").unwrap(), "db/vol");
        assert_eq!(normalize_mysql("u:p@h:1/v").unwrap(), "u:p@h:1/v");
        assert!(normalize_mysql("u@(h:1/v").is_err());
        let c = parse("mysql://u:p@ss:w/rd@tcp(db:3307)/vol?max_connections=7").unwrap();
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.url.password(), Some("p%40ss%3Aw%2Frd"));
        let o = MySqlConnectOptions::from_url(&c.url).unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("db", 3307));
        assert_eq!(o.get_username(), "u");
        assert_eq!(o.get_database(), Some("vol"));
        assert_eq!(c.qualified_table(), "`nectar_kv`");
        let e = parse("mysql://u:secret@(h:3306)/")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no database") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn server_down_is_reported_clearly() {
        for url in [
            "postgres://nectar:x@127.0.0.1:1/nectar?sslmode=disable",
            "mysql://nectar:x@127.0.0.1:1/nectar",
        ] {
            let (scheme, rest) = url.split_once("://").unwrap();
            let e = SqlEngine::open(scheme, rest).err().unwrap();
            let msg = e.to_string();
            assert!(e.is_temporary(), "{msg}");
            assert!(
                msg.contains("cannot reach") && msg.contains("127.0.0.1:1"),
                "{msg}"
            );
            assert!(msg.contains("is the server running"), "{msg}");
        }
    }

    /// The servers started by scripts/start-postgres.sh and scripts/start-mariadb.sh.
    fn server_urls() -> Vec<String> {
        ["NECTAR_TEST_POSTGRES_URL", "NECTAR_TEST_MYSQL_URL"]
            .iter()
            .filter_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
            .collect()
    }

    /// `url` with a query option added.
    fn with_option(url: &str, opt: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{opt}")
    }

    fn open(url: &str) -> SqlEngine {
        let (scheme, rest) = url.split_once("://").unwrap();
        SqlEngine::open(scheme, rest).unwrap()
    }

    #[test]
    fn bad_login_and_database() {
        for url in server_urls() {
            let mut u = Url::parse(&url).unwrap();
            u.set_password(Some("wrong-password")).unwrap();
            let (scheme, rest) = u.as_str().split_once("://").unwrap();
            let e = SqlEngine::open(scheme, rest).err().unwrap();
            let msg = e.to_string();
            assert!(!e.is_temporary(), "{msg}");
            assert!(msg.contains("check the user and password"), "{msg}");
            assert!(!msg.contains("wrong-password"), "{msg}");

            let mut u = Url::parse(&url).unwrap();
            u.set_path("/nectar_no_such_db");
            let (scheme, rest) = u.as_str().split_once("://").unwrap();
            let e = SqlEngine::open(scheme, rest).err().unwrap();
            let msg = e.to_string();
            assert!(!e.is_temporary(), "{msg}");
            assert!(msg.contains("create the database first"), "{msg}");
        }
    }

    #[test]
    fn a_value_is_followed_to_its_key_in_one_statement() {
        for url in server_urls() {
            let kv = crate::Kv::new(Box::new(open(&with_option(
                &url,
                "table=nectar_unit_follow",
            ))));
            kv.reset().unwrap();
            kv.txn(|tx| {
                tx.set(b"Da", b"x87")?;
                tx.set(b"Dplain", b"x78")?;
                tx.set(b"Dshort", b"x")?;
                tx.set(b"Dlost", b"x99")?;
                tx.set(b"parent", b"dir")?;
                tx.set(b"A78/attr", b"attr of 78")
            })
            .unwrap();
            let follow = |reverse| Follow {
                prefix: b"A",
                from: 1,
                to: 3,
                reverse,
                suffix: b"/attr",
            };
            let asked = |name: &[u8]| vec![b"parent".to_vec(), [b"D", name].concat()];
            for read_only in [true, false] {
                let run = |name: &[u8], reverse: bool| {
                    let body =
                        |tx: &mut dyn KvTxn| tx.gets_and_follow(&asked(name), &follow(reverse));
                    if read_only {
                        kv.read(body).unwrap()
                    } else {
                        kv.txn(body).unwrap()
                    }
                };
                let (values, followed) = run(b"a", true);
                assert_eq!(
                    values,
                    vec![Some(b"dir".to_vec()), Some(b"x87".to_vec())],
                    "{url}"
                );
                assert_eq!(
                    followed,
                    Some((b"A78/attr".to_vec(), Some(b"attr of 78".to_vec())))
                );
                assert_eq!(
                    run(b"plain", false).1,
                    Some((b"A78/attr".to_vec(), Some(b"attr of 78".to_vec())))
                );
                assert_eq!(run(b"lost", true).1, Some((b"A99/attr".to_vec(), None)));
                assert_eq!(run(b"short", true).1, None, "too short to follow");
                assert_eq!(
                    run(b"none", true),
                    (vec![Some(b"dir".to_vec()), None], None)
                );
            }
            kv.reset().unwrap();
        }
    }

    #[test]
    fn binary_keys_order_and_large_values() {
        for url in server_urls() {
            let e = open(&with_option(&url, "table=nectar_unit_kv"));
            e.reset().unwrap();
            let kv = crate::Kv::new(Box::new(e));
            let keys: Vec<Vec<u8>> = vec![
                b"a".to_vec(),
                b"a\0".to_vec(),
                b"a ".to_vec(),
                b"a  ".to_vec(),
                b"a\x7f".to_vec(),
                b"a\x80".to_vec(),
                b"a\xff".to_vec(),
                b"a\xff\xff".to_vec(),
                b"b".to_vec(),
                vec![0xff; 300],
            ];
            let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
            kv.txn(|tx| {
                // Insert in reverse to show that order comes from the index.
                for (i, k) in keys.iter().enumerate().rev() {
                    tx.set(k, &[i as u8])?;
                }
                tx.set(b"big", &big)?;
                // A transaction reads its own writes, in scans too.
                assert_eq!(tx.get(b"a ")?, Some(vec![2]));
                assert_eq!(tx.scan(b"a", b"b", 100)?.len(), 8);
                Ok(())
            })
            .unwrap();
            let all = kv.read(|tx| tx.scan(b"", &[0xff; 301], 1000)).unwrap();
            let got: Vec<Vec<u8>> = all
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k != b"big")
                .collect();
            assert_eq!(got, keys, "{url}");
            assert_eq!(
                kv.read(|tx| tx.get(b"big")).unwrap().as_deref(),
                Some(&big[..])
            );
            // Limits, resume points, empty and reversed ranges.
            let page = kv.read(|tx| tx.scan(b"a", b"b", 3)).unwrap();
            assert_eq!(page.len(), 3);
            let mut resume = page[2].0.clone();
            resume.push(0);
            let rest = kv.read(|tx| tx.scan(&resume, b"b", 100)).unwrap();
            assert_eq!(rest.len(), 5);
            assert!(kv.read(|tx| tx.scan(b"b", b"a", 10)).unwrap().is_empty());
            assert!(kv.read(|tx| tx.scan(b"a", b"b", 0)).unwrap().is_empty());
            // Batch gets: missing keys, duplicates, and more than one batch.
            let mut ask: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
            ask.extend(keys.iter().cloned());
            ask.push(b"a".to_vec());
            let vals = kv.read(|tx| tx.gets(&ask)).unwrap();
            assert!(vals[..300].iter().all(Option::is_none));
            assert_eq!(vals[300], Some(vec![0]));
            assert_eq!(vals[ask.len() - 1], Some(vec![0]));
            // Held writes, appends and large values keep their order in one transaction,
            // and its reads see them.
            let large = vec![7u8; batch::MAX_BATCHED_VALUE + 1];
            kv.txn(|tx| {
                tx.set(b"ord", b"a")?;
                tx.append(b"ord", b"b")?;
                tx.set(b"gone2", b"x")?;
                tx.delete(b"gone2")?;
                tx.set(b"large", b"small first")?;
                tx.set(b"large", &large)?;
                tx.delete(b"ord2")?;
                tx.set(b"ord2", b"back")?;
                assert_eq!(tx.get(b"ord")?, Some(b"ab".to_vec()));
                tx.append(b"ord", b"c")?;
                tx.set(b"late", b"after the read")
            })
            .unwrap();
            let read = kv
                .read(|tx| {
                    tx.gets(&[
                        b"ord".to_vec(),
                        b"gone2".to_vec(),
                        b"large".to_vec(),
                        b"ord2".to_vec(),
                        b"late".to_vec(),
                    ])
                })
                .unwrap();
            assert_eq!(
                read,
                [
                    Some(b"abc".to_vec()),
                    None,
                    Some(large),
                    Some(b"back".to_vec()),
                    Some(b"after the read".to_vec())
                ],
                "{url}"
            );
            // Append creates, then extends; counters.
            kv.txn(|tx| tx.append(b"app", b"xy")).unwrap();
            kv.txn(|tx| tx.append(b"app", b"\0z")).unwrap();
            assert_eq!(
                kv.read(|tx| tx.get(b"app")).unwrap(),
                Some(b"xy\0z".to_vec())
            );
            // A failed body leaves nothing behind.
            let r: Result<()> = kv.txn(|tx| {
                tx.set(b"gone", b"1")?;
                Err(Error::Invalid("exists".into()))
            });
            assert!(r.is_err());
            assert_eq!(kv.read(|tx| tx.get(b"gone")).unwrap(), None);
            assert!(kv.read(|tx| tx.set(b"x", b"y")).is_err());
            kv.reset().unwrap();
            assert!(kv
                .read(|tx| tx.scan(b"", &[0xff; 301], 10))
                .unwrap()
                .is_empty());
        }
    }

    #[test]
    fn concurrent_read_modify_write_is_exact() {
        for url in server_urls() {
            let e = open(&with_option(&url, "table=nectar_unit_rmw"));
            e.reset().unwrap();
            let kv = Arc::new(crate::Kv::new(Box::new(e)));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let kv = kv.clone();
                    std::thread::spawn(move || {
                        for i in 0..30 {
                            kv.txn(|tx| {
                                // Read-modify-write of a value and an insert whose
                                // existence is checked first: neither may be lost.
                                let n = tx.incr_by(b"n", 1)?;
                                let k = format!("k{t}-{i}");
                                if tx.get(k.as_bytes())?.is_some() {
                                    return Err(Error::Invalid("exists".into()));
                                }
                                tx.set(k.as_bytes(), &n.to_le_bytes())?;
                                tx.append(b"log", &[t as u8])
                            })
                            .unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let (n, log, keys) = kv
                .read(|tx| Ok((tx.get(b"n")?, tx.get(b"log")?, tx.scan(b"k", b"l", 1000)?)))
                .unwrap();
            assert_eq!(n, Some(120i64.to_le_bytes().to_vec()), "{url}");
            assert_eq!(log.map(|l| l.len()), Some(120));
            assert_eq!(keys.len(), 120);
            let mut seen: Vec<i64> = keys
                .iter()
                .map(|(_, v)| crate::parse_counter(v).unwrap())
                .collect();
            seen.sort();
            assert_eq!(
                seen,
                (1..=120).collect::<Vec<_>>(),
                "each increment seen once"
            );
        }
    }

    /// Kills every other connection to the test database: the follower's among them.
    fn kill_other_connections(url: &str) -> i64 {
        let admin = open(url);
        admin
            .rt()
            .block_on(async {
                match &admin.pool {
                    SqlPool::Pg(pool) => {
                        sqlx::query_scalar::<_, i64>(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        )
                        .fetch_one(pool)
                        .await
                    }
                    SqlPool::My(pool) => {
                        let mut conn = pool.acquire().await?;
                        let ids: Vec<i64> = sqlx::query_scalar(
                            "SELECT id FROM information_schema.processlist \
                             WHERE db = DATABASE() AND id <> CONNECTION_ID()",
                        )
                        .fetch_all(&mut *conn)
                        .await?;
                        for id in &ids {
                            // A connection may end meanwhile.
                            let _ = conn.execute(AssertSqlSafe(format!("KILL {id}"))).await;
                        }
                        Ok(ids.len() as i64)
                    }
                }
            })
            .unwrap()
    }

    #[test]
    fn commits_announce_their_keys_to_other_clients_and_a_cut_is_reported() {
        for url in server_urls() {
            let url = with_option(&url, "table=nectar_unit_feed");
            let writer = open(&url);
            writer.reset().unwrap();
            assert!(writer.announce_changes(|k| k.starts_with(b"A")));
            let follower = open(&url);
            assert!(follower.announce_changes(|k| k.starts_with(b"A")));
            let heard = crate::feed::heard::Heard::follow(std::sync::Arc::new(follower));
            assert_eq!(heard.next(), "live", "{url}");
            let commit = |writer: &SqlEngine, body: &mut TxnBody<'_>| writer.attempt(body, false);
            commit(&writer, &mut |tx| {
                tx.set(b"A1", b"x")?;
                tx.set(b"B1", b"not announced")?;
                tx.append(b"A2", b"y")?;
                tx.delete(b"A3")
            })
            .unwrap();
            assert_eq!(heard.next(), "changed A1,A2,A3");
            // Nothing is announced for a transaction that rolls back, or that changes no
            // announced key: the next event is the one after them.
            let failed = commit(&writer, &mut |tx| {
                tx.set(b"A4", b"x")?;
                Err(Error::Invalid("abandoned".into()))
            });
            assert!(failed.is_err());
            commit(&writer, &mut |tx| tx.set(b"B2", b"y")).unwrap();
            // A commit too large for one announcement says "everything".
            commit(&writer, &mut |tx| {
                for i in 0..300u32 {
                    tx.set(format!("A-many-{i:020}").as_bytes(), b"z")?;
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(heard.next(), "everything");
            // Cut the follower's connection: it says so, then follows again.
            assert!(kill_other_connections(&url) >= 1);
            assert_eq!(heard.next(), "lost", "{url}");
            assert_eq!(heard.next(), "live");
            let writer = open(&url);
            assert!(writer.announce_changes(|k| k.starts_with(b"A")));
            commit(&writer, &mut |tx| tx.set(b"A5", b"z")).unwrap();
            assert_eq!(heard.next(), "changed A5");
            writer.reset().unwrap();
        }
    }

    #[test]
    fn mysql_prunes_its_change_log() {
        let Some(url) = server_urls().into_iter().find(|u| u.starts_with("mysql")) else {
            eprintln!("skipped: NECTAR_TEST_MYSQL_URL is not set");
            return;
        };
        let e = open(&with_option(&url, "table=nectar_unit_prune"));
        assert!(e.announce_changes(|_| true));
        let sql = |q: String| {
            e.rt()
                .block_on(async {
                    let SqlPool::My(pool) = &e.pool else {
                        unreachable!()
                    };
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(q))
                        .fetch_optional(pool)
                        .await
                })
                .unwrap()
        };
        // An old row, then one far enough ahead that the next insert prunes the old.
        let log = "nectar_unit_prune_changes";
        let base = sql(format!("SELECT COALESCE(MAX(id), 0) FROM {log}")).unwrap();
        let (old, recent) = (base + 1, base + feed::LOG_KEPT + 10);
        for id in [old, recent] {
            sql(format!(
                "INSERT INTO {log} (id, payload) VALUES ({id}, X'00')"
            ));
        }
        // The next commit is the one that prunes.
        let done = e
            .announcing_commits
            .load(std::sync::atomic::Ordering::Relaxed);
        e.announcing_commits.store(
            done + feed::PRUNE_EVERY - 1 - done % feed::PRUNE_EVERY,
            std::sync::atomic::Ordering::Relaxed,
        );
        e.attempt(&mut |tx| tx.set(b"k", b"v"), false).unwrap();
        let exists = |id: i64| sql(format!("SELECT id FROM {log} WHERE id = {id}")).is_some();
        assert!(!exists(old), "rows far behind the last are pruned");
        assert!(exists(recent));
        assert!(exists(recent + 1), "the commit's own row");
    }
}
