//! `redis://` and `rediss://` (TLS): metadata in Redis, standalone, behind Sentinel, or in
//! a Redis Cluster.
//!
//! Design. Every key of the schema is one Redis string, its name the volume's prefix
//! followed by the key's bytes. A transaction runs on one blocking connection taken
//! from a pool (`pool.rs`), by the calling thread itself, so nothing else ever shares it
//! while it holds a `WATCH`: each key is
//! `WATCH`ed in the same round trip that reads it (and read once: later reads of the
//! attempt come from a cache), writes are buffered in the attempt and overlaid on its own
//! reads and scans, and the commit is one `MULTI` … `EXEC` holding all of them. If
//! anything watched changed since it was read, Redis refuses the `EXEC`, and the attempt
//! returns [`Error::Conflict`] for the `Kv` runner to retry; an attempt that read but wrote
//! nothing still sends an empty `MULTI`/`EXEC`, which validates its reads. Read-only
//! transactions skip `WATCH` and `MULTI` (each read is current, the whole is not a
//! snapshot). Scans never walk the keyspace: every key that some scan may visit is also a
//! member of an ordered index, one sorted set per *scan domain* (all scores 0, so members
//! sort by their bytes and `ZRANGEBYLEX` answers a range in O(log N + M)), maintained in
//! the same `MULTI` as the write itself. A scan `WATCH`es its domain's sorted set, so a key
//! inserted into or removed from a listed range makes the scanning transaction conflict.
//!
//! Scan domains come from the caller's [`KeyLayout`] (the file system's table is in
//! `nectar-meta`'s `keys.rs`): a key's domain is a prefix decided by its first bytes, and
//! keys of no domain are never scanned, so never indexed.
//!
//! A key shorter than its domain is not indexed. A scan `[begin, end)` is served from one
//! index when `begin` has a domain `D` and `end <= prefix_end(D)`, i.e. when every key of
//! the range starts with `D`; this holds for every scan the metadata layer makes. Any
//! other range (a whole inode `A<ino>`, everything for a dump) falls back to `SCAN MATCH`
//! over the volume's keys: correct results, time proportional to the volume, and weaker
//! isolation (it watches the keys and indexes it finds, but not a key of an unindexed kind
//! or a new domain created inside the range meanwhile).
//!
//! Packed domains. The keys of a domain the layout marks as packed (a directory's
//! entries) are not keys of their own but fields of one hash, PREFIX + 0xFE + D, field =
//! the key bytes after `D`: a field costs about 90 bytes where a key plus its index
//! member cost about 230. Such a domain has no sorted set; a scan reads the whole hash
//! (`HGETALL`), sorted here, so a caller pages through it by reading it once
//! ([`KvEngine::packs_domains`]). A read-write transaction that reads one field
//! `WATCH`es the whole hash, so it conflicts with any write to the domain (JuiceFS's
//! Redis engine watches a directory's hash the same way). Volumes written before packing
//! are converted when a client of this version opens them (see
//! [`RedisEngine::pack_old_domains`]).
//!
//! Key mapping. Data key = PREFIX + key; the sorted set of domain `D` = PREFIX + 0xFF + D;
//! the hash of packed domain `D` = PREFIX + 0xFE + D (no key of the schema starts with
//! 0xFE or 0xFF, and the engine refuses such keys); members are the key bytes after `D`. PREFIX is empty by default: the URL's database number keeps
//! volumes apart, so a volume owns its database. `?prefix=STR` puts several volumes in one
//! database. In a Redis Cluster there is only database 0, and all keys of a volume must
//! live in one hash slot for `MULTI` and `WATCH` to work, so PREFIX is the hash tag
//! `{DB}` (or `{STR}` from `?prefix=`): the engine finds the master owning that slot with
//! `CLUSTER SLOTS` and talks to it like a standalone server. Behind Sentinel it asks the
//! sentinels for the master's address (and checks its `ROLE`), and a background task asks
//! them again every second so a failover is followed within about a second. A `MOVED`,
//! `ASK`, `READONLY`, `NOREPLICAS` or lost connection makes it look the master up again
//! before the next attempt (the error itself is temporary, so the attempt is retried).
//! Redis replicates asynchronously: a write the old master accepts after its replica was
//! promoted is lost, so masters behind Sentinel should run with `min-replicas-to-write 1`
//! (as scripts/start-redis.sh does), which makes the old master refuse it instead.
//! `reset()` deletes PREFIX* with `SCAN MATCH` — the one place where a keyspace scan is
//! fine.
//!
//! Memory: an empty file costs about 230 bytes of Redis memory (its attribute string and
//! its entry's field in the directory's hash), as in JuiceFS.
//!
//! URL: `redis[s]://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/DB][?OPTIONS]`.
//! One host: a standalone server or any node of a cluster (detected with `INFO cluster`).
//! Several hosts: cluster seed nodes, or sentinels with `?sentinel=MASTER_NAME`. The port
//! defaults to 6379 (26379 for sentinels). A user without a password takes it from
//! `META_PASSWORD`; sentinels themselves authenticate with `SENTINEL_PASSWORD` when set.
//! Options: `sentinel=NAME`, `prefix=STR`, `pool-size=N` (connections, default 32), and
//! for `rediss://`: `tls-ca-cert-file=PEM`, `tls-cert-file=PEM`, `tls-key-file=PEM`,
//! `insecure-skip-verify=true`.
//!
//! Transactions use blocking connections from the calling thread, which is never an
//! async task (see docs/ARCHITECTURE.md). What runs in the background (the sentinel
//! watch, the change feed) and the discovery of the master are async, on a small tokio
//! runtime the engine owns. Connections time out after 5 s and commands after 10 s, so a
//! dead server becomes a temporary error.

use crate::error::{Error, Result};
use crate::{
    prefix_end, AnnouncedKeys, FeedFollower, Follow, Followed, KeyLayout, KvEngine, KvTxn, Scanned,
    TxnBody,
};

mod feed;
mod pool;
use parking_lot::Mutex;
use pool::{Pool, PoolError, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, Value,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_SENTINEL_PORT: u16 = 26379;
const DEFAULT_POOL_SIZE: usize = 32;

/// First byte of every index key after the prefix; no schema key starts with it.
const INDEX_TAG: u8 = 0xFF;
/// First byte of every packed domain's hash after the prefix; no schema key starts
/// with it.
const PACKED_TAG: u8 = 0xFE;
/// The domain, after [`INDEX_TAG`], of the key recording that this volume's packed
/// domains are packed (no schema domain starts with 0xFF).
const LAYOUT_MARK: &[u8] = b"\xFFlayout";
/// Its value.
const PACKED_LAYOUT: &[u8] = b"packed";

/// Keys per command when a commit or a reset sends many (keeps each command moderate).
const BATCH: usize = 512;

/// Read-only scans of several domains in one round trip: KEYS are the domains'
/// indexes, ARGV five arguments per range: min, max, limit (negative: none), data-key
/// prefix (PREFIX + domain), and the domain's implicit member when the range holds it
/// (else empty), read first. Returns, per range, the members of the range and the
/// values of their keys as a flat list `member, value, member, value, …` (a value is
/// nil when its key vanished, which cannot happen inside the script, but costs nothing
/// to allow). One range is a scan; many are what a dump of a million files needs (most
/// ranges are empty: the xattrs of a file). MGET goes in slices because Lua's `unpack`
/// has a stack limit.
const SCAN_SCRIPT: &str = r#"
local all = {}
for r = 1, #KEYS do
  local a = (r - 1) * 5
  local m
  if tonumber(ARGV[a + 3]) < 0 then
    m = redis.call('ZRANGEBYLEX', KEYS[r], ARGV[a + 1], ARGV[a + 2])
  else
    m = redis.call('ZRANGEBYLEX', KEYS[r], ARGV[a + 1], ARGV[a + 2], 'LIMIT', 0, ARGV[a + 3])
  end
  local out = {}
  if ARGV[a + 5] ~= '' then
    local v = redis.call('GET', ARGV[a + 4] .. ARGV[a + 5])
    if v then
      out[1] = ARGV[a + 5]
      out[2] = v
    end
  end
  for i = 1, #m, 500 do
    local ks = {}
    for j = i, math.min(i + 499, #m) do ks[#ks + 1] = ARGV[a + 4] .. m[j] end
    local vs = redis.call('MGET', unpack(ks))
    for j = 1, #vs do
      out[#out + 1] = m[i + j - 1]
      out[#out + 1] = vs[j]
    end
  end
  all[r] = out
end
return all
"#;

/// Ranges per call of [`SCAN_SCRIPT`].
const MULTI_SCAN_RANGES: usize = 200;

/// Read-only [`KvTxn::gets_and_follow`] in one round trip: the values of KEYS (`GET`, or
/// `HGET` of the field that `ARGV[5 + i]` names after its first byte when it is not
/// empty: a packed key), then, when the last value holds bytes `from..to` (1-based
/// `ARGV[2]..ARGV[3]`), GET of the key made of ARGV[1] (the data-key prefix and the
/// follow prefix), those bytes (reversed when ARGV[4] is 1) and ARGV[5]. Returns the
/// values, plus the followed value when a key was made (a reply one longer than KEYS;
/// Lua's false becomes nil).
const FOLLOW_SCRIPT: &str = r#"
local vals = {}
for i = 1, #KEYS do
  local field = ARGV[5 + i]
  if field == '' then
    vals[i] = redis.call('GET', KEYS[i])
  else
    vals[i] = redis.call('HGET', KEYS[i], string.sub(field, 2))
  end
end
local v = vals[#KEYS]
if v and #v >= tonumber(ARGV[3]) then
  local part = string.sub(v, tonumber(ARGV[2]), tonumber(ARGV[3]))
  if ARGV[4] == '1' then part = string.reverse(part) end
  vals[#KEYS + 1] = redis.call('GET', ARGV[1] .. part .. ARGV[5])
end
return vals
"#;

// ---------------------------------------------------------------------------------------
// Scan domains
// ---------------------------------------------------------------------------------------

/// The domain (index) a key belongs to, if any.
fn domain_of<'k>(layout: &dyn KeyLayout, key: &'k [u8]) -> Option<&'k [u8]> {
    let len = layout.domain_len(key)?;
    key.get(..len)
}

/// The key of domain `d`'s implicit member when it lies in `[begin, end)`.
fn implicit_key(layout: &dyn KeyLayout, d: &[u8], begin: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    let key = [d, layout.implicit_member(d)?].concat();
    (begin <= key.as_slice() && key.as_slice() < end).then_some(key)
}

/// The one domain holding every key of `[begin, end)`, if there is one.
fn scan_domain<'a>(layout: &dyn KeyLayout, begin: &'a [u8], end: &[u8]) -> Option<&'a [u8]> {
    let d = domain_of(layout, begin)?;
    (end <= prefix_end(d).as_slice()).then_some(d)
}

/// The pairs the scan script returned for domain `d` (members and values, flat), at
/// most `limit`.
fn script_scanned(d: &[u8], flat: Vec<Value>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(m), Some(v)) = (it.next(), it.next()) {
        if let (Value::BulkString(m), Value::BulkString(v)) = (m, v) {
            out.push(([d, m.as_slice()].concat(), v));
        }
    }
    // An implicit member an older index also lists comes twice, side by side.
    out.dedup_by(|a, b| a.0 == b.0);
    out.truncate(limit);
    out
}

/// `ZRANGEBYLEX` bounds of `[begin, end)` inside domain `d` (which holds the whole range).
fn lex_bounds(d: &[u8], begin: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut min = b"[".to_vec();
    min.extend_from_slice(&begin[d.len()..]);
    let max = if end >= prefix_end(d).as_slice() {
        b"+".to_vec()
    } else {
        // end lies inside the domain, so it starts with d.
        let mut m = b"(".to_vec();
        m.extend_from_slice(&end[d.len()..]);
        m
    };
    (min, max)
}

/// The longest common prefix of two byte strings.
fn common_prefix<'a>(a: &'a [u8], b: &[u8]) -> &'a [u8] {
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    &a[..n]
}

/// A `SCAN MATCH` pattern matching exactly the keys that start with `prefix`.
fn glob_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 1);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p.push(b'*');
    p
}

/// Every key matching `pattern`, in batches as `SCAN MATCH` walks the keyspace: `each`
/// gets a batch and may run commands on the connection itself (a key may come twice,
/// and one created meanwhile may be missed).
fn scan_match(
    conn: &mut redis::Connection,
    pattern: &[u8],
    mut each: impl FnMut(&mut redis::Connection, Vec<Vec<u8>>) -> RedisResult<()>,
) -> RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        each(conn, batch)?;
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// URL
// ---------------------------------------------------------------------------------------

/// The parts of a Redis META-URL.
#[derive(Debug, PartialEq)]
struct RedisUrl {
    tls: bool,
    hosts: Vec<(String, u16)>,
    user: Option<String>,
    password: Option<String>,
    /// The path without slashes: a database number, or a hash tag in a cluster.
    db: String,
    sentinel: Option<String>,
    prefix: Option<Vec<u8>>,
    pool_size: usize,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    insecure: bool,
}

fn invalid(url: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "invalid Redis META-URL {}: {msg}; expected redis[s]://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/DB][?sentinel=NAME]",
        crate::redact_url(url)
    ))
}

/// Decodes `%XX` escapes of a text part of the URL.
fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(crate::shared::percent_decode(s, false)?).ok()
}

fn parse_url(url: &str) -> Result<RedisUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(url, "no scheme"))?;
    let tls = match scheme {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(invalid(
                url,
                format!("scheme {other:?} is not redis or rediss"),
            ))
        }
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));

    let mut sentinel = None;
    let mut prefix = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    let (mut ca_file, mut cert_file, mut key_file, mut insecure) = (None, None, None, false);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| invalid(url, format!("bad %-escape in option {name}")))?;
        match name {
            "sentinel" if !value.is_empty() => sentinel = Some(value),
            "prefix" if !value.is_empty() => prefix = Some(value.into_bytes()),
            "pool-size" => {
                pool_size = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(url, "pool-size must be a positive number"))?
            }
            "tls-ca-cert-file" => ca_file = Some(value),
            "tls-cert-file" => cert_file = Some(value),
            "tls-key-file" => key_file = Some(value),
            "insecure-skip-verify" => insecure = matches!(value.as_str(), "" | "true" | "1"),
            _ => {
                return Err(invalid(
                    url,
                    format!(
                        "unknown or empty option {name:?} (supported: sentinel, prefix, pool-size, \
                         tls-ca-cert-file, tls-cert-file, tls-key-file, insecure-skip-verify)"
                    ),
                ))
            }
        }
    }
    if !tls && (ca_file.is_some() || cert_file.is_some() || key_file.is_some() || insecure) {
        return Err(invalid(url, "TLS options need the rediss:// scheme"));
    }
    if cert_file.is_some() != key_file.is_some() {
        return Err(invalid(url, "tls-cert-file and tls-key-file go together"));
    }

    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (mut user, mut password) = (None, None);
    if let Some(info) = userinfo {
        let (u, p) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        let u = percent_decode(u).ok_or_else(|| invalid(url, "bad %-escape in the user"))?;
        user = Some(u).filter(|u| !u.is_empty());
        if let Some(p) = p {
            password = Some(
                percent_decode(p).ok_or_else(|| invalid(url, "bad %-escape in the password"))?,
            );
        }
    }
    let default_port = if sentinel.is_some() {
        DEFAULT_SENTINEL_PORT
    } else {
        DEFAULT_PORT
    };
    let mut hosts = Vec::new();
    for h in hostlist.split(',') {
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid(url, format!("unclosed [ in host {h:?}")))?;
            (host, after.strip_prefix(':'))
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        if host.is_empty() {
            return Err(invalid(url, "empty host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| invalid(url, format!("bad port {p:?}")))?,
            None => default_port,
        };
        hosts.push((host.to_string(), port));
    }
    let db = percent_decode(path.trim_matches('/'))
        .ok_or_else(|| invalid(url, "bad %-escape in the database"))?;
    Ok(RedisUrl {
        tls,
        hosts,
        user,
        password,
        db: if db.is_empty() { "0".into() } else { db },
        sentinel,
        prefix,
        pool_size,
        ca_file,
        cert_file,
        key_file,
        insecure,
    })
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// What a failed command means for the connection it ran on.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Damage {
    /// A server answer; the connection is fine.
    None,
    /// The connection may be out of step or dead: never reuse it.
    Connection,
    /// The server is no longer the volume's master: look it up again.
    Topology,
}

/// Codes of every server error inside `e`: a failed pipeline or `EXEC` carries one per
/// failed command, and only the first shows in `e.kind()`.
fn server_codes(e: &RedisError) -> Vec<String> {
    let mut codes: Vec<String> = e.code().map(str::to_string).into_iter().collect();
    if let Some(errs) = e.clone().into_server_errors() {
        codes.extend(errs.iter().map(|(_, s)| s.code().to_string()));
    }
    codes
}

fn damage(e: &RedisError) -> Damage {
    // NOREPLICAS: a master cut off from its replicas (min-replicas-to-write), typically
    // the old master during a failover.
    const TOPOLOGY: [&str; 7] = [
        "MOVED",
        "ASK",
        "READONLY",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "TRYAGAIN",
        "NOREPLICAS",
    ];
    if server_codes(e)
        .iter()
        .any(|c| TOPOLOGY.contains(&c.as_str()))
    {
        return Damage::Topology;
    }
    match e.kind() {
        ErrorKind::Server(_) => Damage::None,
        _ if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Damage::Topology,
        ErrorKind::Io | ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Damage::Connection,
        _ => Damage::None,
    }
}

/// Turns a Redis error into an engine error that says what to do; `addr` names the
/// server for messages.
/// One reply of a pipeline as a `T`.
fn from_reply<T: redis::FromRedisValue>(v: Value, addr: &str) -> Result<T> {
    redis::from_redis_value(v)
        .map_err(|e| Error::engine(format!("Redis at {addr}: unexpected reply: {e}"), false))
}

fn map_err(e: &RedisError, addr: &str) -> Error {
    let codes = server_codes(e);
    let has = |c: &str| codes.iter().any(|x| x == c);
    let text = e.to_string();
    if e.kind() == ErrorKind::AuthenticationFailed
        || has("WRONGPASS")
        || text.contains("called without any password configured")
    {
        return Error::engine(
            format!(
                "Redis at {addr} refused the user name or password ({text}); fix them in the \
                 META-URL (redis://USER:PASSWORD@HOST/DB) or set META_PASSWORD"
            ),
            false,
        );
    }
    if has("NOAUTH") {
        return Error::engine(
            format!(
                "Redis at {addr} requires a password ({text}); put it in the META-URL \
                 (redis://:PASSWORD@HOST/DB) or set META_PASSWORD"
            ),
            false,
        );
    }
    if has("NOPERM") {
        return Error::engine(
            format!("the Redis user has no permission for a command Nectar needs at {addr} ({text}); grant it +@all on the volume's keys"),
            false,
        );
    }
    if text.contains("DB index is out of range") {
        return Error::engine(
            format!(
                "Redis at {addr} has no such database ({text}); use a database number below \
                 the server's `databases` setting (16 by default)"
            ),
            false,
        );
    }
    if has("OOM") {
        return Error::Full(format!(
            "Redis at {addr} is full: it reached maxmemory ({text}); raise maxmemory or free memory"
        ));
    }
    if text.contains("certificate")
        || text.contains("corrupt message")
        || text.contains("InvalidContentType")
    {
        return Error::engine(
            format!(
                "TLS with Redis at {addr} failed ({text}); check that the server speaks TLS on \
                 that port, and give its CA with ?tls-ca-cert-file=PEM (or \
                 ?insecure-skip-verify=true for a test server)"
            ),
            false,
        );
    }
    if e.is_connection_refusal() {
        return Error::engine(
            format!("cannot connect to Redis at {addr} ({text}); is the server running and the address right?"),
            true,
        );
    }
    if e.is_timeout() {
        return Error::engine(
            format!("Redis at {addr} did not answer in time ({text})"),
            true,
        );
    }
    let temporary = damage(e) != Damage::None || has("LOADING");
    Error::engine(format!("Redis at {addr}: {text}"), temporary)
}

// ---------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Standalone,
    Sentinel(String),
    Cluster,
}

/// The master in use and the pool of connections to it.
struct Current {
    addr: String,
    /// How to connect to it (the change feed opens its own connection).
    info: ConnectionInfo,
    pool: Pool,
}

pub struct RedisEngine {
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
    url: RedisUrl,
    mode: Mode,
    /// Database selected on the master (0 in a cluster).
    db: i64,
    /// Prefix of every key of the volume.
    prefix: Vec<u8>,
    tls_certs: Option<redis::TlsCertificates>,
    /// `None` until the master is (re)discovered. Shared with the task that watches the
    /// sentinels.
    current: Arc<Mutex<Option<Arc<Current>>>>,
    scan_script: redis::Script,
    follow_script: redis::Script,
    /// Which keys are scanned together, so indexed together.
    layout: &'static dyn KeyLayout,
    /// The hosts of the URL, for messages.
    hosts: String,
    /// The channel this volume's commits announce their changes on (see `feed`).
    channel: Vec<u8>,
    /// This client's id in its announcements.
    origin: u64,
    /// Which keys commits announce; unset: none.
    announced: std::sync::OnceLock<AnnouncedKeys>,
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        if let Some(mut cur) = self.current.lock().take() {
            if let Some(c) = Arc::get_mut(&mut cur) {
                c.pool.close();
            }
        }
        // Dropping a runtime blocks; shutting it down in the background never does, so
        // the engine may be dropped from anywhere, even inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the {what} {path} given in the Redis META-URL: {e}"
        ))
    })
}

impl RedisEngine {
    /// Opens the engine for `url` and checks that the server answers.
    pub fn open(url: &str, layout: &'static dyn KeyLayout) -> Result<Self> {
        let mut u = parse_url(url)?;
        if u.password.is_none() {
            if let Ok(pw) = std::env::var("META_PASSWORD") {
                if !pw.is_empty() {
                    u.password = Some(pw);
                }
            }
        }
        let tls_certs = if u.tls {
            // rustls needs one crypto provider; the workspace links two, so name one
            // (a provider installed by the process first is kept).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = u
                .ca_file
                .as_deref()
                .map(|p| read_file(p, "CA certificate"))
                .transpose()?;
            let client_tls = match (&u.cert_file, &u.key_file) {
                (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                    client_cert: read_file(c, "client certificate")?,
                    client_key: read_file(k, "client key")?,
                }),
                _ => None,
            };
            (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
                client_tls,
                root_cert,
            })
        } else {
            None
        };
        let rt = crate::shared::engine_runtime("redis")?;
        let hosts = u
            .hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut eng = RedisEngine {
            rt: Some(rt),
            layout,
            mode: Mode::Standalone,
            db: 0,
            prefix: Vec::new(),
            tls_certs,
            current: Default::default(),
            scan_script: redis::Script::new(SCAN_SCRIPT),
            follow_script: redis::Script::new(FOLLOW_SCRIPT),
            hosts,
            url: u,
            channel: Vec::new(),
            origin: crate::feed::new_origin(),
            announced: std::sync::OnceLock::new(),
        };
        eng.mode = match &eng.url.sentinel {
            Some(name) => Mode::Sentinel(name.clone()),
            None => eng.block_on(eng.detect_cluster())?,
        };
        if eng.mode == Mode::Standalone && eng.url.hosts.len() > 1 {
            return Err(invalid(
                url,
                format!(
                    "several hosts ({}) but none is a cluster node; for Sentinel add ?sentinel=MASTER_NAME",
                    eng.hosts
                ),
            ));
        }
        match eng.mode {
            Mode::Cluster => {
                // One hash slot for the whole volume: a hash tag in every key.
                let tag = eng
                    .url
                    .prefix
                    .clone()
                    .unwrap_or_else(|| eng.url.db.clone().into_bytes());
                eng.prefix = if tag.contains(&b'{') && tag.contains(&b'}') {
                    tag
                } else {
                    [b"{".as_slice(), &tag, b"}"].concat()
                };
            }
            _ => {
                eng.db = eng.url.db.parse().ok().filter(|d| *d >= 0).ok_or_else(|| {
                    invalid(
                        url,
                        format!(
                            "database {:?} is not a number (redis://HOST:PORT/DB)",
                            eng.url.db
                        ),
                    )
                })?;
                eng.prefix = eng.url.prefix.clone().unwrap_or_default();
            }
        }
        eng.channel = feed::channel(eng.db, &eng.prefix);
        // Fail now, with a clear message, when the server cannot be used at all.
        let cur = eng.current()?;
        if let Mode::Sentinel(name) = &eng.mode {
            let sentinels = eng
                .url
                .hosts
                .iter()
                .map(|(h, p)| Ok((format!("{h}:{p}"), eng.conn_info(h, *p, 0, true)?)))
                .collect::<Result<Vec<_>>>()?;
            let task = watch_sentinels(sentinels, name.clone(), Arc::downgrade(&eng.current));
            if let Some(rt) = &eng.rt {
                rt.spawn(task);
            }
        }
        {
            let mut conn = cur.pool.get().map_err(|e| pool_err(e, &cur.addr))?;
            let conn: &mut redis::Connection = &mut conn;
            let pong: RedisResult<String> = redis::cmd("PING").query(conn);
            pong.map_err(|e| map_err(&e, &cur.addr))?;
            // A replica answers reads but refuses every write, which would only show as
            // retries; say so now. (Sentinel and cluster lookups find masters.)
            let role: RedisResult<Vec<Value>> = redis::cmd("ROLE").query(conn);
            if let Ok(role) = role {
                if let (
                    Some(Value::BulkString(r)),
                    Some(Value::BulkString(host)),
                    Some(Value::Int(port)),
                ) = (role.first(), role.get(1), role.get(2))
                {
                    if r == b"slave" {
                        return Err(Error::engine(
                            format!(
                                "Redis at {} is a read-only replica of {}:{port}; point the META-URL at the master, or use Sentinel (?sentinel=NAME)",
                                cur.addr,
                                String::from_utf8_lossy(host)
                            ),
                            false,
                        ));
                    }
                }
            }
            // Eviction would silently drop metadata.
            let policy: RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query(conn);
            if let Ok(p) = policy {
                if let Some(v) = p.get(1).filter(|v| v.as_str() != "noeviction") {
                    tracing::warn!(
                        "Redis at {} has maxmemory-policy {v}: it may evict metadata; set it to noeviction",
                        cur.addr
                    );
                }
            }
            eng.pack_old_domains(conn)
                .map_err(|e| map_err(&e, &cur.addr))?;
        }
        Ok(eng)
    }

    /// Moves the keys of packed domains that an older version stored as keys of their
    /// own (each with its member in the domain's sorted set) into the domain's hash, once
    /// per volume: the first client of this version to open the volume does it, one
    /// domain per `MULTI` (watched, so clients opening together do not collide), then
    /// marks the volume. Clients of the older version must be stopped first: an entry
    /// one of them wrote afterwards would not be seen. A fresh volume is only marked.
    fn pack_old_domains(&self, conn: &mut redis::Connection) -> RedisResult<()> {
        let mark = self.zkey(LAYOUT_MARK);
        let done: Option<Vec<u8>> = redis::cmd("GET").arg(&mark).query(conn)?;
        if done.is_some() {
            return Ok(());
        }
        let mut domains = Vec::new();
        let skip = self.prefix.len() + 1;
        scan_match(conn, &glob_prefix(&self.zkey(b"")), |_, batch| {
            domains.extend(
                batch
                    .into_iter()
                    .filter_map(|k| k.get(skip..).map(<[u8]>::to_vec))
                    .filter(|d| self.layout.packed(d)),
            );
            Ok(())
        })?;
        let mut moved = 0usize;
        for d in &domains {
            let zk = self.zkey(d);
            let hk = self.hkey(d);
            loop {
                redis::cmd("WATCH").arg(&zk).query::<()>(conn)?;
                let members: Vec<Vec<u8>> =
                    redis::cmd("ZRANGE").arg(&zk).arg(0).arg(-1).query(conn)?;
                let rkeys: Vec<Vec<u8>> = members
                    .iter()
                    .map(|m| self.rkey(&[d, m.as_slice()].concat()))
                    .collect();
                let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(rkeys.len());
                for chunk in rkeys.chunks(BATCH) {
                    let batch: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(conn)?;
                    values.extend(batch);
                }
                let mut p = redis::pipe();
                p.atomic();
                for (m, v) in members.iter().zip(&values) {
                    if let Some(v) = v {
                        p.cmd("HSET").arg(&hk).arg(m).arg(v).ignore();
                    }
                }
                for chunk in rkeys.chunks(BATCH) {
                    p.cmd("DEL").arg(chunk).ignore();
                }
                p.cmd("DEL").arg(&zk).ignore();
                let r: Value = p.query(conn)?;
                if r != Value::Nil {
                    moved += members.len();
                    break;
                }
            }
        }
        if !domains.is_empty() {
            tracing::info!(
                "redis: moved {moved} keys of {} domains into hashes (the layout of this version)",
                domains.len()
            );
        }
        redis::cmd("SET")
            .arg(&mark)
            .arg(PACKED_LAYOUT)
            .query::<()>(conn)
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until the engine is dropped")
            .block_on(f)
    }

    /// Connection settings for `host:port`; sentinels get their own credentials.
    fn conn_info(&self, host: &str, port: u16, db: i64, sentinel: bool) -> Result<ConnectionInfo> {
        let addr = if self.url.tls {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: self.url.insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(db);
        let (user, password) = if sentinel {
            (
                None,
                std::env::var("SENTINEL_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
            )
        } else {
            (self.url.user.clone(), self.url.password.clone())
        };
        if let Some(u) = user {
            settings = settings.set_username(u);
        }
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| map_err(&e, &format!("{host}:{port}")))?
            .set_redis_settings(settings);
        match &self.tls_certs {
            Some(certs) => Ok(redis::Client::build_with_tls(info, certs.clone())
                .map_err(|e| {
                    Error::Invalid(format!("bad TLS settings in the Redis META-URL: {e}"))
                })?
                .get_connection_info()
                .clone()),
            None => Ok(info),
        }
    }

    fn conn_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }

    /// A one-off connection (discovery), not from the pool.
    async fn connect_once(
        &self,
        host: &str,
        port: u16,
        db: i64,
        sentinel: bool,
    ) -> Result<redis::aio::MultiplexedConnection> {
        let info = self.conn_info(host, port, db, sentinel)?;
        let addr = format!("{host}:{port}");
        let client = redis::Client::open(info).map_err(|e| map_err(&e, &addr))?;
        client
            .get_multiplexed_async_connection_with_config(&Self::conn_config())
            .await
            .map_err(|e| map_err(&e, &addr))
    }

    /// Whether the URL's first answering host is a cluster node.
    async fn detect_cluster(&self) -> Result<Mode> {
        let mut last = None;
        for (host, port) in &self.url.hosts {
            // Database 0 exists everywhere; the URL's database is checked later.
            let mut conn = match self.connect_once(host, *port, 0, false).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let info: RedisResult<String> = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut conn)
                .await;
            let info = info.map_err(|e| map_err(&e, &format!("{host}:{port}")))?;
            return Ok(if info.contains("cluster_enabled:1") {
                Mode::Cluster
            } else {
                Mode::Standalone
            });
        }
        Err(last.unwrap_or_else(|| Error::Invalid("Redis META-URL without a host".into())))
    }

    /// Finds the master that serves the volume.
    async fn resolve(&self) -> Result<(String, u16)> {
        match &self.mode {
            Mode::Standalone => {
                let (h, p) = &self.url.hosts[0];
                Ok((h.clone(), *p))
            }
            Mode::Sentinel(name) => self.resolve_sentinel(name).await,
            Mode::Cluster => self.resolve_cluster().await,
        }
    }

    async fn resolve_sentinel(&self, name: &str) -> Result<(String, u16)> {
        let mut errors = Vec::new();
        let mut unknown = 0;
        for (host, port) in &self.url.hosts {
            let addr = format!("{host}:{port}");
            let mut conn = match self.connect_once(host, *port, 0, true).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let r: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(name)
                .query_async(&mut conn)
                .await;
            match r {
                Ok(Some(master)) => {
                    // A sentinel may lag behind a failover: make sure it is a master.
                    let mut m = self.connect_once(&master.0, master.1, 0, false).await?;
                    let role: RedisResult<Vec<Value>> =
                        redis::cmd("ROLE").query_async(&mut m).await;
                    let maddr = format!("{}:{}", master.0, master.1);
                    let role = role.map_err(|e| map_err(&e, &maddr))?;
                    if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                        return Err(Error::engine(
                            format!("Redis at {maddr}, named master {name:?} by sentinel {addr}, is not a master (failover in progress?)"),
                            true,
                        ));
                    }
                    return Ok(master);
                }
                Ok(None) => unknown += 1,
                Err(e) => errors.push(map_err(&e, &addr).to_string()),
            }
        }
        if unknown > 0 && errors.is_empty() {
            return Err(Error::engine(
                format!("no sentinel at {} knows a master named {name:?}; check ?sentinel= in the META-URL", self.hosts),
                false,
            ));
        }
        Err(Error::engine(
            format!(
                "cannot ask any sentinel at {} for master {name:?}: {}",
                self.hosts,
                errors.join("; ")
            ),
            errors
                .iter()
                .all(|e| !e.contains("password") && !e.contains("permission")),
        ))
    }

    async fn resolve_cluster(&self) -> Result<(String, u16)> {
        let mut last = None;
        for (host, port) in &self.url.hosts {
            let addr = format!("{host}:{port}");
            let mut conn = match self.connect_once(host, *port, 0, false).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let slot: RedisResult<i64> = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&self.prefix)
                .query_async(&mut conn)
                .await;
            let slot = slot.map_err(|e| map_err(&e, &addr))?;
            let slots: RedisResult<Vec<Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await;
            let slots = slots.map_err(|e| map_err(&e, &addr))?;
            // Each entry: start, end, [master ip, port, id, ...], replicas...
            for entry in slots {
                let Value::Array(parts) = entry else { continue };
                let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                    (parts.first(), parts.get(1), parts.get(2))
                else {
                    continue;
                };
                if !(*start..=*end).contains(&slot) {
                    continue;
                }
                let ip = match master.first() {
                    Some(Value::BulkString(b)) if !b.is_empty() => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    // An empty address means "the node you asked".
                    _ => host.clone(),
                };
                let Some(Value::Int(p)) = master.get(1) else {
                    continue;
                };
                let p = u16::try_from(*p).map_err(|_| {
                    Error::engine(
                        format!("Redis cluster at {addr} reports a bad port {p}"),
                        true,
                    )
                })?;
                return Ok((ip, p));
            }
            return Err(Error::engine(
                format!("no node of the Redis cluster at {addr} serves hash slot {slot} (cluster down?)"),
                true,
            ));
        }
        Err(last.unwrap_or_else(|| Error::Invalid("Redis META-URL without a host".into())))
    }

    /// The pool of the current master, discovering it first when needed.
    fn current(&self) -> Result<Arc<Current>> {
        if let Some(c) = self.current.lock().as_ref() {
            return Ok(c.clone());
        }
        // Not under the lock: a lookup may take seconds, and the sentinel watcher must
        // not wait for it. Threads that race here each look up; one result is kept.
        let (host, port) = self.block_on(self.resolve())?;
        let addr = format!("{host}:{port}");
        let info = self.conn_info(&host, port, self.db, false)?;
        let pool = pool::new(info.clone(), self.url.pool_size).map_err(|e| map_err(&e, &addr))?;
        let mut cur = self.current.lock();
        if let Some(c) = cur.as_ref() {
            return Ok(c.clone());
        }
        if self.mode != Mode::Standalone {
            tracing::info!("redis: the volume's master is {addr}");
        }
        let c = Arc::new(Current { addr, info, pool });
        *cur = Some(c.clone());
        Ok(c)
    }

    /// Forgets the master `old` so the next attempt looks it up again.
    fn forget(&self, old: &Arc<Current>) {
        if self.mode == Mode::Standalone {
            return; // Nothing to look up; the pool drops dead connections itself.
        }
        let mut cur = self.current.lock();
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, old)) {
            old.pool.close();
            *cur = None;
        }
    }

    fn rkey(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    fn zkey(&self, domain: &[u8]) -> Vec<u8> {
        self.tagged(INDEX_TAG, domain)
    }

    /// The hash holding the keys of packed domain `domain`.
    fn hkey(&self, domain: &[u8]) -> Vec<u8> {
        self.tagged(PACKED_TAG, domain)
    }

    fn tagged(&self, tag: u8, domain: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 1 + domain.len());
        k.extend_from_slice(&self.prefix);
        k.push(tag);
        k.extend_from_slice(domain);
        k
    }

    /// The packed domain `key` belongs to, if it belongs to one.
    fn packed_domain<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        domain_of(self.layout, key).filter(|d| self.layout.packed(d))
    }

    /// The Redis key holding `key`'s value, and the field when it is packed.
    fn location<'k>(&self, key: &'k [u8]) -> (Vec<u8>, Option<&'k [u8]>) {
        match self.packed_domain(key) {
            Some(d) => (self.hkey(d), Some(&key[d.len()..])),
            None => (self.rkey(key), None),
        }
    }
}

type RedisResult<T> = redis::RedisResult<T>;

/// How often the sentinels are asked who the master is.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Asks the sentinels every second who the master is and drops the pool when the
/// answer changes. Without this, a failover would be noticed only when the old master
/// refuses a write (`READONLY`), and until Sentinel demotes it (up to ~10 s) it accepts
/// writes that the new master never sees: they would be lost. Ends with the engine.
async fn watch_sentinels(
    sentinels: Vec<(String, ConnectionInfo)>,
    name: String,
    current: std::sync::Weak<Mutex<Option<Arc<Current>>>>,
) {
    let config = RedisEngine::conn_config();
    let mut conns: Vec<Option<redis::aio::MultiplexedConnection>> =
        sentinels.iter().map(|_| None).collect();
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let Some(addr) = current.lock().as_ref().map(|c| c.addr.clone()) else {
            continue;
        };
        for ((saddr, info), slot) in sentinels.iter().zip(conns.iter_mut()) {
            if slot.is_none() {
                let Ok(client) = redis::Client::open(info.clone()) else {
                    continue;
                };
                *slot = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok();
            }
            let Some(conn) = slot.as_mut() else { continue };
            let r: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&name)
                .query_async(conn)
                .await;
            match r {
                Ok(Some((h, p))) => {
                    let master = format!("{h}:{p}");
                    if master != addr {
                        let mut cur = current.lock();
                        if let Some(c) = cur.as_ref().filter(|c| c.addr == addr) {
                            tracing::info!("redis: sentinel {saddr} names {master} as master of {name:?}; leaving {addr}");
                            c.pool.close();
                            *cur = None;
                        }
                    }
                    break;
                }
                Ok(None) => break,
                Err(_) => *slot = None,
            }
        }
    }
}

fn pool_err(e: PoolError, addr: &str) -> Error {
    match e {
        PoolError::Connect(e) => map_err(&e, addr),
        PoolError::Timeout => Error::engine(
            format!("timed out ({:?}) waiting for a free connection to Redis at {addr}; is the server up and not overloaded, or is pool-size too small?", pool::POOL_WAIT),
            true,
        ),
        PoolError::Closed => Error::engine(
            format!("Redis at {addr} is no longer the volume's master; looking it up again"),
            true,
        ),
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if matches!(key.first(), Some(&INDEX_TAG | &PACKED_TAG)) {
        return Err(Error::Invalid(
            "keys starting with byte 0xFE or 0xFF are reserved by the Redis engine".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------

/// A field of a packed domain's hash and its value.
type Field<'w> = (&'w [u8], &'w [u8]);

/// One range asked of a domain's index ([`RedisTxn::index_ranges`]).
struct IndexRange<'r> {
    d: &'r [u8],
    begin: &'r [u8],
    end: &'r [u8],
    limit: Option<usize>,
}

struct RedisTxn<'a> {
    eng: &'a RedisEngine,
    conn: &'a mut redis::Connection,
    addr: &'a str,
    read_only: bool,
    /// Redis keys watched so far (data keys and index keys).
    watched: HashSet<Vec<u8>>,
    /// Values read so far, by schema key; watched, so they stay valid until EXEC.
    cache: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Buffered writes by schema key: `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The worst damage a failed command did to the connection.
    damage: Damage,
    /// An error already returned to the body; the attempt must not commit after it.
    failed: Option<String>,
}

impl RedisTxn<'_> {
    fn fail(&mut self, e: RedisError) -> Error {
        let d = damage(&e);
        if d != Damage::None && self.damage != Damage::Topology {
            self.damage = d;
        }
        let err = map_err(&e, self.addr);
        self.failed = Some(err.to_string());
        err
    }

    fn query<T: redis::FromRedisValue>(&mut self, p: &Pipeline) -> Result<T> {
        let r = p.query::<T>(self.conn);
        r.map_err(|e| self.fail(e))
    }

    /// Adds a WATCH of those `keys` not watched yet (read-write transactions only).
    fn watch(&mut self, p: &mut Pipeline, keys: impl IntoIterator<Item = Vec<u8>>) {
        if self.read_only {
            return;
        }
        let new: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| self.watched.insert(k.clone()))
            .collect();
        if !new.is_empty() {
            p.cmd("WATCH").arg(&new).ignore();
        }
    }

    /// Values of schema keys not in the buffer or the cache, watched first; they go into
    /// the cache.
    fn fetch(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !self.writes.contains_key(*k) && !self.cache.contains_key(*k))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for k in &missing {
            check_key(k)?;
        }
        // Plain keys in MGETs, packed ones in HGETs, all in one round trip.
        let (plain, packed): (Vec<Vec<u8>>, Vec<Vec<u8>>) = missing
            .into_iter()
            .partition(|k| self.eng.packed_domain(k).is_none());
        let rkeys: Vec<Vec<u8>> = plain.iter().map(|k| self.eng.rkey(k)).collect();
        let fields: Vec<(Vec<u8>, &[u8])> = packed
            .iter()
            .map(|k| {
                let (hk, field) = self.eng.location(k);
                (hk, field.unwrap_or_default())
            })
            .collect();
        let mut p = redis::pipe();
        let watched = rkeys.iter().chain(fields.iter().map(|(hk, _)| hk));
        self.watch(&mut p, watched.cloned().collect::<Vec<_>>());
        for chunk in rkeys.chunks(BATCH) {
            p.cmd("MGET").arg(chunk);
        }
        for (hk, field) in &fields {
            p.cmd("HGET").arg(hk).arg(*field);
        }
        let replies: Vec<Value> = self.query(&p)?;
        let mut replies = replies.into_iter();
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(plain.len() + packed.len());
        for _ in rkeys.chunks(BATCH) {
            let batch = replies.next().unwrap_or(Value::Nil);
            values.extend(from_reply::<Vec<Option<Vec<u8>>>>(batch, self.addr)?);
        }
        for _ in &fields {
            values.push(from_reply(replies.next().unwrap_or(Value::Nil), self.addr)?);
        }
        if values.len() != plain.len() + packed.len() {
            return Err(Error::engine(
                format!("Redis at {}: short reply to a read", self.addr),
                true,
            ));
        }
        for (k, v) in plain.into_iter().chain(packed).zip(values) {
            self.cache.insert(k, v);
        }
        Ok(())
    }

    /// All keys of packed domain `d` with their values, in key order (the hash is
    /// watched first); they go into the cache.
    fn read_packed(&mut self, d: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let hk = self.eng.hkey(d);
        let mut p = redis::pipe();
        self.watch(&mut p, [hk.clone()]);
        p.cmd("HGETALL").arg(&hk);
        let (fields,): (BTreeMap<Vec<u8>, Vec<u8>>,) = self.query(&p)?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = fields
            .into_iter()
            .map(|(f, v)| ([d, f.as_slice()].concat(), v))
            .collect();
        for (k, v) in &pairs {
            self.cache
                .entry(k.clone())
                .or_insert_with(|| Some(v.clone()));
        }
        Ok(pairs)
    }

    /// A scan of `[begin, end)` inside packed domain `d`: the whole domain is read, and
    /// this attempt's writes are laid over it.
    fn packed_scan(
        &mut self,
        d: &[u8],
        begin: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let pending = self.pending(begin, end);
        let keys = self
            .read_packed(d)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| begin <= k.as_slice() && k.as_slice() < end)
            .collect();
        Ok(self.merge_scanned(keys, pending, limit))
    }

    /// The value of a schema key as this attempt sees it (after `fetch`).
    fn seen(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.cache.get(key).cloned().flatten(),
        }
    }

    /// Buffered writes inside `[begin, end)`.
    fn pending(&self, begin: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.writes
            .range(begin.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Keys of `[begin, end)` in domain `d` from its index, at most `limit` (none when
    /// `None`); the index is watched first.
    fn index_range(
        &mut self,
        d: &[u8],
        begin: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut keys = self.index_ranges(&[IndexRange {
            d,
            begin,
            end,
            limit,
        }])?;
        Ok(keys.pop().unwrap_or_default())
    }

    /// [`Self::index_range`] of several ranges in one round trip.
    fn index_ranges(&mut self, ranges: &[IndexRange<'_>]) -> Result<Vec<Vec<Vec<u8>>>> {
        let mut p = redis::pipe();
        // Per range: its implicit key, its value when already known, whether it is read
        // here (its reply comes before the range's members).
        let mut implicits = Vec::with_capacity(ranges.len());
        for r in ranges {
            let zk = self.eng.zkey(r.d);
            let (min, max) = lex_bounds(r.d, r.begin, r.end);
            let mut watched = vec![zk.clone()];
            // The implicit member is read, not only tested, in the same round trip (it
            // is watched first), so a scan of a file's chunks needs no second one. One
            // this attempt wrote is left to the caller's overlay; one it read is known.
            let implicit = implicit_key(self.eng.layout, r.d, r.begin, r.end)
                .filter(|k| !self.writes.contains_key(k));
            let known = implicit.as_ref().and_then(|k| self.cache.get(k).cloned());
            let unread = implicit.is_some() && known.is_none();
            if unread {
                watched.extend(implicit.iter().map(|k| self.eng.rkey(k)));
            }
            self.watch(&mut p, watched);
            if let (Some(k), true) = (&implicit, unread) {
                p.cmd("GET").arg(self.eng.rkey(k));
            }
            let c = p.cmd("ZRANGEBYLEX").arg(&zk).arg(&min).arg(&max);
            if let Some(n) = r.limit {
                c.arg("LIMIT").arg(0).arg(n);
            }
            implicits.push((implicit, known, unread));
        }
        let replies: Vec<Value> = self.query(&p)?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(ranges.len());
        for (r, (implicit, known, unread)) in ranges.iter().zip(implicits) {
            let found: Option<Vec<u8>> = match (&implicit, unread) {
                (Some(k), true) => {
                    let value: Option<Vec<u8>> =
                        from_reply(replies.next().unwrap_or(Value::Nil), self.addr)?;
                    self.cache.insert(k.clone(), value.clone());
                    value
                }
                _ => known.flatten(),
            };
            let members: Vec<Vec<u8>> =
                from_reply(replies.next().unwrap_or(Value::Nil), self.addr)?;
            let mut keys = Vec::new();
            if let (Some(k), Some(_)) = (implicit, found) {
                keys.push(k);
            }
            // Volumes written before chunk 0 was left out of the index may still list it.
            for m in members {
                let k = [r.d, m.as_slice()].concat();
                if keys.last() != Some(&k) {
                    keys.push(k);
                }
            }
            out.push(keys);
        }
        Ok(out)
    }

    /// What a read-write scan returns: the `keys` its index listed (read by now) and
    /// this attempt's `pending` writes of the range, at most `limit`.
    fn merge_scanned(
        &self,
        keys: Vec<Vec<u8>>,
        pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for k in keys.into_iter().filter(|k| !self.writes.contains_key(k)) {
            // None: deleted since the index was read; the watch makes EXEC fail anyway.
            if let Some(v) = self.seen(&k) {
                merged.insert(k, v);
            }
        }
        for (k, v) in pending {
            if let Some(v) = v {
                merged.insert(k, v);
            }
        }
        merged.into_iter().take(limit).collect()
    }

    /// Keys of `[begin, end)` found by walking the volume's keyspace (ranges that span
    /// domains). Watches the indexes that cover the range.
    fn keyspace_range(&mut self, begin: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>> {
        tracing::debug!(
            "redis: scan of {:?}..{:?} spans index domains; walking the keyspace",
            String::from_utf8_lossy(begin),
            String::from_utf8_lossy(end)
        );
        let common = common_prefix(begin, end).to_vec();
        let plen = self.eng.prefix.len();
        let mut keys = Vec::new();
        let mut zkeys = Vec::new();
        // Domains no longer than the common prefix are its prefixes (watching a missing
        // key is fine); longer ones start with it and show up in the walk.
        for l in 1..=common.len().min(10) {
            zkeys.push(self.eng.zkey(&common[..l]));
        }
        for (pattern, index) in [
            (glob_prefix(&self.eng.rkey(&common)), false),
            (glob_prefix(&self.eng.zkey(&common)), true),
        ] {
            if index && self.read_only {
                break;
            }
            let walked = scan_match(self.conn, &pattern, |_, batch| {
                for k in batch {
                    let Some(raw) = k.get(plen..) else { continue };
                    if index {
                        let d = &raw[1..];
                        if d < end && prefix_end(d).as_slice() > begin {
                            zkeys.push(k.clone());
                        }
                    } else if !matches!(raw.first(), Some(&INDEX_TAG | &PACKED_TAG))
                        && raw >= begin
                        && raw < end
                    {
                        keys.push(raw.to_vec());
                    }
                }
                Ok(())
            });
            walked.map_err(|e| self.fail(e))?;
        }
        for d in self.packed_in_range(&common, begin, end)? {
            keys.extend(self.read_packed(&d)?.into_iter().map(|(k, _)| k));
        }
        keys.retain(|k| begin <= k.as_slice() && k.as_slice() < end);
        if !zkeys.is_empty() && !self.read_only {
            let mut p = redis::pipe();
            self.watch(&mut p, zkeys);
            if !p.is_empty() {
                p.cmd("PING").ignore();
                self.query::<()>(&p)?;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The packed domains that may hold keys of `[begin, end)`, whose keys all start
    /// with `common`: the one `common` lies in, and those found in the keyspace.
    fn packed_in_range(&mut self, common: &[u8], begin: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut found: Vec<Vec<u8>> = self
            .eng
            .packed_domain(common)
            .map(<[u8]>::to_vec)
            .into_iter()
            .collect();
        let plen = self.eng.prefix.len() + 1;
        let layout = self.eng.layout;
        let walked = scan_match(
            self.conn,
            &glob_prefix(&self.eng.hkey(common)),
            |_, batch| {
                for k in batch {
                    let Some(d) = k.get(plen..) else { continue };
                    if d < end && prefix_end(d).as_slice() > begin && layout.packed(d) {
                        found.push(d.to_vec());
                    }
                }
                Ok(())
            },
        );
        walked.map_err(|e| self.fail(e))?;
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The index key and the five arguments of [`SCAN_SCRIPT`] for one range.
    fn scan_args(
        &self,
        d: &[u8],
        begin: &[u8],
        end: &[u8],
        limit: usize,
    ) -> (Vec<u8>, [Vec<u8>; 5]) {
        let (min, max) = lex_bounds(d, begin, end);
        let implicit = implicit_key(self.eng.layout, d, begin, end).map(|k| k[d.len()..].to_vec());
        (
            self.eng.zkey(d),
            [
                min,
                max,
                i64::try_from(limit).unwrap_or(-1).to_string().into_bytes(),
                self.eng.rkey(d),
                implicit.unwrap_or_default(),
            ],
        )
    }

    /// A read-only scan of one range of indexed domain `d` in one round trip.
    fn scan_script(
        &mut self,
        d: &[u8],
        begin: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (zk, args) = self.scan_args(d, begin, end, limit);
        let mut inv = self.eng.scan_script.key(&zk);
        for arg in &args {
            inv.arg(arg);
        }
        let r = inv.invoke::<Vec<Vec<Value>>>(self.conn);
        let flat = r.map_err(|e| self.fail(e))?.pop().unwrap_or_default();
        Ok(script_scanned(d, flat, limit))
    }

    /// [`Self::scan_script`] of several ranges, each in an indexed domain `domains[i]`,
    /// in one round trip: [`SCAN_SCRIPT`] calls of up to [`MULTI_SCAN_RANGES`]
    /// ranges each, in one pipeline (each call is atomic; a read-only transaction is no
    /// snapshot across reads anyway). `None` when the server does not hold the script
    /// yet: the caller goes range by range, and this loads it for the next time.
    fn scan_scripts(
        &mut self,
        domains: &[&[u8]],
        ranges: &[(&[u8], &[u8], usize)],
    ) -> Result<Option<Vec<Scanned>>> {
        let mut p = redis::pipe();
        let asked: Vec<_> = domains.iter().zip(ranges).collect();
        for call in asked.chunks(MULTI_SCAN_RANGES) {
            let mut keys = Vec::with_capacity(call.len());
            let mut args: Vec<Vec<u8>> = Vec::with_capacity(call.len() * 5);
            for (d, (begin, end, limit)) in call {
                let (zk, range_args) = self.scan_args(d, begin, end, *limit);
                keys.push(zk);
                args.extend(range_args);
            }
            p.cmd("EVALSHA")
                .arg(self.eng.scan_script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
        }
        let replies = match p.query::<Vec<Vec<Vec<Value>>>>(self.conn) {
            Ok(r) => r,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let _ = self.eng.scan_script.prepare_invoke().load(self.conn);
                return Ok(None);
            }
            Err(e) => return Err(self.fail(e)),
        };
        Ok(Some(
            replies
                .into_iter()
                .flatten()
                .zip(asked)
                .map(|(flat, (d, (_, _, limit)))| script_scanned(d, flat, *limit))
                .collect(),
        ))
    }

    /// Queues the buffered writes (and the index updates) in `p`.
    fn queue_writes(&self, p: &mut Pipeline) {
        let mut sets: Vec<(Vec<u8>, &[u8])> = Vec::new();
        let mut dels: Vec<Vec<u8>> = Vec::new();
        let mut zadd: BTreeMap<Vec<u8>, Vec<&[u8]>> = BTreeMap::new();
        let mut zrem: BTreeMap<Vec<u8>, Vec<&[u8]>> = BTreeMap::new();
        let mut hset: BTreeMap<Vec<u8>, Vec<Field>> = BTreeMap::new();
        let mut hdel: BTreeMap<Vec<u8>, Vec<&[u8]>> = BTreeMap::new();
        for (k, v) in &self.writes {
            if let (hk, Some(field)) = self.eng.location(k) {
                match v {
                    Some(v) => hset.entry(hk).or_default().push((field, v)),
                    None => hdel.entry(hk).or_default().push(field),
                }
                continue;
            }
            let index = domain_of(self.eng.layout, k).map(|d| (self.eng.zkey(d), &k[d.len()..]));
            match v {
                Some(v) => {
                    sets.push((self.eng.rkey(k), v));
                    match index {
                        Some((_, m))
                            if domain_of(self.eng.layout, k)
                                .and_then(|d| self.eng.layout.implicit_member(d))
                                == Some(m) => {}
                        Some((zk, m)) => zadd.entry(zk).or_default().push(m),
                        None => {}
                    }
                }
                None => {
                    dels.push(self.eng.rkey(k));
                    if let Some((zk, m)) = index {
                        zrem.entry(zk).or_default().push(m);
                    }
                }
            }
        }
        for chunk in sets.chunks(BATCH) {
            let c = p.cmd("MSET");
            for (k, v) in chunk {
                c.arg(k).arg(*v);
            }
        }
        for chunk in dels.chunks(BATCH) {
            p.cmd("DEL").arg(chunk);
        }
        for (zk, members) in &zadd {
            for chunk in members.chunks(BATCH) {
                let c = p.cmd("ZADD").arg(zk);
                for m in chunk {
                    c.arg(0).arg(*m);
                }
            }
        }
        for (zk, members) in &zrem {
            for chunk in members.chunks(BATCH) {
                p.cmd("ZREM").arg(zk).arg(chunk);
            }
        }
        for (hk, fields) in &hset {
            for chunk in fields.chunks(BATCH) {
                let c = p.cmd("HSET").arg(hk);
                for (f, v) in chunk {
                    c.arg(*f).arg(*v);
                }
            }
        }
        for (hk, fields) in &hdel {
            for chunk in fields.chunks(BATCH) {
                p.cmd("HDEL").arg(hk).arg(chunk);
            }
        }
    }

    /// Checks that no watched key changed since it was read (an empty MULTI/EXEC).
    fn validate(&mut self) -> Result<()> {
        if self.read_only || self.watched.is_empty() || self.failed.is_some() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic();
        self.exec(&p)
    }

    /// Runs a MULTI/EXEC pipeline; EXEC ends every WATCH of the connection.
    fn exec(&mut self, p: &Pipeline) -> Result<()> {
        let r = self.query::<Value>(p);
        self.watched.clear();
        match r? {
            Value::Nil => Err(Error::Conflict),
            _ => Ok(()),
        }
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(msg) = self.failed.take() {
            return Err(Error::engine(
                format!("transaction not committed after an earlier error: {msg}"),
                true,
            ));
        }
        if self.read_only || (self.writes.is_empty() && self.watched.is_empty()) {
            return Ok(());
        }
        // An empty MULTI/EXEC still checks the watches: it validates what was read.
        let mut p = redis::pipe();
        p.atomic();
        self.queue_writes(&mut p);
        if let Some(announced) = self.eng.announced.get() {
            let keys = self.writes.keys().map(Vec::as_slice);
            let max = crate::feed::MAX_ANNOUNCEMENT;
            if let Some(payload) = crate::feed::encode(self.eng.origin, keys, *announced, max) {
                p.cmd("PUBLISH").arg(&self.eng.channel).arg(payload);
            }
        }
        self.exec(&p)
    }
}

impl KvTxn for RedisTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.fetch(&[key.to_vec()])?;
        Ok(self.seen(key))
    }

    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.fetch(keys)?;
        Ok(keys.iter().map(|k| self.seen(k)).collect())
    }

    fn gets_and_follow(&mut self, keys: &[Vec<u8>], follow: &Follow) -> Result<Followed> {
        // A read-write transaction must WATCH the followed key before reading it, which a
        // script cannot do: two round trips there.
        if !self.read_only || keys.is_empty() {
            return crate::follow_in_two_reads(self, keys, follow);
        }
        for k in keys {
            check_key(k)?;
        }
        let mut inv = self.eng.follow_script.prepare_invoke();
        let mut fields = Vec::with_capacity(keys.len());
        for k in keys {
            let (rk, field) = self.eng.location(k);
            inv.key(rk);
            // A packed key's field, marked by a first byte so that it is never empty.
            fields.push(field.map_or_else(Vec::new, |f| [b"h", f].concat()));
        }
        inv.arg(self.eng.rkey(follow.prefix))
            .arg(follow.from + 1)
            .arg(follow.to)
            .arg(if follow.reverse { "1" } else { "0" })
            .arg(follow.suffix);
        for f in &fields {
            inv.arg(f);
        }
        let r = inv.invoke::<Vec<Option<Vec<u8>>>>(self.conn);
        let mut values = r.map_err(|e| self.fail(e))?;
        let followed = if values.len() > keys.len() {
            let v = values.pop().flatten();
            let k = values.last().and_then(|v| follow.key(v.as_deref()?));
            match k {
                // The script read it as a plain key; a packed one is read now.
                Some(k) if self.eng.packed_domain(&k).is_some() => {
                    let v = self.get(&k)?;
                    Some((k, v))
                }
                k => k.map(|k| (k, v)),
            }
        } else {
            None
        };
        Ok((values, followed))
    }

    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if begin >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let domain = scan_domain(self.eng.layout, begin, end);
        if let Some(d) = domain.filter(|d| self.eng.layout.packed(d)) {
            return self.packed_scan(d, begin, end, limit);
        }
        if let (Some(d), true) = (domain, self.read_only) {
            return self.scan_script(d, begin, end, limit);
        }
        if domain.is_some() {
            return Ok(self
                .scans(&[(begin, end, limit)])?
                .pop()
                .unwrap_or_default());
        }
        let pending = self.pending(begin, end);
        let keys = self.keyspace_range(begin, end)?;
        let stored: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| !self.writes.contains_key(k))
            .collect();
        self.fetch(&stored)?;
        Ok(self.merge_scanned(stored, pending, limit))
    }

    fn scans(&mut self, ranges: &[(&[u8], &[u8], usize)]) -> Result<Vec<Scanned>> {
        // Ranges that each lie in one indexed domain, in a read-write transaction: one
        // round trip for all their indexes, one for the values they list; in a read-only
        // one, their scripts in one pipeline. Anything else goes range by range.
        let indexed: Option<Vec<&[u8]>> = ranges
            .iter()
            .map(|(b, e, l)| {
                scan_domain(self.eng.layout, b, e)
                    .filter(|d| b < e && *l > 0 && !self.eng.layout.packed(d))
            })
            .collect();
        if let (Some(domains), true) = (&indexed, self.read_only && ranges.len() > 1) {
            if let Some(scanned) = self.scan_scripts(domains, ranges)? {
                return Ok(scanned);
            }
        }
        let Some(domains) = indexed.filter(|_| !self.read_only) else {
            return ranges.iter().map(|(b, e, l)| self.scan(b, e, *l)).collect();
        };
        let pendings: Vec<_> = ranges.iter().map(|(b, e, _)| self.pending(b, e)).collect();
        let asks: Vec<IndexRange<'_>> = ranges
            .iter()
            .zip(&domains)
            .zip(&pendings)
            .map(|(((begin, end, limit), d), pending)| {
                // Deleted keys may still be in the index: ask enough to fill `limit`.
                let dels = pending.iter().filter(|(_, v)| v.is_none()).count();
                IndexRange {
                    d,
                    begin,
                    end,
                    limit: limit.checked_add(dels).filter(|n| *n < i64::MAX as usize),
                }
            })
            .collect();
        let listed = self.index_ranges(&asks)?;
        let stored: Vec<Vec<u8>> = listed
            .iter()
            .flatten()
            .filter(|k| !self.writes.contains_key(*k))
            .cloned()
            .collect();
        self.fetch(&stored)?;
        Ok(listed
            .into_iter()
            .zip(pendings)
            .zip(ranges)
            .map(|((keys, pending), (_, _, limit))| self.merge_scanned(keys, pending, *limit))
            .collect())
    }

    fn exists(&mut self, begin: &[u8], end: &[u8]) -> Result<bool> {
        if begin >= end {
            return Ok(false);
        }
        let Some(d) = scan_domain(self.eng.layout, begin, end) else {
            return Ok(!self.scan(begin, end, 1)?.is_empty());
        };
        let pending = self.pending(begin, end);
        if self.eng.layout.packed(d) {
            let whole = begin == d && end >= prefix_end(d).as_slice();
            if !whole || !pending.is_empty() {
                return Ok(!self.packed_scan(d, begin, end, 1)?.is_empty());
            }
            // A hash with no field is no key.
            let hk = self.eng.hkey(d);
            let mut p = redis::pipe();
            self.watch(&mut p, [hk.clone()]);
            p.cmd("EXISTS").arg(&hk);
            let (n,): (i64,) = self.query(&p)?;
            return Ok(n > 0);
        }
        if pending.iter().any(|(_, v)| v.is_some()) {
            // Still watch the range: the answer depends on it staying as it is.
            self.index_range(d, begin, end, Some(1))?;
            return Ok(true);
        }
        let keys = self.index_range(d, begin, end, Some(1 + pending.len()))?;
        Ok(keys.iter().any(|k| !self.writes.contains_key(k)))
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        check_key(key)?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        check_key(key)?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }
}

impl KvEngine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        let cur = self.current()?;
        let mut conn = match cur.pool.get() {
            Ok(c) => c,
            Err(e) => {
                if matches!(&e, PoolError::Connect(re) if damage(re) == Damage::Topology)
                    || matches!(e, PoolError::Closed)
                {
                    self.forget(&cur);
                }
                return Err(pool_err(e, &cur.addr));
            }
        };
        let mut tx = RedisTxn {
            eng: self,
            conn: &mut conn,
            addr: &cur.addr,
            read_only,
            watched: HashSet::new(),
            cache: HashMap::new(),
            writes: BTreeMap::new(),
            damage: Damage::None,
            failed: None,
        };
        let res = match body(&mut tx) {
            Ok(()) => tx.commit(),
            // Redis reads are live, not a snapshot: a body that failed on what it read
            // (a dentry whose inode another client just removed gives ENOENT) may have
            // seen two states mixed. If a watched key changed, that outcome is void and
            // the transaction runs again.
            Err(Error::Aborted) => tx.validate().and(Err(Error::Aborted)),
            Err(e) => Err(e),
        };
        let mut damage = tx.damage;
        if damage == Damage::None && !tx.watched.is_empty() {
            // No EXEC ended this attempt (its body failed): the next user of the
            // connection must not inherit its WATCHes.
            if let Err(e) = redis::cmd("UNWATCH").query::<()>(&mut *conn) {
                damage = match self::damage(&e) {
                    Damage::None => Damage::Connection,
                    d => d,
                };
            }
        }
        if damage != Damage::None {
            // Out of the pool: a late reply must never reach the next transaction. The
            // idle ones most likely lost their server too (a restart): new ones are
            // made for the next attempts rather than each failing once.
            conn.discard();
            cur.pool.drop_idle();
        }
        if damage == Damage::Topology {
            self.forget(&cur);
        }
        res
    }

    fn announce_changes(&self, announced: AnnouncedKeys) -> bool {
        let _ = self.announced.set(announced);
        true
    }

    fn follow_changes(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        self.follow(follower)
    }

    fn packs_domains(&self) -> bool {
        true
    }

    fn reset(&self) -> Result<()> {
        let cur = self.current()?;
        let pattern = glob_prefix(&self.prefix);
        {
            let mut conn = cur.pool.get().map_err(|e| pool_err(e, &cur.addr))?;
            let conn: &mut redis::Connection = &mut conn;
            // Keys created during a pass may be missed by SCAN: repeat until a pass
            // finds nothing.
            for _ in 0..10 {
                let mut found = 0;
                scan_match(conn, &pattern, |conn, keys| {
                    found += keys.len();
                    for chunk in keys.chunks(BATCH) {
                        redis::cmd("UNLINK").arg(chunk).query::<i64>(conn)?;
                    }
                    Ok(())
                })
                .map_err(|e| map_err(&e, &cur.addr))?;
                if found == 0 {
                    return Ok(());
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys shaped like a file system's, for the tests: `<inode>/<kind>/<name>`, scanned
    /// by inode and kind; `<inode>/attr` and counters `C…` are never scanned, and chunk 0
    /// of a file is the implicit member of its chunk domain.
    mod keys {
        pub fn inode_prefix(ino: u64) -> Vec<u8> {
            format!("{ino}/").into_bytes()
        }
        pub fn attr(ino: u64) -> Vec<u8> {
            format!("{ino}/attr").into_bytes()
        }
        pub fn dentry_prefix(ino: u64) -> Vec<u8> {
            format!("{ino}/d/").into_bytes()
        }
        pub fn dentry(ino: u64, name: &[u8]) -> Vec<u8> {
            [dentry_prefix(ino).as_slice(), name].concat()
        }
        pub fn xattr(ino: u64, name: &[u8]) -> Vec<u8> {
            [format!("{ino}/x/").as_bytes(), name].concat()
        }
        pub fn chunk_prefix(ino: u64) -> Vec<u8> {
            format!("{ino}/c/").into_bytes()
        }
        pub fn chunk(ino: u64, index: u32) -> Vec<u8> {
            [chunk_prefix(ino), index.to_be_bytes().to_vec()].concat()
        }
    }

    struct TestLayout;

    impl KeyLayout for TestLayout {
        fn domain_len(&self, key: &[u8]) -> Option<usize> {
            let first = key.iter().position(|&b| b == b'/')?;
            let second = key[first + 1..].iter().position(|&b| b == b'/')?;
            Some(first + second + 2)
        }
        fn implicit_member(&self, domain: &[u8]) -> Option<&'static [u8]> {
            domain.ends_with(b"/c/").then_some(&[0u8; 4][..])
        }
    }

    static LAYOUT: TestLayout = TestLayout;

    /// The same keys, with each inode's entries (`<inode>/d/`) packed into one hash.
    struct PackedLayout;

    impl KeyLayout for PackedLayout {
        fn domain_len(&self, key: &[u8]) -> Option<usize> {
            TestLayout.domain_len(key)
        }
        fn implicit_member(&self, domain: &[u8]) -> Option<&'static [u8]> {
            TestLayout.implicit_member(domain)
        }
        fn packed(&self, domain: &[u8]) -> bool {
            domain.ends_with(b"/d/")
        }
    }

    static PACKED: PackedLayout = PackedLayout;

    /// Both layouts, with a name for messages.
    const LAYOUTS: [(&str, &dyn KeyLayout); 2] = [("indexed", &LAYOUT), ("packed", &PACKED)];

    pub(super) fn open(url: &str) -> Result<RedisEngine> {
        RedisEngine::open(url, &LAYOUT)
    }

    /// Runs one raw command on the engine's server.
    fn raw(eng: &RedisEngine, cmd: &redis::Cmd) -> Value {
        let cur = eng.current().unwrap();
        let mut c = cur.pool.get().unwrap();
        cmd.query::<Value>(&mut *c).unwrap()
    }

    #[test]
    fn urls() {
        let u = parse_url("redis://127.0.0.1:6379/1").unwrap();
        assert_eq!(u.hosts, vec![("127.0.0.1".to_string(), 6379)]);
        assert_eq!(
            (u.db.as_str(), u.tls, u.user.clone(), u.password.clone()),
            ("1", false, None, None)
        );
        let u = parse_url("rediss://us%40r:p%3Aw@h1,h2:7001,[::1]:7002/x?prefix=v1&pool-size=4&insecure-skip-verify=true")
            .unwrap();
        assert!(u.tls && u.insecure);
        assert_eq!(u.user.as_deref(), Some("us@r"));
        assert_eq!(u.password.as_deref(), Some("p:w"));
        assert_eq!(
            u.hosts,
            vec![
                ("h1".into(), 6379),
                ("h2".into(), 7001),
                ("::1".into(), 7002)
            ]
        );
        assert_eq!(
            (u.db.as_str(), u.prefix.as_deref(), u.pool_size),
            ("x", Some(b"v1".as_slice()), 4)
        );
        let u = parse_url("redis://:pw@s1,s2:26380/3?sentinel=mymaster").unwrap();
        assert_eq!(u.hosts, vec![("s1".into(), 26379), ("s2".into(), 26380)]);
        assert_eq!(
            (u.sentinel.as_deref(), u.password.as_deref(), u.user),
            (Some("mymaster"), Some("pw"), None)
        );
        assert_eq!(parse_url("redis://h").unwrap().db, "0");
        for bad in [
            "redis://h:port/1",
            "redis://h/1?nosuch=1",
            "redis://h/1?tls-ca-cert-file=x",
            "redis:///1",
            "http://h/1",
            "redis://h/1?pool-size=0",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.contains("invalid Redis META-URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn domains() {
        let l = &LAYOUT;
        // A range inside one domain is served by its index, even from a resumed scan.
        let dp = keys::dentry_prefix(77);
        assert_eq!(scan_domain(l, &dp, &prefix_end(&dp)), Some(dp.as_slice()));
        let mut after = keys::dentry(77, b"name");
        after.push(0);
        assert_eq!(
            scan_domain(l, &after, &prefix_end(&dp)),
            Some(dp.as_slice())
        );
        assert_eq!(domain_of(l, &keys::dentry(77, b"x")), Some(dp.as_slice()));
        // Unindexed keys, and ranges that span domains, fall back.
        assert_eq!(domain_of(l, &keys::attr(77)), None);
        let ip = keys::inode_prefix(77);
        assert_eq!(scan_domain(l, &ip, &prefix_end(&ip)), None);
        assert_eq!(scan_domain(l, b"", b"\xff"), None);
        // The implicit member, when the range holds it.
        let cp = keys::chunk_prefix(77);
        assert_eq!(
            implicit_key(l, &cp, &cp, &prefix_end(&cp)),
            Some(keys::chunk(77, 0))
        );
        assert_eq!(
            implicit_key(l, &cp, &keys::chunk(77, 1), &prefix_end(&cp)),
            None
        );
        assert_eq!(implicit_key(l, &dp, &dp, &prefix_end(&dp)), None);
        // Bounds.
        assert_eq!(
            lex_bounds(&dp, &dp, &prefix_end(&dp)),
            (b"[".to_vec(), b"+".to_vec())
        );
        let mut end = dp.clone();
        end.extend_from_slice(b"m");
        assert_eq!(
            lex_bounds(&dp, &after, &end),
            ([b"[name".as_slice(), &[0]].concat(), b"(m".to_vec())
        );
    }

    #[test]
    fn globs() {
        assert_eq!(
            glob_prefix(b"{1}a*?[x]\\"),
            b"{1}a\\*\\?\\[x\\]\\\\*".to_vec()
        );
        assert_eq!(glob_prefix(b""), b"*".to_vec());
        assert_eq!(common_prefix(b"abc", b"abd"), b"ab");
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let e = open("redis://127.0.0.1:1/1").err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("cannot connect to Redis at 127.0.0.1:1"),
            "{msg}"
        );
        assert!(e.is_temporary(), "{msg}");
    }

    /// The URL of a test server (scripts/start-redis.sh), or None to skip.
    pub(super) fn server() -> Option<String> {
        let url = std::env::var("NECTAR_TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("skipped: NECTAR_TEST_REDIS_URL is not set");
        }
        url
    }

    /// The test server's URL with another database and query.
    pub(super) fn with_db(url: &str, db: &str) -> String {
        let base = url.split('?').next().unwrap_or(url);
        let host = base.rsplit_once('/').map_or(base, |(h, _)| h);
        format!("{host}/{db}")
    }

    #[test]
    fn bad_inputs_on_a_real_server() {
        let Some(url) = server() else { return };
        // A database the server does not have.
        let e = open(&with_db(&url, "999")).err().unwrap().to_string();
        assert!(e.contains("no such database"), "{e}");
        // A user that does not exist / a wrong password.
        let base = with_db(&url, "1");
        let bad = base.replacen("redis://", "redis://nobody:wrong@", 1);
        let e = open(&bad).err().unwrap();
        assert!(
            e.to_string().contains("refused the user name or password"),
            "{e}"
        );
        assert!(!e.is_temporary());
        // A real ACL user with the right and a wrong password.
        let admin = open(&with_db(&url, "14")).unwrap();
        let acl = |args: &[&str]| {
            raw(&admin, redis::cmd("ACL").arg(args));
        };
        acl(&["SETUSER", "nectar-test", "on", ">s3cret", "~*", "+@all"]);
        let good = with_db(&url, "14").replacen("redis://", "redis://nectar-test:s3cret@", 1);
        let wrong = with_db(&url, "14").replacen("redis://", "redis://nectar-test:nope@", 1);
        let ok = open(&good).and_then(|e| {
            let kv = crate::Kv::new(Box::new(e));
            kv.reset()?;
            kv.txn(|tx| tx.set(b"Cx", b"1"))
        });
        let e = open(&wrong).err().unwrap().to_string();
        acl(&["DELUSER", "nectar-test"]);
        ok.unwrap();
        assert!(e.contains("refused the user name or password"), "{e}");
    }

    /// A value naming another key (`<ino>/attr`, its digits reversed) is followed in the same
    /// script by a read-only transaction, and in two reads by a read-write one.
    #[test]
    fn following_a_value_to_its_key() {
        let Some(url) = server() else { return };
        for (name, layout) in LAYOUTS {
            let url = format!("{}?prefix=follow-test-{name}:", with_db(&url, "15"));
            following_a_value_to_its_key_in(&url, layout);
        }
    }

    fn following_a_value_to_its_key_in(url: &str, layout: &'static dyn KeyLayout) {
        let kv: crate::Kv = crate::Kv::new(Box::new(RedisEngine::open(url, layout).unwrap()));
        kv.reset().unwrap();
        kv.txn(|tx| {
            tx.set(&keys::dentry(1, b"a"), b"x87")?;
            tx.set(&keys::dentry(1, b"short"), b"x")?;
            tx.set(&keys::attr(78), b"attr of 78")
        })
        .unwrap();
        let follow = Follow {
            prefix: b"",
            from: 1,
            to: 3,
            reverse: true,
            suffix: b"/attr",
        };
        let asked = |name: &[u8]| vec![keys::attr(1), keys::dentry(1, name)];
        for read_only in [true, false] {
            let run = |name: &[u8]| {
                let body = |tx: &mut dyn KvTxn| tx.gets_and_follow(&asked(name), &follow);
                if read_only {
                    kv.read(body).unwrap()
                } else {
                    kv.txn(body).unwrap()
                }
            };
            let (values, followed) = run(b"a");
            assert_eq!(values, vec![None, Some(b"x87".to_vec())]);
            assert_eq!(
                followed,
                Some((keys::attr(78), Some(b"attr of 78".to_vec())))
            );
            assert_eq!(run(b"short").1, None, "too short to follow");
            assert_eq!(run(b"none"), (vec![None, None], None));
        }
        kv.reset().unwrap();
    }

    #[test]
    fn scans_conflicts_and_fallbacks() {
        let Some(url) = server() else { return };
        for (name, layout) in LAYOUTS {
            let url = format!("{}?prefix=scan-test-{name}:", with_db(&url, "15"));
            scans_conflicts_and_fallbacks_in(&url, layout);
        }
    }

    fn scans_conflicts_and_fallbacks_in(url: &str, layout: &'static dyn KeyLayout) {
        let open = |url: &str| RedisEngine::open(url, layout);
        let kv = crate::Kv::new(Box::new(open(url).unwrap()));
        kv.reset().unwrap();
        let ino = 77;
        kv.txn(|tx| {
            for n in ["b", "a", "c"] {
                tx.set(&keys::dentry(ino, n.as_bytes()), n.as_bytes())?;
            }
            tx.set(&keys::attr(ino), b"attr")?;
            tx.set(&keys::xattr(ino, b"user.x"), b"1")?;
            tx.set(b"Cctr", b"0")
        })
        .unwrap();
        let dp = keys::dentry_prefix(ino);
        let names = |rows: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
            rows.into_iter().map(|(_, v)| v).collect()
        };
        // Read-only (script) and read-write (index + MGET) scans agree.
        let ro = kv.read(|tx| tx.scan(&dp, &prefix_end(&dp), 10)).unwrap();
        let rw = kv.txn(|tx| tx.scan(&dp, &prefix_end(&dp), 10)).unwrap();
        assert_eq!(
            names(ro.clone()),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(ro, rw);
        assert_eq!(
            names(kv.read(|tx| tx.scan(&dp, &prefix_end(&dp), 2)).unwrap()).len(),
            2
        );
        // Own writes overlay the index, deletes included, limit respected.
        let seen = kv
            .txn(|tx| {
                tx.delete(&keys::dentry(ino, b"a"))?;
                tx.set(&keys::dentry(ino, b"aa"), b"aa")?;
                tx.scan(&dp, &prefix_end(&dp), 2)
            })
            .unwrap();
        assert_eq!(names(seen), vec![b"aa".to_vec(), b"b".to_vec()]);
        assert!(kv.txn(|tx| tx.exists(&dp, &prefix_end(&dp))).unwrap());
        // A range over the whole inode spans domains: the keyspace walk finds everything,
        // unindexed attr included.
        let ip = keys::inode_prefix(ino);
        let all = kv.txn(|tx| tx.scan(&ip, &prefix_end(&ip), 100)).unwrap();
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(
            kv.read(|tx| tx.scan(&ip, &prefix_end(&ip), 100)).unwrap(),
            all
        );
        assert_eq!(kv.read(|tx| tx.scan(b"", b"\xff", 100)).unwrap().len(), 6);
        // Several ranges in one batch read what each scan reads, own writes included;
        // the chunk domain holds its implicit member.
        kv.txn(|tx| {
            tx.set(&keys::chunk(ino, 0), b"c0")?;
            tx.set(&keys::chunk(ino, 3), b"c3")
        })
        .unwrap();
        let (xp, cp) = (keys::xattr(ino, b""), keys::chunk_prefix(ino));
        let (xe, ce, de) = (prefix_end(&xp), prefix_end(&cp), prefix_end(&dp));
        let (batched, one_by_one) = kv
            .txn(|tx| {
                tx.delete(&keys::chunk(ino, 3))?;
                tx.set(&keys::xattr(ino, b"user.y"), b"2")?;
                let ranges = [
                    (&xp[..], &xe[..], 10),
                    (&cp[..], &ce[..], 2),
                    (&dp[..], &de[..], 2),
                ];
                let batched = tx.scans(&ranges)?;
                let one_by_one: Vec<_> = ranges
                    .iter()
                    .map(|(b, e, l)| tx.scan(b, e, *l))
                    .collect::<Result<_>>()?;
                Ok((batched, one_by_one))
            })
            .unwrap();
        assert_eq!(batched, one_by_one);
        assert_eq!(batched[0].len(), 2, "{:?}", batched[0]);
        assert_eq!(batched[1], vec![(keys::chunk(ino, 0), b"c0".to_vec())]);
        assert_eq!(
            names(batched[2].clone()),
            vec![b"aa".to_vec(), b"b".to_vec()]
        );
        // A read-only batch (one script call for all ranges) reads the same, whether
        // the server holds the script or not (it was flushed: the batch goes range by
        // range once, and loads it).
        let ro_ranges = [(&xp[..], &xe[..], 10), (&cp[..], &ce[..], 2)];
        let expected: Vec<Scanned> = kv
            .read(|tx| {
                ro_ranges
                    .iter()
                    .map(|(b, e, l)| tx.scan(b, e, *l))
                    .collect()
            })
            .unwrap();
        assert_eq!(expected[1].len(), 1, "chunk 0 only: {expected:?}");
        let plain = url.split('?').next().unwrap_or(url);
        let mut admin = redis::Client::open(plain)
            .unwrap()
            .get_connection()
            .unwrap();
        for _ in 0..2 {
            redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query::<()>(&mut admin)
                .unwrap();
            for _ in 0..2 {
                assert_eq!(kv.read(|tx| tx.scans(&ro_ranges)).unwrap(), expected);
            }
        }
        kv.txn(|tx| {
            tx.delete(&keys::chunk(ino, 0))?;
            tx.delete(&keys::xattr(ino, b"user.y"))
        })
        .unwrap();
        // Scans inside the domain after a key, as a listing resumes.
        let mut after = keys::dentry(ino, b"aa");
        after.push(0);
        let rest = kv.read(|tx| tx.scan(&after, &prefix_end(&dp), 10)).unwrap();
        assert_eq!(names(rest.clone()), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(
            kv.txn(|tx| tx.scan(&after, &prefix_end(&dp), 10)).unwrap(),
            rest
        );
        let first = kv
            .read(|tx| tx.scan(&dp, &keys::dentry(ino, b"b"), 10))
            .unwrap();
        assert_eq!(names(first), vec![b"aa".to_vec()]);
        // Deleting everything empties the index.
        kv.txn(|tx| {
            for (k, _) in tx.scan(&dp, &prefix_end(&dp), 100)? {
                tx.delete(&k)?;
            }
            Ok(())
        })
        .unwrap();
        assert!(!kv.read(|tx| tx.exists(&dp, &prefix_end(&dp))).unwrap());

        // An insert into a scanned range makes the scanning transaction conflict.
        let eng = open(url).unwrap();
        let other = crate::Kv::new(Box::new(open(url).unwrap()));
        let mut tries = 0;
        let r = eng.attempt(
            &mut |tx| {
                tries += 1;
                assert!(!tx.exists(&dp, &prefix_end(&dp))?);
                other.txn(|o| o.set(&keys::dentry(ino, b"new"), b"x"))?;
                tx.set(&keys::dentry(ino, b"mine"), b"y")
            },
            false,
        );
        assert!(matches!(r, Err(Error::Conflict)), "{r:?}");
        assert_eq!(tries, 1);
        assert!(kv
            .read(|tx| tx.get(&keys::dentry(ino, b"mine")))
            .unwrap()
            .is_none());
        // A changed value read by a transaction conflicts, even when it only read.
        let r = eng.attempt(
            &mut |tx| {
                tx.get(b"Cctr")?;
                other.txn(|o| o.set(b"Cctr", b"1"))?;
                Ok(())
            },
            false,
        );
        assert!(matches!(r, Err(Error::Conflict)), "{r:?}");
        // Reading one key of a domain conflicts with a write of another one only when the
        // domain is packed (its hash is watched whole).
        let r = eng.attempt(
            &mut |tx| {
                tx.get(&keys::dentry(ino, b"one"))?;
                other.txn(|o| o.set(&keys::dentry(ino, b"two"), b"2"))?;
                tx.set(&keys::dentry(ino, b"one"), b"1")
            },
            false,
        );
        assert_eq!(
            matches!(r, Err(Error::Conflict)),
            layout.packed(&dp),
            "{r:?}"
        );
        // Reserved keys are refused.
        assert!(kv.txn(|tx| tx.set(b"\xffx", b"")).is_err());
        assert!(kv.txn(|tx| tx.set(b"\xfex", b"")).is_err());
        kv.reset().unwrap();
        assert!(kv.read(|tx| tx.scan(b"", b"\xff", 100)).unwrap().is_empty());
    }

    /// Entries stored one key each (an older version) are moved into their hashes by
    /// the first client that packs them, once, and read the same afterwards.
    #[test]
    fn old_volumes_are_packed_when_opened() {
        let Some(url) = server() else { return };
        let url = format!("{}?prefix=pack-test:", with_db(&url, "15"));
        let old = RedisEngine::open(&url, &LAYOUT).unwrap();
        let old_kv = crate::Kv::new(Box::new(old));
        old_kv.reset().unwrap();
        old_kv
            .txn(|tx| {
                for i in 0..600u32 {
                    tx.set(
                        &keys::dentry(5, format!("f{i:04}").as_bytes()),
                        &i.to_be_bytes(),
                    )?;
                }
                tx.set(&keys::dentry(6, b"only"), b"x")?;
                tx.set(&keys::xattr(5, b"user.a"), b"kept")?;
                tx.set(&keys::attr(5), b"attr")
            })
            .unwrap();
        // Until now no client packed anything: an older version left no mark.
        let probe = RedisEngine::open(&url, &LAYOUT).unwrap();
        raw(&probe, redis::cmd("DEL").arg(probe.zkey(LAYOUT_MARK)));
        let before: Vec<(Vec<u8>, Vec<u8>)> =
            old_kv.read(|tx| tx.scan(b"", b"\xfd", 1000)).unwrap();
        assert_eq!(before.len(), 603);

        let kv = crate::Kv::new(Box::new(RedisEngine::open(&url, &PACKED).unwrap()));
        let after = kv.read(|tx| tx.scan(b"", b"\xfd", 1000)).unwrap();
        assert_eq!(after, before);
        let dp = keys::dentry_prefix(5);
        let listed = kv.txn(|tx| tx.scan(&dp, &prefix_end(&dp), 1000)).unwrap();
        assert_eq!(listed.len(), 600);
        assert_eq!(listed[17].1, 17u32.to_be_bytes());
        // Stored as fields now: no entry key, no index, one hash per directory.
        let exists = |k: Vec<u8>| raw(&probe, redis::cmd("EXISTS").arg(k)) == Value::Int(1);
        assert!(!exists(probe.rkey(&keys::dentry(5, b"f0000"))));
        assert!(!exists(probe.zkey(&dp)));
        assert!(exists(probe.hkey(&dp)));
        assert!(exists(probe.zkey(LAYOUT_MARK)));
        // A second client finds the mark and moves nothing; the entries stay.
        let again = crate::Kv::new(Box::new(RedisEngine::open(&url, &PACKED).unwrap()));
        assert_eq!(
            again.read(|tx| tx.scan(b"", b"\xfd", 1000)).unwrap(),
            before
        );
        kv.reset().unwrap();
    }
}
