//! `etcd://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/PREFIX]`: metadata in etcd v3.
//!
//! Transactions are optimistic, checked by etcd itself at commit. Every read of an
//! attempt is served at one store revision R, the revision of its first read, so the body
//! sees a consistent snapshot (never half of another client's commit). Writes are
//! buffered in the attempt and overlaid on its own later reads and scans. The commit is a
//! single etcd `Txn`: its compares say that nothing the attempt read has changed since R
//! — every key read still has the mod revision seen (0 for a key that was missing), and
//! every scanned range holds no key modified or created after R (a range compare
//! `mod_revision < R+1`, which catches inserts; a deletion inside a scanned range is
//! caught by the per-key compare of the key that was returned) — and its success ops are
//! the buffered puts and deletes. A failed compare is [`Error::Conflict`] and the `Kv`
//! runner retries; etcd applies a `Txn` all or nothing, so nothing is half-written. An
//! attempt that read but wrote nothing commits nothing: its snapshot was consistent.
//! Read-only transactions just read at one revision. Scans page through the range with
//! `limit` and resume after the last key, merging the buffered writes in key order.
//!
//! etcd caps one transaction at `--max-txn-ops` compares and as many writes (128 by
//! default) and one request at `--max-request-bytes` (1.5 MiB by default). It refuses a
//! bigger `Txn` whole, before evaluating anything; such an attempt fails with a permanent
//! error that names the limit and the server flag, and nothing of it is written.
//! Splitting it would break atomicity, so it is never split.
//!
//! Keys are JuiceFS's, under JuiceFS's etcd prefix — the URL's path followed by the byte
//! 0xFD — so a volume formatted by either system can be used by the other. Values are
//! stored as they are. Query options: none yet (TLS is not supported by this build; an
//! option JuiceFS uses for TLS is refused rather than silently ignored). A user without
//! a password in the URL takes the password from the environment variable
//! `META_PASSWORD`.
//!
//! A commit whose answer is lost (the connection drops, or the deadline passes, after etcd
//! got the `Txn`) may or may not have been applied; it is reported as a temporary error and
//! the runner runs the body again on fresh reads, as JuiceFS does. A body that is not
//! idempotent against its own earlier success (a counter bump) may then apply twice.
//!
//! The client (etcd-client, on tonic) is async, and the calling thread is never an async
//! task (see docs/ARCHITECTURE.md). A transaction takes a *lane* from a pool
//! ([`crate::pool`]): a connection of its own with a single-threaded runtime that the
//! calling thread drives while it waits, so a round trip is a write and a read on that
//! thread. Connections driven by a shared multi-threaded runtime cost two thread
//! hand-offs per round trip, which were half of the client's CPU per create. A lane is
//! polled only while a transaction uses it; one that failed is dropped, not reused. The
//! change feed and the engine's own requests (the first probe, reset) use a shared
//! client on a small multi-threaded runtime. Every request has a deadline, so a dead
//! server surfaces as a temporary error instead of a hang.

use crate::error::{Error, Result};
use crate::pool::{Connect, Pool, PoolError, POOL_WAIT};
use crate::shared::causes;
use crate::{prefix_end, AnnouncedKeys, FeedFollower, KvEngine, KvTxn, TxnBody};

mod feed;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KeyValue,
    KvClient, Txn, TxnOp, TxnOpResponse,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

/// JuiceFS's etcd client stores every key under `u.Path + "\xFD"` (pkg/meta/tkv_etcd.go,
/// `newEtcdClient`: `var prefix string = u.Path + "\xFD"`, then `withPrefix`), where
/// `u.Path` is the decoded path of the URL including its leading slash (empty when the
/// URL has none), and pkg/meta/tkv_prefix.go's `realKey` prepends that prefix to each
/// key. We do the same byte for byte.
const PREFIX_END_BYTE: u8 = 0xFD;

/// etcd's client port, used when a host in the URL has none (as JuiceFS does).
const DEFAULT_PORT: u16 = 2379;

/// Deadline of one request. Long enough for a big transaction on a busy server, short
/// enough that a hung connection becomes a retried temporary error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of the TCP connection to an etcd member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of the first contact when opening the engine.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per page of a scan: bounds a response's size (values are small, at most a few
/// KiB for a chunk's slice list) while keeping round trips few.
const SCAN_PAGE: usize = 1000;

/// Keys per read-only `Txn` of a batch get; below etcd's default `--max-txn-ops` (128).
const GETS_BATCH: usize = 100;

/// etcd's default limits, quoted in messages.
const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Responses larger than tonic's default 4 MiB would fail to decode; a page of scan can
/// exceed that when values are large, so allow much more.
const MAX_DECODE: usize = 256 << 20;

/// Lanes kept at most: transactions running at once beyond this wait for one.
const MAX_LANES: usize = 32;

pub struct EtcdEngine {
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
    kv: KvClient,
    /// Connections of the transactions.
    lanes: Pool<LaneConnector>,
    /// Keeps the connection (and its auth token refresher) alive; the change feed
    /// watches through it.
    client: Client,
    /// Which keys the change feed reports (all when unset).
    announced: std::sync::OnceLock<AnnouncedKeys>,
    /// Revisions of this client's commits, which its feed does not report.
    own: feed::OwnRevisions,
    /// The volume's key prefix: the URL's path + 0xFD.
    prefix: Vec<u8>,
    /// The endpoints, for messages.
    hosts: String,
}

/// The parts of an etcd META-URL.
#[derive(Debug, PartialEq)]
struct EtcdUrl {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    prefix: Vec<u8>,
}

/// Decodes `%XX` escapes of the URL's `what` (as Go's `url.Parse`, which JuiceFS uses).
fn percent_decode(s: &str, what: &str) -> Result<Vec<u8>> {
    crate::shared::percent_decode(s, false).ok_or_else(|| {
        // Never quote a password back.
        let shown = if what == "password" {
            String::new()
        } else {
            format!(" {s:?}")
        };
        Error::Invalid(format!(
            "invalid etcd META-URL: bad %-escape in the {what}{shown}"
        ))
    })
}

/// Parses the part of the URL after `etcd://` the way JuiceFS does (Go's `url.Parse`
/// of `"http://" + rest`): user info up to the last `@` of the authority, hosts separated
/// by commas, the decoded path (with its leading `/`) as the key prefix.
fn parse_url(rest: &str) -> Result<EtcdUrl> {
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    // No option is taken yet, so the first one present is an error.
    if let Some(pair) = query.split('&').find(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        match name {
            "cacert" | "cert" | "key" | "server-name" | "insecure-skip-verify" => {
                return Err(Error::Invalid(format!(
                    "etcd META-URL option {name:?}: TLS connections to etcd are not supported by this build of nectar; use a plain http etcd endpoint"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown etcd META-URL option {name:?}: etcd URLs take no options (etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/PREFIX)"
                )))
            }
        }
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let user = match userinfo {
        None => None,
        Some(u) => {
            let (name, pass) = match u.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (u, None),
            };
            let name = String::from_utf8(percent_decode(name, "user name")?).map_err(|_| {
                Error::Invalid("invalid etcd META-URL: the user name is not UTF-8".into())
            })?;
            let pass = match pass {
                Some(p) => String::from_utf8(percent_decode(p, "password")?).map_err(|_| {
                    Error::Invalid("invalid etcd META-URL: the password is not UTF-8".into())
                })?,
                // As for every engine, the password may stay out of the URL (and so out
                // of process listings).
                None => std::env::var("META_PASSWORD").unwrap_or_default(),
            };
            if name.is_empty() {
                return Err(Error::Invalid(
                    "invalid etcd META-URL: empty user name before '@'".into(),
                ));
            }
            Some((name, pass))
        }
    };
    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err(Error::Invalid(format!(
                "invalid etcd META-URL: empty host in {hosts:?}; use etcd://HOST:2379[,HOST:2379...]/PREFIX"
            )));
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 literal.
        let has_port = match host.rfind(':') {
            Some(i) => !host[i..].contains(']'),
            None => false,
        };
        let host = if has_port {
            let port = &host[host.rfind(':').map_or(0, |i| i + 1)..];
            if port.parse::<u16>().is_err() {
                return Err(Error::Invalid(format!(
                    "invalid etcd META-URL: bad port {port:?} in host {host:?}"
                )));
            }
            host.to_string()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        endpoints.push(format!("http://{host}"));
    }
    let mut prefix = percent_decode(path, "path")?;
    prefix.push(PREFIX_END_BYTE);
    Ok(EtcdUrl {
        endpoints,
        user,
        prefix,
    })
}

/// Why etcd refused a request, as an engine error: temporary when waiting may help.
fn map_err(e: etcd_client::Error, hosts: &str) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message();
            if msg.contains("too many operations in txn request") {
                return too_many_ops(None);
            }
            if msg.contains("request is too large") || msg.contains("larger than max") {
                return too_large(None);
            }
            if msg.contains("authentication failed") {
                return Error::engine(
                    format!("etcd at {hosts} refused the user name or password ({msg}); check the USER:PASSWORD@ of the META-URL (or META_PASSWORD, used when the URL has a user but no password)"),
                    false,
                );
            }
            if msg.contains("user name is empty")
                || msg.contains("user name not found")
                || msg.contains("permission denied")
            {
                return Error::engine(
                    format!("etcd at {hosts} denied access ({msg}): etcd has authentication enabled; put USER:PASSWORD@ in the META-URL and grant that user read/write on the volume's prefix"),
                    false,
                );
            }
            if msg.contains("database space exceeded") {
                return Error::Full(
                    format!("etcd at {hosts}: the database is full ({msg}); compact and defragment it, raise --quota-backend-bytes, then run `etcdctl alarm disarm`"),
                );
            }
            if msg.contains("required revision has been compacted") {
                return Error::engine(format!("etcd at {hosts}: {msg}"), true);
            }
            let temporary = matches!(
                s.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::ResourceExhausted
                    | Code::Unknown
            ) || msg.contains("leader")
                || msg.contains("timed out")
                || msg.contains("too many requests")
                || msg.contains("auth token");
            if s.code() == Code::Unavailable {
                return Error::engine(
                    format!(
                        "cannot reach etcd at {hosts}: {}; is the server running and listening there?",
                        causes(msg.to_string(), std::error::Error::source(&s))
                    ),
                    true,
                );
            }
            Error::engine(format!("etcd at {hosts}: {msg}"), temporary)
        }
        E::TransportError(t) => Error::engine(
            format!(
                "cannot reach etcd at {hosts}: {}; is the server running and listening there?",
                causes(t.to_string(), std::error::Error::source(&t))
            ),
            true,
        ),
        E::IoError(io) => Error::engine(format!("etcd at {hosts}: {io}"), true),
        E::InvalidUri(u) => Error::Invalid(format!("invalid etcd endpoint in {hosts}: {u}")),
        other => Error::engine(format!("etcd at {hosts}: {other}"), false),
    }
}

fn too_many_ops(counts: Option<(usize, usize)>) -> Error {
    let what = match counts {
        Some((cmps, ops)) => format!(" ({cmps} compares, {ops} writes)"),
        None => String::new(),
    };
    Error::engine(
        format!(
            "etcd refused a metadata transaction{what}: more operations than the server allows in one transaction (--max-txn-ops, {DEFAULT_MAX_TXN_OPS} by default); nothing of it was written. Start every etcd member with a larger --max-txn-ops (e.g. 1024)"
        ),
        false,
    )
}

fn too_large(bytes: Option<usize>) -> Error {
    let what = match bytes {
        Some(b) => format!(" of about {b} bytes"),
        None => String::new(),
    };
    Error::engine(
        format!(
            "etcd refused a metadata transaction{what}: larger than the server accepts in one request (--max-request-bytes, 1.5 MiB by default); nothing of it was written. Start every etcd member with a larger --max-request-bytes (e.g. 10485760)"
        ),
        false,
    )
}

impl EtcdEngine {
    /// Connects to the etcd cluster named by `rest`, the part of the URL after
    /// `etcd://`, and checks that it answers.
    pub fn open(rest: &str) -> Result<Self> {
        let url = parse_url(rest)?;
        let hosts = url
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",");
        let rt = crate::shared::engine_runtime("etcd")?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // Tokens expire (5 minutes by default): re-authenticate instead of failing.
            .with_auto_token_refresh(true);
        if let Some((name, pass)) = &url.user {
            opts = opts.with_user(name.clone(), pass.clone());
        }
        let lanes = LaneConnector {
            endpoints: url.endpoints.clone(),
            // Lanes are polled only while in use, so they send no keep-alive pings.
            opts: opts.clone(),
            hosts: hosts.clone(),
        };
        // The shared client is always polled: it keeps its connection (the feed's watch)
        // alive.
        let opts = opts.with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let (client, kv) = rt.block_on(connect(&url.endpoints, opts, &hosts))?;
        let engine = EtcdEngine {
            rt: Some(rt),
            kv,
            lanes: Pool::new(lanes, MAX_LANES),
            client,
            announced: std::sync::OnceLock::new(),
            own: Default::default(),
            prefix: url.prefix,
            hosts,
        };
        // Fail now, with a clear message, rather than after the first transaction's
        // retries: the server may be down, or require a user.
        let probe = GetOptions::new().with_count_only();
        let mut kv = engine.kv.clone();
        let key = engine.full(b"setting");
        engine.call(async move { kv.get(key, Some(probe)).await })?;
        Ok(engine)
    }

    /// The etcd key of a volume key.
    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// Runs one request on the engine's shared runtime, with a deadline.
    fn call<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::engine("etcd: the engine is shut down", false))?;
        run(rt, &self.hosts, fut)
    }
}

/// Connects a client to `endpoints` (authenticating when `opts` has a user, which is
/// then the first contact) and makes its KV client.
async fn connect(
    endpoints: &[String],
    opts: ConnectOptions,
    hosts: &str,
) -> Result<(Client, KvClient)> {
    let client = tokio::time::timeout(OPEN_TIMEOUT, Client::connect(endpoints, Some(opts)))
        .await
        .map_err(|_| {
            Error::engine(
                format!("cannot reach etcd at {hosts} within {OPEN_TIMEOUT:?}; is the server running and listening there?"),
                true,
            )
        })?
        .map_err(|e| map_err(e, hosts))?;
    let kv = client
        .kv_client()
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(MAX_DECODE);
    Ok((client, kv))
}

/// Blocks on one request in `rt`, with a deadline.
fn run<T>(
    rt: &tokio::runtime::Runtime,
    hosts: &str,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match rt.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, fut).await }) {
        Ok(r) => r.map_err(|e| map_err(e, hosts)),
        Err(_) => Err(Error::engine(
            format!(
                "etcd at {hosts} did not answer within {REQUEST_TIMEOUT:?}; is the server running and listening there?"
            ),
            true,
        )),
    }
}

/// Dropping a runtime blocks, which panics inside an async context; an engine or a lane
/// may be dropped anywhere, so its runtime winds down in the background.
fn shut_down(rt: &mut Option<tokio::runtime::Runtime>) {
    if let Some(rt) = rt.take() {
        rt.shutdown_background();
    }
}

impl Drop for EtcdEngine {
    fn drop(&mut self) {
        self.lanes.close();
        shut_down(&mut self.rt);
    }
}

/// A transaction's connection: a client whose single-threaded runtime the transaction's
/// thread drives while it waits for an answer.
struct Lane {
    kv: KvClient,
    /// Keeps the connection (and its token refresher) alive.
    _client: Client,
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        shut_down(&mut self.rt);
    }
}

/// Opens [`Lane`]s.
struct LaneConnector {
    endpoints: Vec<String>,
    opts: ConnectOptions,
    hosts: String,
}

impl Connect for LaneConnector {
    type Conn = Lane;
    type Error = Error;

    fn connect(&self) -> Result<Lane> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::engine(format!("cannot start an etcd client runtime: {e}"), false)
            })?;
        let (client, kv) = rt.block_on(connect(&self.endpoints, self.opts.clone(), &self.hosts))?;
        Ok(Lane {
            kv,
            _client: client,
            rt: Some(rt),
        })
    }
}

/// One attempt of a transaction.
struct EtcdTxn<'a> {
    eng: &'a EtcdEngine,
    lane: &'a Lane,
    /// A request failed in a way that may have left the lane's connection broken.
    broken: bool,
    read_only: bool,
    /// The revision every read is served at; 0 until the first read.
    rev: i64,
    /// Keys read (volume keys, without the prefix): mod revision (0 when missing) and
    /// value. Doubles as a cache, since a re-read at `rev` returns the same.
    seen: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>,
    /// Ranges scanned, [begin, end) in volume keys, all read at `rev`.
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Buffered writes: `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl EtcdTxn<'_> {
    /// Runs one request on the lane, with a deadline.
    fn call<T, F>(&mut self, request: impl FnOnce(KvClient) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let rt = self.lane.rt.as_ref().expect("present until dropped");
        let result = run(rt, &self.eng.hosts, request(self.lane.kv.clone()));
        if matches!(result, Err(Error::Unavailable(_))) {
            self.broken = true;
        }
        result
    }

    fn read_opts(&self) -> GetOptions {
        if self.rev > 0 {
            GetOptions::new().with_revision(self.rev)
        } else {
            GetOptions::new()
        }
    }

    /// Pins the attempt's revision to that of its first response.
    fn pin(&mut self, header_rev: Option<i64>) -> Result<()> {
        if self.rev == 0 {
            self.rev = header_rev
                .filter(|r| *r > 0)
                .ok_or_else(|| Error::engine("etcd: a response without a revision", true))?;
        }
        Ok(())
    }

    fn strip<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        key.strip_prefix(self.eng.prefix.as_slice()).ok_or_else(|| {
            Error::Corrupt(format!(
                "etcd returned a key outside the volume's prefix: {key:?}"
            ))
        })
    }

    fn remember(&mut self, key: &[u8], kv: Option<&KeyValue>) {
        if !self.read_only {
            self.seen.entry(key.to_vec()).or_insert_with(|| match kv {
                Some(kv) => (kv.mod_revision(), Some(kv.value().to_vec())),
                None => (0, None),
            });
        }
    }

    /// One page of the remote range [begin, end) at the attempt's revision.
    fn fetch_page(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<GetResponse> {
        let opts = self
            .read_opts()
            .with_range(self.eng.full(end))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let key = self.eng.full(begin);
        let resp = self.call(|mut kv| async move { kv.get(key, Some(opts)).await })?;
        self.pin(resp.header().map(|h| h.revision()))?;
        Ok(resp)
    }

    /// Builds and sends the commit `Txn`.
    fn commit(&mut self) -> Result<()> {
        if self.writes.is_empty() {
            // Every read came from one consistent revision; there is nothing to check.
            return Ok(());
        }
        let mut ranges = std::mem::take(&mut self.ranges);
        ranges.sort();
        let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
        for (b, e) in ranges {
            match merged.last_mut() {
                Some(last) if b <= last.1 => {
                    if e > last.1 {
                        last.1 = e;
                    }
                }
                _ => merged.push((b, e)),
            }
        }
        let covered = |k: &[u8]| {
            let i = merged.partition_point(|(b, _)| b.as_slice() <= k);
            i > 0 && k < merged[i - 1].1.as_slice()
        };
        let mut cmps = Vec::new();
        // Nothing in a scanned range was modified or created after the snapshot.
        for (b, e) in &merged {
            cmps.push(
                Compare::mod_revision(self.eng.full(b), CompareOp::Less, self.rev + 1)
                    .with_range(self.eng.full(e)),
            );
        }
        // Every key read is as it was; a key read as missing inside a scanned range is
        // already covered by that range's compare.
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_by(|a, b| a.0.cmp(b.0));
        let mut bytes = 0;
        for (k, (modrev, _)) in seen {
            if *modrev == 0 && covered(k) {
                continue;
            }
            bytes += self.eng.prefix.len() + k.len() + 16;
            cmps.push(Compare::mod_revision(
                self.eng.full(k),
                CompareOp::Equal,
                *modrev,
            ));
        }
        let mut ops = Vec::with_capacity(self.writes.len());
        for (k, v) in std::mem::take(&mut self.writes) {
            let key = self.eng.full(&k);
            bytes += key.len() + v.as_ref().map_or(0, Vec::len) + 8;
            ops.push(match v {
                Some(v) => TxnOp::put(key, v, None),
                None => TxnOp::delete(key, None::<DeleteOptions>),
            });
        }
        let (n_cmps, n_ops) = (cmps.len(), ops.len());
        let txn = Txn::new().when(cmps).and_then(ops);
        let ticket = self.eng.own.begin();
        let resp = self.call(|mut kv| async move { kv.txn(txn).await });
        let applied = resp.as_ref().ok().filter(|r| r.succeeded());
        self.eng.own.end(
            ticket,
            applied.and_then(|r| r.header()).map(|h| h.revision()),
        );
        let resp = resp.map_err(|e| match e {
            // Add what only we know: the size of this transaction.
            Error::Failed(msg) if msg.contains("--max-txn-ops") => {
                too_many_ops(Some((n_cmps, n_ops)))
            }
            Error::Failed(msg) if msg.contains("--max-request-bytes") => too_large(Some(bytes)),
            e => e,
        })?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(Error::Conflict)
        }
    }
}

impl KvTxn for EtcdTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        if let Some((_, v)) = self.seen.get(key) {
            return Ok(v.clone());
        }
        let opts = self.read_opts();
        let full = self.eng.full(key);
        let resp = self.call(|mut kv| async move { kv.get(full, Some(opts)).await })?;
        self.pin(resp.header().map(|h| h.revision()))?;
        let found = resp.kvs().first();
        self.remember(key, found);
        Ok(found.map(|kv| kv.value().to_vec()))
    }

    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        // Keys neither written nor read before, fetched by read-only `Txn`s of gets:
        // one round trip per batch, all at the attempt's revision.
        let mut missing: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| !self.writes.contains_key(*k) && !self.seen.contains_key(*k))
            .collect();
        missing.sort();
        missing.dedup();
        let mut fetched: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for batch in missing.chunks(GETS_BATCH) {
            let opts = self.read_opts();
            let getops: Vec<TxnOp> = batch
                .iter()
                .map(|k| TxnOp::get(self.eng.full(k), Some(opts.clone())))
                .collect();
            let resp =
                self.call(|mut kv| async move { kv.txn(Txn::new().and_then(getops)).await })?;
            self.pin(resp.header().map(|h| h.revision()))?;
            let responses = resp.op_responses();
            if responses.len() != batch.len() {
                return Err(Error::engine(
                    format!(
                        "etcd answered {} of {} gets in a batch",
                        responses.len(),
                        batch.len()
                    ),
                    true,
                ));
            }
            for (k, r) in batch.iter().zip(responses) {
                let TxnOpResponse::Get(g) = r else {
                    return Err(Error::engine("etcd answered a get with another op", true));
                };
                let found = g.kvs().first();
                self.remember(k, found);
                fetched.insert(k.to_vec(), found.map(|kv| kv.value().to_vec()));
            }
        }
        Ok(keys
            .iter()
            .map(|k| {
                if let Some(w) = self.writes.get(k) {
                    w.clone()
                } else if let Some((_, v)) = self.seen.get(k) {
                    v.clone()
                } else {
                    fetched.get(k).cloned().flatten()
                }
            })
            .collect())
    }

    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if begin >= end || limit == 0 {
            return Ok(out);
        }
        // Buffered writes inside the range, merged with the remote pages in key order.
        let buffered: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .writes
            .range(begin.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut bi = 0;
        let mut cursor = begin.to_vec();
        // Remote keys that shaped the result, recorded once the covered range is known.
        let mut contributed: Vec<KeyValue> = Vec::new();
        let mut full = false;
        'pages: loop {
            // Buffered deletes may hide remote keys: ask for enough to make up for them.
            let hidden = buffered[bi..].iter().filter(|(_, v)| v.is_none()).count();
            let want = (limit - out.len())
                .saturating_add(hidden)
                .clamp(1, SCAN_PAGE);
            let mut resp = self.fetch_page(&cursor, end, want)?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            for kv in kvs {
                let key = self.strip(kv.key())?.to_vec();
                while bi < buffered.len() && buffered[bi].0 < key {
                    if let (k, Some(v)) = &buffered[bi] {
                        out.push((k.clone(), v.clone()));
                    }
                    bi += 1;
                    if out.len() == limit {
                        full = true;
                        break 'pages;
                    }
                }
                if bi < buffered.len() && buffered[bi].0 == key {
                    // Our own write replaces (or deletes) what the server holds.
                    if let (k, Some(v)) = &buffered[bi] {
                        out.push((k.clone(), v.clone()));
                    }
                    bi += 1;
                } else {
                    out.push((key.clone(), kv.value().to_vec()));
                    contributed.push(kv);
                }
                cursor = key;
                cursor.push(0);
                if out.len() == limit {
                    full = true;
                    break 'pages;
                }
            }
            if !more {
                break;
            }
        }
        if !full {
            // The server has nothing more in the range: the rest is buffered.
            for (k, v) in &buffered[bi..] {
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        if !self.read_only {
            // The result depends on the range up to its last key when the limit cut it,
            // otherwise on the whole range.
            let cover_end = match out.last() {
                Some((k, _)) if out.len() == limit => {
                    let mut e = k.clone();
                    e.push(0);
                    e
                }
                _ => end.to_vec(),
            };
            for kv in &contributed {
                let key = self.strip(kv.key())?.to_vec();
                self.remember(&key, Some(kv));
            }
            self.ranges.push((begin.to_vec(), cover_end));
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }
}

impl KvEngine for EtcdEngine {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        let lane = self.lanes.get().map_err(|e| match e {
            PoolError::Connect(e) => e,
            PoolError::Timeout => Error::engine(
                format!("timed out ({POOL_WAIT:?}) waiting for a free connection to etcd at {}; is the server up and not overloaded?", self.hosts),
                true,
            ),
            PoolError::Closed => Error::engine("etcd: the engine is shut down", false),
        })?;
        let mut tx = EtcdTxn {
            eng: self,
            lane: &lane,
            broken: false,
            read_only,
            rev: 0,
            seen: HashMap::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
        };
        let result = body(&mut tx).and_then(|()| tx.commit());
        if tx.broken {
            lane.discard();
        }
        result
    }

    /// Every commit is seen by a watch: nothing to add to commits, only which keys the
    /// feed reports.
    fn announce_changes(&self, announced: AnnouncedKeys) -> bool {
        let _ = self.announced.set(announced);
        true
    }

    fn follow_changes(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        self.follow(follower)
    }

    fn reset(&self) -> Result<()> {
        // One DeleteRange over the volume's prefix: atomic, and not subject to
        // --max-txn-ops however many keys it removes.
        let opts = DeleteOptions::new().with_range(prefix_end(&self.prefix));
        let key = self.prefix.clone();
        let mut kv = self.kv.clone();
        self.call(async move { kv.delete(key, Some(opts)).await })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_prefix_follows_juicefs() {
        let u = parse_url("127.0.0.1:2379/nectar-test").unwrap();
        assert_eq!(u.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(u.prefix, b"/nectar-test\xFD");
        assert_eq!(u.user, None);
        // No path: Go's url.Path is empty, so the prefix is the single byte 0xFD.
        assert_eq!(parse_url("h:1").unwrap().prefix, b"\xFD");
        assert_eq!(parse_url("h:1/").unwrap().prefix, b"/\xFD");
        assert_eq!(parse_url("h/a%20b/c").unwrap().prefix, b"/a b/c\xFD");
    }

    #[test]
    fn url_hosts_and_user() {
        let u = parse_url("root:p%40ss:w@a:1,b,[::1]:3,[::1]/x").unwrap();
        assert_eq!(
            u.endpoints,
            vec![
                "http://a:1",
                "http://b:2379",
                "http://[::1]:3",
                "http://[::1]:2379"
            ]
        );
        assert_eq!(u.user, Some(("root".into(), "p@ss:w".into())));
        assert_eq!(u.prefix, b"/x\xFD");
    }

    #[test]
    fn url_errors() {
        let e = parse_url("/x").unwrap_err().to_string();
        assert!(e.contains("empty host"), "{e}");
        let e = parse_url("a:99999/x").unwrap_err().to_string();
        assert!(e.contains("bad port"), "{e}");
        let e = parse_url("a/x?cacert=/ca.pem").unwrap_err().to_string();
        assert!(e.contains("TLS"), "{e}");
        let e = parse_url("a/x?foo=1").unwrap_err().to_string();
        assert!(e.contains("unknown etcd META-URL option"), "{e}");
        let e = parse_url("a/%zz").unwrap_err().to_string();
        assert!(e.contains("%-escape"), "{e}");
        let e = parse_url("u:se%+fcret@a/x").unwrap_err().to_string();
        assert!(e.contains("%-escape in the password"), "{e}");
        assert!(!e.contains("cret"), "{e}");
    }

    /// An engine on the test server (`NECTAR_TEST_ETCD_URL`, set by
    /// scripts/start-etcd.sh) under a prefix of its own, emptied; `None` without a server.
    pub(super) fn test_engine(name: &str) -> Option<EtcdEngine> {
        let url = std::env::var("NECTAR_TEST_ETCD_URL").ok()?;
        let rest = url.strip_prefix("etcd://")?;
        let authority = rest.split('/').next()?;
        let eng = EtcdEngine::open(&format!("{authority}/nectar-unit-{name}")).unwrap();
        eng.reset().unwrap();
        Some(eng)
    }

    fn put(eng: &EtcdEngine, key: &[u8], value: &[u8]) {
        eng.attempt(&mut |tx| tx.set(key, value), false).unwrap();
    }

    fn get(eng: &EtcdEngine, key: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        eng.attempt(
            &mut |tx| {
                out = tx.get(key)?;
                Ok(())
            },
            true,
        )
        .unwrap();
        out
    }

    fn is_conflict(r: Result<()>) -> bool {
        matches!(r, Err(Error::Conflict))
    }

    #[test]
    fn own_writes_overlay_reads_and_scans() {
        let Some(eng) = test_engine("overlay") else {
            return;
        };
        // Binary keys, including 0x00 and 0xFF bytes.
        for k in [&b"k\x00"[..], b"k\x01", b"k\x02", b"k\xff", b"k\xff\xff"] {
            put(&eng, k, k);
        }
        eng.attempt(
            &mut |tx| {
                tx.delete(b"k\x01")?;
                tx.set(b"k\x02", b"new")?;
                tx.set(b"k\x03", b"ins")?;
                assert_eq!(tx.get(b"k\x01")?, None);
                assert_eq!(tx.get(b"k\x02")?.as_deref(), Some(&b"new"[..]));
                let all = tx.scan(b"k", b"l", usize::MAX)?;
                let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
                assert_eq!(
                    keys,
                    vec![&b"k\x00"[..], b"k\x02", b"k\x03", b"k\xff", b"k\xff\xff"]
                );
                assert_eq!(all[1].1, b"new");
                // A limit cut after a buffered key, then resumption after it.
                let first = tx.scan(b"k", b"l", 2)?;
                assert_eq!(first.len(), 2);
                let mut resume = first[1].0.clone();
                resume.push(0);
                let rest = tx.scan(&resume, b"l", 2)?;
                assert_eq!(rest[0].0, b"k\x03");
                assert_eq!(rest[1].0, b"k\xff");
                assert_eq!(
                    tx.gets(&[b"k\x00".to_vec(), b"k\x01".to_vec(), b"zz".to_vec()])?,
                    vec![Some(b"k\x00".to_vec()), None, None]
                );
                Ok(())
            },
            false,
        )
        .unwrap();
        assert_eq!(get(&eng, b"k\x01"), None);
        assert_eq!(get(&eng, b"k\x03").as_deref(), Some(&b"ins"[..]));
        // A body that fails writes nothing.
        let r = eng.attempt(
            &mut |tx| {
                tx.set(b"k\x00", b"lost")?;
                Err(Error::Aborted)
            },
            false,
        );
        assert!(r.is_err());
        assert_eq!(get(&eng, b"k\x00").as_deref(), Some(&b"k\x00"[..]));
    }

    #[test]
    fn scans_page_through_large_ranges() {
        let Some(eng) = test_engine("paging") else {
            return;
        };
        let n = SCAN_PAGE * 2 + 7;
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            eng.attempt(
                &mut |tx| {
                    for i in chunk {
                        tx.set(format!("p{i:05}").as_bytes(), b"v")?;
                    }
                    Ok(())
                },
                false,
            )
            .unwrap();
        }
        eng.attempt(
            &mut |tx| {
                assert_eq!(tx.scan(b"p", b"q", usize::MAX)?.len(), n);
                assert_eq!(tx.scan(b"p", b"q", SCAN_PAGE + 1)?.len(), SCAN_PAGE + 1);
                // Deleting a whole page's worth, then scanning past the hidden keys.
                for i in 0..SCAN_PAGE + 5 {
                    tx.delete(format!("p{i:05}").as_bytes())?;
                }
                let first = tx.scan(b"p", b"q", 1)?;
                assert_eq!(first[0].0, format!("p{:05}", SCAN_PAGE + 5).as_bytes());
                assert!(tx.exists(b"p", b"q")?);
                // Too many writes to commit, and not meant to be: give up.
                Err(Error::Aborted)
            },
            false,
        )
        .unwrap_err();
    }

    #[test]
    fn conflicts_are_detected() {
        let Some(eng) = test_engine("conflict") else {
            return;
        };
        put(&eng, b"a", b"1");
        put(&eng, b"r/1", b"x");
        // A key read, then changed by another client.
        let r = eng.attempt(
            &mut |tx| {
                tx.get(b"a")?;
                put(&eng, b"a", b"2");
                tx.set(b"b", b"x")
            },
            false,
        );
        assert!(is_conflict(r));
        // A key read as missing, then created.
        let r = eng.attempt(
            &mut |tx| {
                tx.get(b"c")?;
                put(&eng, b"c", b"1");
                tx.set(b"b", b"x")
            },
            false,
        );
        assert!(is_conflict(r));
        // An insert into a scanned range (a phantom).
        let r = eng.attempt(
            &mut |tx| {
                tx.scan(b"r/", b"r0", 100)?;
                put(&eng, b"r/2", b"y");
                tx.set(b"b", b"x")
            },
            false,
        );
        assert!(is_conflict(r));
        // A deletion of a scanned key.
        let r = eng.attempt(
            &mut |tx| {
                tx.scan(b"r/", b"r0", 100)?;
                eng.attempt(&mut |t2| t2.delete(b"r/1"), false)?;
                tx.set(b"b", b"x")
            },
            false,
        );
        assert!(is_conflict(r));
        assert_eq!(get(&eng, b"b"), None, "conflicting attempts wrote nothing");
        // Changes past a scan's limit, or outside what was read, do not conflict.
        put(&eng, b"r/1", b"x");
        eng.attempt(
            &mut |tx| {
                assert_eq!(tx.scan(b"r/", b"r0", 1)?.len(), 1);
                put(&eng, b"r/3", b"z");
                put(&eng, b"other", b"z");
                tx.set(b"b", b"x")
            },
            false,
        )
        .unwrap();
        assert_eq!(get(&eng, b"b").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn reads_see_one_snapshot() {
        let Some(eng) = test_engine("snapshot") else {
            return;
        };
        put(&eng, b"a", b"1");
        put(&eng, b"b", b"1");
        for read_only in [true, false] {
            eng.attempt(
                &mut |tx| {
                    assert_eq!(tx.get(b"a")?.as_deref(), Some(&b"1"[..]));
                    eng.attempt(
                        &mut |t2| {
                            t2.set(b"a", b"2")?;
                            t2.set(b"b", b"2")
                        },
                        false,
                    )?;
                    // The other commit is invisible to this attempt.
                    assert_eq!(tx.get(b"b")?.as_deref(), Some(&b"1"[..]));
                    assert_eq!(tx.scan(b"a", b"c", 10)?[1].1, b"1");
                    Ok(())
                },
                read_only,
            )
            .unwrap();
            put(&eng, b"a", b"1");
            put(&eng, b"b", b"1");
        }
    }

    #[test]
    fn oversized_transactions_are_refused_whole() {
        let Some(eng) = test_engine("limits") else {
            return;
        };
        let r = eng.attempt(
            &mut |tx| {
                for i in 0..DEFAULT_MAX_TXN_OPS + 1 {
                    tx.set(format!("n{i:04}").as_bytes(), b"v")?;
                }
                Ok(())
            },
            false,
        );
        let e = r.unwrap_err();
        eprintln!("{e}");
        assert!(!e.is_temporary(), "{e}");
        assert!(e.to_string().contains("--max-txn-ops"), "{e}");
        assert!(e.to_string().contains("129 writes"), "{e}");
        let big = vec![7u8; 512 << 10];
        let r = eng.attempt(
            &mut |tx| {
                for i in 0..4 {
                    tx.set(format!("big{i}").as_bytes(), &big)?;
                }
                Ok(())
            },
            false,
        );
        let e = r.unwrap_err();
        eprintln!("{e}");
        assert!(!e.is_temporary(), "{e}");
        assert!(e.to_string().contains("--max-request-bytes"), "{e}");
        eng.attempt(
            &mut |tx| {
                assert!(tx.scan(b"", b"\xff", 10)?.is_empty(), "nothing was written");
                Ok(())
            },
            true,
        )
        .unwrap();
    }

    #[test]
    fn volumes_side_by_side_and_reset() {
        let (Some(a), Some(b)) = (test_engine("side-a"), test_engine("side-b")) else {
            return;
        };
        put(&a, b"setting", b"A");
        put(&b, b"setting", b"B");
        assert_eq!(get(&a, b"setting").as_deref(), Some(&b"A"[..]));
        a.reset().unwrap();
        assert_eq!(get(&a, b"setting"), None);
        assert_eq!(get(&b, b"setting").as_deref(), Some(&b"B"[..]));
    }

    /// Runs when `NECTAR_TEST_ETCD_AUTH_URL` names a server with authentication on, as
    /// `NECTAR_ETCD_PASSWORD=PW scripts/start-etcd.sh DIR 2479` starts one
    /// (etcd://root:PW@127.0.0.1:2479/nectar-test).
    #[test]
    fn authentication() {
        let Ok(url) = std::env::var("NECTAR_TEST_ETCD_AUTH_URL") else {
            return;
        };
        let rest = url.strip_prefix("etcd://").unwrap();
        let (user, hostpath) = rest.split_once('@').unwrap();
        let name = user.split(':').next().unwrap();
        let host = hostpath.split('/').next().unwrap();
        let eng = EtcdEngine::open(&format!("{user}@{host}/nectar-unit-auth")).unwrap();
        eng.reset().unwrap();
        put(&eng, b"k", b"v");
        assert_eq!(get(&eng, b"k").as_deref(), Some(&b"v"[..]));

        let e = EtcdEngine::open(&format!("{name}:not-the-password@{host}/x"))
            .err()
            .unwrap();
        assert!(!e.is_temporary(), "{e}");
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(msg.contains("refused the user name or password"), "{msg}");
        assert!(!msg.contains("not-the-password"), "{msg}");

        let e = EtcdEngine::open(&format!("{host}/x")).err().unwrap();
        assert!(!e.is_temporary(), "{e}");
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(msg.contains("authentication enabled"), "{msg}");
        assert!(msg.contains("USER:PASSWORD@"), "{msg}");
    }

    #[test]
    fn server_down_is_a_clear_error() {
        // Nothing listens on port 1 of the loopback address.
        let e = EtcdEngine::open("127.0.0.1:1/x").err().unwrap();
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(msg.contains("127.0.0.1:1"), "{msg}");
        assert!(msg.contains("is the server running"), "{msg}");
    }
}
