//! `tikv://PD[:PORT][,PD[:PORT]...][/PREFIX][?ca=FILE&cert=FILE&key=FILE]`: metadata in
//! TiKV. Built only with the cargo feature `tikv` (`cargo build --features tikv`).
//!
//! The hosts are TiKV's placement drivers (PD, port 2379 when none is given); the client
//! asks them for the TiKV stores and the regions. Keys are JuiceFS's, under JuiceFS's
//! TiKV prefix — the URL's path without its leading slashes, then the byte 0xFD — so a
//! volume formatted by either system can be used by the other. `ca`, `cert` and `key`
//! (all three, as the client needs) turn on mutual TLS with PD and TiKV.
//!
//! Transactions are TiKV's optimistic (Percolator) transactions. Every read of an attempt
//! is served at its start timestamp, a consistent snapshot. Writes are buffered by the
//! client, which overlays them on the attempt's own reads and scans, and sent at commit
//! by a two-phase commit. TiKV only checks write-write conflicts (snapshot isolation), so
//! before committing an attempt that writes, every key it read (found or missing, by a
//! get or returned by a scan) and did not write is added to the commit as a lock-only
//! mutation: a change another client committed to any of them after the snapshot then
//! fails the commit as a write conflict, which is [`Error::Conflict`] and is retried by
//! the `Kv` runner. What that does not catch is a key inserted by another client into a
//! range this attempt scanned without getting it back (a phantom). Such races still
//! conflict when both sides touch the key that owns the range — a directory's attr for
//! its entries, which the file-system layer reads before listing or emptying a directory
//! and updates on every create and remove in it — which is all JuiceFS relies on with
//! TiKV. An attempt that only read commits nothing. Read-only transactions read at one
//! fresh timestamp and never write.
//!
//! Commits use plain two-phase commit. JuiceFS also asks for one-phase commit and async
//! commit, but tikv-client 0.4 fails a commit outright when TiKV declines 1PC, and its
//! async commit has no fallback, so both stay off.
//!
//! The client (tikv-client, on tonic) is async; the engine owns a small tokio runtime and
//! blocks on it from the calling thread, which is never an async task (see
//! docs/ARCHITECTURE.md). Every call has a deadline, so a dead cluster surfaces as a
//! temporary error instead of a hang. A commit whose answer is lost may or may not have
//! been applied; it is reported as a temporary error and the runner runs the body again
//! on fresh reads, as JuiceFS does.
//!
//! Not done here: TiKV keeps every old version of a key until someone advances the
//! cluster's GC safe point. TiDB does that for its clusters, and JuiceFS's client does it
//! every 3 hours (`gc-interval`); this engine does not, so a cluster used only by Nectar
//! needs GC run from outside.

use crate::error::{Error, Result};
use crate::shared::causes;
use crate::{KvEngine, KvTxn, TxnBody};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tikv_client::{
    BoundRange, CheckLevel, Config, Key, KvPair, ProtoKeyError, Transaction, TransactionClient,
    TransactionOptions,
};

/// JuiceFS's TiKV client stores every key under the URL's path with its leading slashes
/// trimmed, followed by 0xFD (pkg/meta/tkv_tikv.go, `newTikvClient`:
/// `prefix := strings.TrimLeft(tUrl.Path, "/")`, then `withPrefix(..., append([]byte(prefix),
/// 0xFD))`). We do the same byte for byte.
const PREFIX_END_BYTE: u8 = 0xFD;

/// PD's client port, used when a host in the URL has none.
const DEFAULT_PORT: u16 = 2379;

/// Deadline of one gRPC request inside the client (which retries region errors and
/// waits for other transactions' locks within a call).
const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of one call of the engine (a get, a scan page, a commit), retries included.
/// Long enough for a big commit on a busy cluster, short enough that a hung connection
/// becomes a retried temporary error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of connecting to PD when opening the engine.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys per page of a scan: bounds a response's size while keeping round trips few.
const SCAN_PAGE: usize = 4096;

/// Keys deleted per transaction by `reset`.
const RESET_BATCH: usize = 1000;

/// Responses larger than gRPC's default 4 MiB would fail to decode; a scan page can
/// exceed that when values are large (a chunk's slice list).
const MAX_DECODE: usize = 256 << 20;

/// The options JuiceFS's TiKV URLs may carry that this build does not implement.
const JUICEFS_ONLY_OPTIONS: &[&str] = &[
    "verify-cn",
    "gc-interval",
    "open-tso-follower-proxy",
    "max-tso-batch-wait-interval",
];

/// Mutual TLS files, all three required by the client.
#[derive(Debug, PartialEq)]
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The parts of a TiKV META-URL.
#[derive(Debug, PartialEq)]
struct TikvUrl {
    /// PD endpoints, `host:port`.
    pds: Vec<String>,
    prefix: Vec<u8>,
    tls: Option<Tls>,
}

/// Decodes `%XX` escapes of the URL's `what` as Go's `url.Parse` does; a query value
/// (`query`) also reads `+` as a space.
fn percent_decode(s: &str, what: &str, query: bool) -> Result<Vec<u8>> {
    crate::shared::percent_decode(s, query).ok_or_else(|| {
        Error::Invalid(format!(
            "invalid TiKV META-URL: bad %-escape in the {what} {s:?}"
        ))
    })
}

/// Parses the part of the URL after `tikv://` the way JuiceFS does (Go's `url.Parse`):
/// PD hosts separated by commas, the path as the key prefix, TLS files in the query.
fn parse_url(rest: &str) -> Result<TikvUrl> {
    const FORM: &str = "tikv://PD:2379[,PD:2379...]/PREFIX[?ca=FILE&cert=FILE&key=FILE]";
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(Error::Invalid(format!(
            "invalid TiKV META-URL: TiKV has no user names or passwords; remove the USER@ part ({FORM})"
        )));
    }
    let mut pds: Vec<String> = Vec::new();
    for host in authority.split(',') {
        if host.is_empty() {
            return Err(Error::Invalid(format!(
                "invalid TiKV META-URL: empty PD address in {authority:?}; use {FORM}"
            )));
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 literal.
        let port_at = host.rfind(':').filter(|i| !host[*i..].contains(']'));
        let (name, port) = match port_at {
            Some(i) => (&host[..i], Some(&host[i + 1..])),
            None => (host, None),
        };
        let bad_ipv6 = name.contains(':') && !(name.starts_with('[') && name.ends_with(']'));
        if name.is_empty() || bad_ipv6 {
            return Err(Error::Invalid(format!(
                "invalid TiKV META-URL: bad PD address {host:?}; use HOST:PORT, or [IPv6]:PORT ({FORM})"
            )));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                Error::Invalid(format!(
                    "invalid TiKV META-URL: bad port {p:?} in PD address {host:?}"
                ))
            })?,
        };
        let pd = format!("{name}:{port}");
        if pds.contains(&pd) {
            return Err(Error::Invalid(format!(
                "invalid TiKV META-URL: PD address {pd} is given twice"
            )));
        }
        pds.push(pd);
    }
    let (mut ca, mut cert, mut key) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "ca" => &mut ca,
            "cert" => &mut cert,
            "key" => &mut key,
            _ if JUICEFS_ONLY_OPTIONS.contains(&name) => {
                return Err(Error::Invalid(format!(
                    "TiKV META-URL option {name:?} is not supported by this build of nectar; remove it (options: ca, cert, key)"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown TiKV META-URL option {name:?}: the options are ca, cert and key ({FORM})"
                )))
            }
        };
        let v = percent_decode(value, &format!("{name} option"), true)?;
        let v = String::from_utf8(v).map_err(|_| {
            Error::Invalid(format!(
                "invalid TiKV META-URL: the {name} option is not UTF-8"
            ))
        })?;
        if v.is_empty() {
            return Err(Error::Invalid(format!(
                "invalid TiKV META-URL: the {name} option needs a file name ({name}=FILE)"
            )));
        }
        *slot = Some(PathBuf::from(v));
    }
    let tls = match (ca, cert, key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(Tls { ca, cert, key }),
        (ca, cert, key) => {
            let missing: Vec<&str> = [
                ("ca", ca.is_none()),
                ("cert", cert.is_none()),
                ("key", key.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            return Err(Error::Invalid(format!(
                "invalid TiKV META-URL: TLS needs all of ca, cert and key (the TiKV client only does mutual TLS); missing: {}",
                missing.join(", ")
            )));
        }
    };
    let path = percent_decode(path, "path", false)?;
    let start = path.iter().position(|&c| c != b'/').unwrap_or(path.len());
    let mut prefix = path[start..].to_vec();
    prefix.push(PREFIX_END_BYTE);
    Ok(TikvUrl { pds, prefix, tls })
}

/// What a plain TCP connection to each PD says, for the message of a failed open: the
/// client only reports that no PD responded.
fn probe(pds: &[String]) -> String {
    use std::net::{TcpStream, ToSocketAddrs};
    const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    pds.iter()
        .map(|pd| {
            let addr = match pd.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(a)) => a,
                Ok(None) => return format!("{pd}: the name has no address"),
                Err(e) => return format!("{pd}: {e}"),
            };
            match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
                Ok(_) => format!(
                    "{pd} accepts connections but did not answer as PD (a TLS cluster needs \
                     ?ca=&cert=&key=, a plain one must not have them)"
                ),
                Err(e) => format!("{pd}: {e}"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a per-key error means another transaction got in the way (retry).
fn key_error_is_conflict(k: &ProtoKeyError) -> bool {
    k.conflict.is_some()
        || k.locked.is_some()
        || k.deadlock.is_some()
        || k.txn_not_found.is_some()
        || k.commit_ts_expired.is_some()
        || k.commit_ts_too_large.is_some()
        || !k.retryable.is_empty()
        || [
            "WriteConflict",
            "TxnLockNotFound",
            "KeyIsLocked",
            "Deadlock",
        ]
        .iter()
        .any(|w| k.abort.contains(w))
}

/// What a TiKV client error means for the runner: a conflict, a temporary failure, or a
/// permanent one, with a message that names the cluster.
fn map_err(e: tikv_client::Error, pds: &str) -> Error {
    use tikv_client::Error as E;
    let unreachable = |detail: String| {
        Error::engine(
            format!(
                "cannot reach TiKV (PD at {pds}): {detail}; is the cluster running and listening there?"
            ),
            true,
        )
    };
    match e {
        E::KeyError(k) if key_error_is_conflict(&k) => Error::Conflict,
        E::KeyError(k) => Error::engine(format!("TiKV (PD at {pds}): {k:?}"), false),
        E::ExtractedErrors(errs) | E::MultipleKeyErrors(errs) => {
            let mut mapped: Vec<Error> = errs.into_iter().map(|e| map_err(e, pds)).collect();
            if mapped.iter().any(|e| matches!(e, Error::Conflict)) {
                return Error::Conflict;
            }
            // A permanent failure wins over a temporary one: retrying will not help.
            match mapped.iter().position(|e| !e.is_temporary()) {
                Some(i) => mapped.swap_remove(i),
                None => mapped.pop().unwrap_or_else(|| {
                    Error::engine(format!("TiKV (PD at {pds}): an empty error list"), true)
                }),
            }
        }
        E::PessimisticLockError { inner, .. } => map_err(*inner, pds),
        E::UndeterminedError(inner) => Error::engine(
            format!(
                "TiKV (PD at {pds}): the commit's outcome is unknown ({inner}); the transaction is run again"
            ),
            true,
        ),
        // Other transactions' locks that could not be resolved in time, or a transaction
        // that was rolled back meanwhile: try again on a fresh snapshot.
        E::ResolveLockError(_) | E::TxnNotFound(_) => Error::Conflict,
        E::RegionError(r) => Error::engine(format!("TiKV (PD at {pds}): region error {r:?}"), true),
        E::RegionForKeyNotFound { .. }
        | E::RegionForRangeNotFound { .. }
        | E::RegionNotFoundInResponse { .. }
        | E::LeaderNotFound { .. }
        | E::NoCurrentRegions
        | E::EntryNotFoundInRegionCache
        | E::OnePcFailure => Error::engine(format!("TiKV (PD at {pds}): {e}"), true),
        E::Grpc(t) => unreachable(causes(t.to_string(), std::error::Error::source(&t))),
        E::GrpcAPI(s) => {
            // gRPC codes: 1 Cancelled, 2 Unknown, 4 DeadlineExceeded, 8 ResourceExhausted,
            // 10 Aborted, 14 Unavailable.
            let code = i32::from(s.code());
            let msg = causes(s.message().to_string(), std::error::Error::source(&s));
            match code {
                14 => unreachable(msg),
                1 | 2 | 4 | 8 | 10 => Error::engine(format!("TiKV (PD at {pds}): {msg}"), true),
                _ => Error::engine(format!("TiKV (PD at {pds}): {s}"), false),
            }
        }
        E::Io(io) => Error::engine(format!("TiKV (PD at {pds}): {io}"), true),
        E::Channel(_) | E::Canceled(_) | E::JoinError(_) => {
            Error::engine(format!("TiKV (PD at {pds}): {e}"), true)
        }
        E::KvError { message } => Error::engine(format!("TiKV (PD at {pds}): {message}"), true),
        E::InternalError { message } => {
            // The client puts its own source location first: "[src/pd/cluster.rs:209]: ".
            let message = match message.split_once("]: ") {
                Some((loc, rest)) if loc.starts_with('[') => rest.to_string(),
                _ => message,
            };
            if message.contains("failed to open") || message.contains("failed to load") {
                Error::Invalid(format!("TiKV TLS: {message}"))
            } else if message.contains("failed to respond")
                || message.contains("leader")
                || message.contains("connect")
            {
                unreachable(message)
            } else {
                Error::engine(format!("TiKV (PD at {pds}): {message}"), false)
            }
        }
        E::Url(u) => Error::Invalid(format!("invalid TiKV PD address in {pds}: {u}")),
        other => Error::engine(format!("TiKV (PD at {pds}): {other}"), false),
    }
}

pub struct TikvEngine {
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
    client: TransactionClient,
    /// The volume's key prefix: the URL's path + 0xFD.
    prefix: Vec<u8>,
    /// The PD endpoints, for messages.
    pds: String,
}

impl TikvEngine {
    /// Connects to the TiKV cluster named by `rest`, the part of the URL after `tikv://`,
    /// and checks that it answers.
    pub fn open(rest: &str) -> Result<Self> {
        Self::open_within(rest, OPEN_TIMEOUT)
    }

    fn open_within(rest: &str, open_timeout: Duration) -> Result<Self> {
        let url = parse_url(rest)?;
        let pds = url.pds.join(",");
        let mut config = Config::default()
            .with_timeout(RPC_TIMEOUT)
            .with_grpc_max_decoding_message_size(MAX_DECODE);
        if let Some(tls) = &url.tls {
            // The client reports a missing file without saying which option named it.
            for (opt, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                std::fs::File::open(path).map_err(|e| {
                    Error::Invalid(format!(
                        "TiKV META-URL option {opt}: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
            }
            config = config.with_security(&tls.ca, &tls.cert, &tls.key);
        }
        let rt = crate::shared::engine_runtime("tikv")?;
        let connected = rt.block_on(async {
            tokio::time::timeout(
                open_timeout,
                TransactionClient::new_with_config(url.pds.clone(), config),
            )
            .await
        });
        let failure = match connected {
            Ok(Ok(client)) => {
                let engine = TikvEngine {
                    rt: Some(rt),
                    client,
                    prefix: url.prefix,
                    pds,
                };
                // Fail now, with a clear message, rather than after the first
                // transaction's retries: PD may answer while no TiKV store does.
                engine.attempt(&mut |tx| tx.get(b"setting").map(drop), true)?;
                return Ok(engine);
            }
            Ok(Err(e)) => match map_err(e, &pds) {
                Error::Unavailable(_) => format!("no PD answered ({})", probe(&url.pds)),
                e => {
                    rt.shutdown_background();
                    return Err(e);
                }
            },
            Err(_) => format!("no answer within {open_timeout:?} ({})", probe(&url.pds)),
        };
        rt.shutdown_background();
        Err(Error::engine(
            format!(
                "cannot reach TiKV through PD at {pds}: {failure}; is the cluster running, and \
                 are these PD client addresses (2379 by default)?"
            ),
            true,
        ))
    }

    /// The TiKV key of a volume key.
    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// Runs one call on the engine's runtime, with a deadline.
    fn call<T>(&self, fut: impl Future<Output = tikv_client::Result<T>>) -> Result<T> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::engine("TiKV: the engine is shut down", false))?;
        match rt.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, fut).await }) {
            Ok(r) => r.map_err(|e| map_err(e, &self.pds)),
            Err(_) => Err(Error::engine(
                format!(
                    "TiKV (PD at {}) did not answer within {REQUEST_TIMEOUT:?}; is the cluster running and listening there?",
                    self.pds
                ),
                true,
            )),
        }
    }

    fn begin(&self, read_only: bool) -> Result<Transaction> {
        // Dropping an attempt that failed, or that only read, is how it ends: an
        // optimistic transaction has sent nothing to write until its commit.
        let mut opts = TransactionOptions::new_optimistic().drop_check(CheckLevel::None);
        if read_only {
            opts = opts.read_only();
        }
        let client = self.client.clone();
        self.call(async move { client.begin_with_options(opts).await })
    }

    /// Deletes up to `RESET_BATCH` keys of the volume at or after `from` in one
    /// transaction, and `setting` too when asked. Returns the key to go on from, or
    /// `None` when the volume is empty.
    fn reset_batch(&self, from: &[u8], setting: bool) -> Result<Option<Vec<u8>>> {
        let mut txn = self.begin(false)?;
        let setting = setting.then(|| self.full(b"setting"));
        let range = BoundRange::from(from.to_vec()..crate::prefix_end(&self.prefix));
        let keys: Vec<Key> = self.call(async {
            if let Some(s) = setting {
                txn.delete(s).await?;
            }
            let keys = txn.scan_keys(range, RESET_BATCH as u32).await?;
            Ok(keys.collect())
        })?;
        let next = match keys.last() {
            Some(k) if keys.len() >= RESET_BATCH => {
                let mut next: Vec<u8> = k.clone().into();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        self.call(async {
            for k in keys {
                txn.delete(k).await?;
            }
            txn.commit().await
        })?;
        Ok(next)
    }
}

impl Drop for TikvEngine {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context; the engine may
        // be dropped anywhere, so let the runtime wind down in the background.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One attempt of a transaction.
struct TikvTxn<'a> {
    eng: &'a TikvEngine,
    txn: Transaction,
    read_only: bool,
    /// TiKV keys read (found or not, or returned by a scan), locked at commit.
    read: BTreeSet<Vec<u8>>,
    /// Whether anything was written.
    wrote: bool,
}

impl TikvTxn<'_> {
    fn strip(&self, key: &[u8]) -> Result<Vec<u8>> {
        match key.strip_prefix(self.eng.prefix.as_slice()) {
            Some(k) => Ok(k.to_vec()),
            None => Err(Error::Corrupt(format!(
                "TiKV returned a key outside the volume's prefix: {key:?}"
            ))),
        }
    }

    fn note_read(&mut self, full: &[u8]) {
        if !self.read_only {
            self.read.insert(full.to_vec());
        }
    }

    fn commit(mut self) -> Result<()> {
        if !self.wrote {
            // Every read came from one snapshot; there is nothing to check or write.
            return Ok(());
        }
        let read = std::mem::take(&mut self.read);
        let txn = &mut self.txn;
        let res = self.eng.call(async {
            // Keys only read become lock-only mutations: TiKV then checks them for
            // conflicting commits as it does the written ones. Keys also written are
            // left as they are by the client.
            txn.lock_keys(read).await?;
            txn.commit().await.map(drop)
        });
        if let Err(Error::Conflict) = &res {
            // A conflict comes from the prewrite, or from finding that another client
            // rolled back our expired locks: the primary key is not committed, so rolling
            // back is safe, and it releases what the prewrite locked at once instead of
            // making the retry wait for those locks to expire. Best effort: TiKV resolves
            // them anyway. Any other failure may have come after the primary committed
            // (and a rollback then could undo secondary keys), so it is left alone.
            let txn = &mut self.txn;
            let _ = self.eng.call(async { txn.rollback().await });
        }
        res
    }
}

impl KvTxn for TikvTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let full = self.eng.full(key);
        self.note_read(&full);
        let txn = &mut self.txn;
        self.eng.call(async { txn.get(full).await })
    }

    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut fulls: Vec<Vec<u8>> = keys.iter().map(|k| self.eng.full(k)).collect();
        for f in &fulls {
            self.note_read(f);
        }
        fulls.sort();
        fulls.dedup();
        let txn = &mut self.txn;
        let found: Vec<KvPair> = self
            .eng
            .call(async { Ok(txn.batch_get(fulls).await?.collect()) })?;
        let found: HashMap<Vec<u8>, Vec<u8>> = found
            .into_iter()
            .map(|KvPair(k, v)| (Vec::from(k), v))
            .collect();
        Ok(keys
            .iter()
            .map(|k| found.get(&self.eng.full(k)).cloned())
            .collect())
    }

    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if begin >= end || limit == 0 {
            return Ok(out);
        }
        let end_full = self.eng.full(end);
        let mut cursor = self.eng.full(begin);
        loop {
            // The client merges the attempt's own writes into each page. A page shorter
            // than asked means the range holds nothing more: the client fetches enough
            // to make up for keys its buffered deletes hide.
            let page = (limit - out.len()).min(SCAN_PAGE);
            let range = BoundRange::from(cursor.clone()..end_full.clone());
            let txn = &mut self.txn;
            let pairs: Vec<KvPair> = self
                .eng
                .call(async { Ok(txn.scan(range, page as u32).await?.collect()) })?;
            let n = pairs.len();
            for KvPair(k, v) in pairs {
                let full: Vec<u8> = k.into();
                self.note_read(&full);
                out.push((self.strip(&full)?, v));
                cursor = full;
            }
            if n < page || out.len() >= limit {
                break;
            }
            cursor.push(0);
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        self.wrote = true;
        let (full, value) = (self.eng.full(key), value.to_vec());
        let txn = &mut self.txn;
        self.eng.call(async { txn.put(full, value).await })
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(crate::shared::write_in_read_only());
        }
        self.wrote = true;
        let full = self.eng.full(key);
        let txn = &mut self.txn;
        self.eng.call(async { txn.delete(full).await })
    }
}

impl KvEngine for TikvEngine {
    fn name(&self) -> &'static str {
        "tikv"
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        let mut tx = TikvTxn {
            eng: self,
            txn: self.begin(read_only)?,
            read_only,
            read: BTreeSet::new(),
            wrote: false,
        };
        body(&mut tx)?;
        tx.commit()
    }

    fn reset(&self) -> Result<()> {
        // Batches of deletions, each its own transaction: TiKV has no atomic range
        // delete that goes through transactions, and one transaction over a large
        // volume would be too big. `setting` goes first, so that an interrupted reset
        // leaves an unformatted volume; each batch resumes after the last key deleted,
        // without scanning the tombstones again. A batch that conflicts with a client
        // still writing is tried again a few times.
        let mut from = self.prefix.clone();
        let mut first = true;
        let mut conflicts = 0;
        loop {
            match self.reset_batch(&from, first) {
                Ok(Some(next)) => {
                    from = next;
                    first = false;
                    conflicts = 0;
                }
                Ok(None) => return Ok(()),
                Err(Error::Conflict) if conflicts < 10 => {
                    conflicts += 1;
                    std::thread::sleep(Duration::from_millis(10 * conflicts));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn tikv_url_hosts_and_prefix() {
        let u = parse_url("pd1:2379,pd2:2380,pd3/jfs").unwrap();
        assert_eq!(u.pds, vec!["pd1:2379", "pd2:2380", "pd3:2379"]);
        assert_eq!(u.prefix, b"jfs\xFD");
        assert_eq!(u.tls, None);
        // As JuiceFS: leading slashes are trimmed, the rest of the path is kept.
        assert_eq!(parse_url("h:1//a/b%20c/").unwrap().prefix, b"a/b c/\xFD");
        // No path, or just "/": the prefix is the single byte 0xFD.
        assert_eq!(parse_url("h:1").unwrap().prefix, b"\xFD");
        assert_eq!(parse_url("h:1/").unwrap().prefix, b"\xFD");
        let u = parse_url("[::1]:2379,[fe80::1]/v").unwrap();
        assert_eq!(u.pds, vec!["[::1]:2379", "[fe80::1]:2379"]);
        // A fragment is not part of the prefix.
        assert_eq!(parse_url("h/v#x").unwrap().prefix, b"v\xFD");
    }

    #[test]
    fn tikv_url_tls() {
        let u =
            parse_url("pd:2379/v?ca=/etc/tikv/ca.pem&cert=/etc/tikv/c%20d.pem&key=k.pem").unwrap();
        assert_eq!(
            u.tls,
            Some(Tls {
                ca: "/etc/tikv/ca.pem".into(),
                cert: "/etc/tikv/c d.pem".into(),
                key: "k.pem".into(),
            })
        );
        assert_eq!(u.prefix, b"v\xFD");
        let e = parse_url("pd/v?ca=/ca.pem&key=/k.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("all of ca, cert and key"), "{e}");
        assert!(e.contains("missing: cert"), "{e}");
        let e = parse_url("pd/v?ca=&cert=c&key=k").unwrap_err().to_string();
        assert!(e.contains("needs a file name"), "{e}");
    }

    #[test]
    fn tikv_url_errors() {
        let cases = [
            ("", "empty PD address"),
            ("/v", "empty PD address"),
            ("a,,b/v", "empty PD address"),
            ("a:99999/v", "bad port"),
            ("a:0/v", "bad port"),
            ("a:x/v", "bad port"),
            ("::1/v", "bad PD address"),
            ("a:1,a:1/v", "given twice"),
            ("root:pw@a/v", "no user names or passwords"),
            ("a/v?verify-cn=tikv", "not supported by this build"),
            ("a/v?gc-interval=1h", "not supported by this build"),
            ("a/v?foo=1", "unknown TiKV META-URL option \"foo\""),
            ("a/%zz", "%-escape in the path"),
            ("a/v?ca=%g1&cert=c&key=k", "%-escape in the ca option"),
        ];
        for (url, want) in cases {
            let e = parse_url(url).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{url}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(want), "{url}: {msg}");
        }
        // The password is never echoed back.
        let msg = parse_url("u:secret@a/v").unwrap_err().to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn tikv_missing_tls_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let url = format!(
            "127.0.0.1:1/v?ca={}&cert={}/nope.pem&key={}",
            ca.display(),
            dir.path().display(),
            ca.display()
        );
        let e = TikvEngine::open(&url).err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("cert") && msg.contains("nope.pem"), "{msg}");
    }

    #[test]
    fn tikv_closed_port_is_a_clear_error() {
        // Nothing listens on ports 1 and 2 of the loopback address.
        for url in ["127.0.0.1:1/x", "127.0.0.1:1,127.0.0.1:2/x"] {
            let start = Instant::now();
            let e = TikvEngine::open(url).err().unwrap();
            let took = start.elapsed();
            let msg = e.to_string();
            eprintln!("{url}: {msg} ({took:?})");
            assert!(took < OPEN_TIMEOUT + Duration::from_secs(5), "{took:?}");
            assert!(e.is_temporary(), "{msg}");
            assert!(msg.contains("127.0.0.1:1: Connection refused"), "{msg}");
            assert!(msg.contains("is the cluster running"), "{msg}");
            assert!(!msg.contains(".rs:"), "{msg}");
        }
    }

    #[test]
    fn tikv_silent_server_times_out() {
        // Accepts TCP connections (the kernel completes them) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let start = Instant::now();
        let e = TikvEngine::open_within(&format!("{addr}/x"), Duration::from_secs(2))
            .err()
            .unwrap();
        let took = start.elapsed();
        let msg = e.to_string();
        eprintln!("{msg} ({took:?})");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(e.is_temporary(), "{msg}");
        assert!(msg.contains(&addr), "{msg}");
        assert!(msg.contains("did not answer as PD"), "{msg}");
        drop(listener);
    }

    #[test]
    fn tikv_open_engine_knows_the_scheme() {
        let e = crate::open_engine("tikv://127.0.0.1:1/x", &crate::FirstByteDomains)
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("cannot reach TiKV"), "{msg}");
        let e = crate::open_engine("tikv://a/x?nope=1", &crate::FirstByteDomains)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("unknown TiKV META-URL option"),
            "{e}"
        );
    }

    /// Runs when `NECTAR_TEST_TIKV_URL` names a cluster (tikv://PD:2379/PREFIX); none
    /// runs in CI here.
    #[test]
    fn tikv_server_round_trip() {
        let Ok(url) = std::env::var("NECTAR_TEST_TIKV_URL") else {
            return;
        };
        let rest = url.strip_prefix("tikv://").unwrap();
        let authority = rest.split(['/', '?']).next().unwrap();
        let eng = TikvEngine::open(&format!("{authority}/nectar-unit-tikv")).unwrap();
        eng.reset().unwrap();
        eng.attempt(
            &mut |tx| {
                tx.set(b"k\x00", b"a")?;
                tx.set(b"k\x01", b"b")?;
                tx.set(b"k\xff", b"c")
            },
            false,
        )
        .unwrap();
        eng.attempt(
            &mut |tx| {
                tx.delete(b"k\x01")?;
                tx.set(b"k\x02", b"n")?;
                let all = tx.scan(b"k", b"l", usize::MAX)?;
                let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
                assert_eq!(keys, vec![&b"k\x00"[..], b"k\x02", b"k\xff"]);
                assert_eq!(tx.scan(b"k", b"l", 1)?.len(), 1);
                assert_eq!(
                    tx.gets(&[b"k\x00".to_vec(), b"k\x01".to_vec()])?,
                    vec![Some(b"a".to_vec()), None]
                );
                Ok(())
            },
            false,
        )
        .unwrap();
        // A key read, then changed by another client, fails the commit.
        let r = eng.attempt(
            &mut |tx| {
                tx.get(b"k\x00")?;
                eng.attempt(&mut |t2| t2.set(b"k\x00", b"z"), false)?;
                tx.set(b"other", b"x")
            },
            false,
        );
        assert!(matches!(r, Err(Error::Conflict)), "{r:?}");
        eng.reset().unwrap();
        eng.attempt(
            &mut |tx| {
                assert!(tx.scan(b"", b"\xff", 10)?.is_empty());
                Ok(())
            },
            true,
        )
        .unwrap();
    }
}
