//! [`ObjectStore`] over Apache OpenDAL: local directories, S3-compatible services and
//! OpenDAL's in-memory service.
//!
//! An [`OpendalStore`] is an OpenDAL `Operator` wrapped in a timeout layer, so a stalled
//! request is cut off rather than hanging its caller. It retries nothing: the data path
//! retries temporary errors in one place (`nectar-chunk`'s `retry`, `--io-retries`),
//! and a retry layer here as well would multiply the budget users set (OpenDAL's retry
//! layer also marks every error it gives up on "persistent", hiding whether waiting may
//! help). Everything else is translation: object keys are checked before they
//! reach OpenDAL (which would silently normalise `a//b` or `/a`), a range read past the
//! end is clamped like [`crate::MemStore`] does, and OpenDAL's errors become this
//! crate's [`Error`] with a message that says what to check (credentials, a missing
//! bucket, a server that is down, a full disk). Listing uses the service's own
//! recursive, resumable listing where it has one (S3); the local file system only lists
//! one directory at a time, so there the store walks the tree depth-first in key order,
//! skipping every directory that cannot hold a key after `start_after`, which keeps a
//! paged listing of a large volume proportional to the page, not to the volume.

use crate::local::{LocalFiles, FS_TMP_DIR};
use crate::walk::list_by_walking;
use crate::{Error, ObjectInfo, ObjectStore, Result};
use ::opendal::layers::TimeoutLayer;
use ::opendal::{EntryMode, ErrorKind, Operator};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use std::error::Error as StdError;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// Time one request (a stat, a delete, opening a read or a write) may take before it is
/// abandoned (the data path's own `--get-timeout`/`--put-timeout` are usually shorter).
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Time one read or write of a body chunk may stall.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Page size asked of a service that lists natively.
const LIST_PAGE: usize = 1000;

/// What is behind the operator; decides hints in error messages and how to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Fs,
    S3,
    Memory,
    Other,
}

/// An [`ObjectStore`] backed by an OpenDAL operator.
pub struct OpendalStore {
    op: Operator,
    backend: Backend,
    /// `describe()`: a location without secrets, ending in `/`.
    describe: String,
    /// The location as a user would type or reach it, used in error messages
    /// (`http://127.0.0.1:8333/bucket`, `/var/nectar`).
    location: String,
    /// Whether the service lists recursively from a resume point by itself.
    native_list: bool,
    /// A file store's objects, put and got with plain file calls (see `crate::local`).
    local: Option<LocalFiles>,
}

/// Makes OpenDAL's HTTP transport (reqwest) the process default. The workspace builds
/// OpenDAL without its constructor-time registration, so nothing else installs it.
pub(crate) fn init_opendal() {
    static INIT: Once = Once::new();
    INIT.call_once(::opendal::install_default);
}

impl OpendalStore {
    /// Wraps any OpenDAL operator, adding the timeout layer. `describe` is
    /// the location shown to users (without secrets).
    pub fn new(op: Operator, describe: impl Into<String>) -> Self {
        let describe = describe.into();
        Self::with_backend(op, Backend::Other, describe.clone(), describe)
    }

    pub(crate) fn with_backend(
        op: Operator,
        backend: Backend,
        describe: String,
        location: String,
    ) -> Self {
        init_opendal();
        let cap = op.info().capability();
        // S3 lists everything under a prefix, in key order, from a resume point; the
        // file system and the memory service cannot resume, so we walk them ourselves.
        let native_list = cap.list_with_recursive && cap.list_with_start_after;
        let op = op.layer(
            TimeoutLayer::new()
                .with_timeout(OP_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        );
        let mut describe = describe;
        if !describe.ends_with('/') {
            describe.push('/');
        }
        Self {
            op,
            backend,
            describe,
            location,
            native_list,
            local: None,
        }
    }

    /// A store on a local directory, created if missing. Objects are files under it;
    /// a key's `/` separated parts become directories.
    pub fn fs(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let shown = dir.display().to_string();
        if shown.is_empty() {
            return Err(Error::Config(
                "the bucket of a file store must be a local directory, got an empty path".into(),
            ));
        }
        // OpenDAL would create the root itself, but its error would not say which
        // directory or why; a file in the way is also worth its own message.
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(Error::Config(format!(
                "cannot create the storage directory {shown}: {e}; check that the path is a \
                 directory the user running nectar may create and write"
            )));
        }
        let root = dir.canonicalize().map_err(|e| {
            Error::Config(format!("cannot resolve the storage directory {shown}: {e}"))
        })?;
        let root_str = root.to_str().ok_or_else(|| {
            Error::Config(format!(
                "the storage directory {shown} is not valid UTF-8; choose another path"
            ))
        })?;
        let local = LocalFiles::new(&root);
        remove_stale_temp_files(local.tmp_dir());
        // Puts and gets go through `local`; OpenDAL heads, deletes and lists.
        let op = Operator::new(::opendal::services::Fs::default().root(root_str)).map_err(|e| {
            Error::Config(format!("cannot open the storage directory {shown}: {e}"))
        })?;
        let mut store = Self::with_backend(
            op,
            Backend::Fs,
            format!("file://{root_str}/"),
            root_str.to_string(),
        );
        store.local = Some(local);
        Ok(store)
    }

    /// A store in OpenDAL's memory service (for tests of this adapter; the `memory`
    /// storage type uses [`crate::MemStore`]).
    pub fn memory() -> Result<Self> {
        let op = Operator::new(::opendal::services::Memory::default())
            .map_err(|e| Error::Config(format!("cannot create a memory operator: {e}")))?;
        Ok(Self::with_backend(
            op,
            Backend::Memory,
            "opendal-memory://".into(),
            "opendal-memory://".into(),
        ))
    }

    /// The wrapped operator (with the retry and timeout layers).
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// Translates an OpenDAL error of an operation on `key` into ours.
    fn map_err(&self, what: &str, key: &str, e: ::opendal::Error) -> Error {
        map_opendal_error(self.backend, &self.location, what, key, e)
    }

    /// Translates an error of a file store's direct file I/O. None of them is worth
    /// retrying: a local disk that fails now fails the next time too.
    fn map_io_err(&self, what: &str, key: &str, e: io::Error) -> Error {
        let ctx = format!("{what} {key} on {}", self.location);
        match e.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::NotADirectory
                if what == "get" =>
            {
                Error::NotFound(key.to_string())
            }
            io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
                Error::Permanent(key_collides(&ctx, &e.to_string()))
            }
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Error::NoSpace(disk_full(&ctx, &e.to_string()))
            }
            io::ErrorKind::PermissionDenied => {
                Error::Permanent(fs_denied(&ctx, &self.location, &e.to_string()))
            }
            _ => Error::Permanent(format!("{ctx}: {e}")),
        }
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, RangeError> {
        match self.op.read_with(key).range(range).await {
            Ok(b) => Ok(b.to_bytes()),
            // The memory and file services refuse a range past the end; on S3 the
            // server sends what there is and OpenDAL's completeness check refuses that;
            // a WebDAV server answers a range wholly past the end with 416.
            Err(f)
                if f.kind() == ErrorKind::RangeNotSatisfied
                    || (f.kind() == ErrorKind::Unexpected
                        && (f.message().contains("reader got too little data")
                            || f.to_string().contains("status: 416"))) =>
            {
                Err(RangeError::PastEnd)
            }
            Err(f) => Err(RangeError::Other(self.map_err("get", key, f))),
        }
    }

    /// The entries of one directory (non-recursive): `(path, is_dir, size)`, where a
    /// directory's path ends in `/`.
    async fn list_dir(&self, dir: &str) -> Result<Vec<(String, bool, u64)>> {
        if let Some(local) = &self.local {
            let mut entries = local
                .list_dir(dir)
                .await
                .map_err(|e| self.map_io_err("list", dir, e))?;
            if dir.is_empty() {
                entries.retain(|(path, _, _)| *path != format!("{FS_TMP_DIR}/"));
            }
            return Ok(entries);
        }
        let path = if dir.is_empty() { "/" } else { dir };
        let entries = match self.op.list(path).await {
            Ok(v) => v,
            // A directory removed since its parent was listed holds nothing.
            Err(f) if f.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(f) => return Err(self.map_err("list", dir, f)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let (path, meta) = entry.into_parts();
            // The listing includes the directory itself.
            if path == dir || path == "/" || path.is_empty() {
                continue;
            }
            match meta.mode() {
                EntryMode::DIR => {
                    if dir.is_empty() && path == format!("{FS_TMP_DIR}/") {
                        continue;
                    }
                    let p = if path.ends_with('/') {
                        path
                    } else {
                        format!("{path}/")
                    };
                    out.push((p, true, 0));
                }
                EntryMode::FILE => out.push((path, false, meta.content_length())),
                // Sockets, fifos and the like are not objects.
                EntryMode::Unknown => {}
            }
        }
        Ok(out)
    }

    /// Lists by walking directories depth-first (see [`crate::walk`]).
    async fn list_walk(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        list_by_walking(prefix, start_after, limit, |dir| async move {
            self.list_dir(&dir).await
        })
        .await
    }

    async fn list_native(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        let mut fut = self
            .op
            .lister_with(prefix)
            .recursive(true)
            .limit(limit.min(LIST_PAGE));
        if let Some(s) = start_after {
            fut = fut.start_after(s);
        }
        let mut lister = fut.await.map_err(|f| self.map_err("list", prefix, f))?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(entry) = lister
                .try_next()
                .await
                .map_err(|f| self.map_err("list", prefix, f))?
            else {
                break;
            };
            let (path, meta) = entry.into_parts();
            // Directory markers made by other tools (`dir/`) are not objects; the
            // service may also echo a resume point or a key outside the prefix.
            if path.ends_with('/')
                || meta.mode() == EntryMode::DIR
                || !path.starts_with(prefix)
                || start_after.is_some_and(|s| path.as_str() <= s)
            {
                continue;
            }
            out.push(ObjectInfo {
                key: path,
                size: meta.content_length(),
            });
        }
        Ok(out)
    }
}

enum RangeError {
    /// The range ends past the end of the object.
    PastEnd,
    Other(Error),
}

/// Removes what writes that failed or were cut off left in the temp directory. Only
/// files older than an hour: another process may be writing to the same directory now.
fn remove_stale_temp_files(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(3600);
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Rejects keys that OpenDAL would rewrite (`/a`, `a//b`, `a/`) or that name no object
/// (``, `.`/`..` segments), so two different keys never reach the same object.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Permanent(format!(
            "invalid object key {key:?}: {why} (this is a bug in the caller)"
        )))
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.contains('\0') {
        return bad("contains a NUL byte");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("starts or ends with '/'");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, '.' or '..' path segment");
    }
    Ok(())
}

fn error_chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| {
        let e: &'a (dyn StdError + 'static) = *e;
        e.source()
    })
}

/// The messages of an error and its sources, without repeats (wrappers often repeat
/// their source's text).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    for err in error_chain(e) {
        let msg = err.to_string();
        if msg.is_empty() || text.contains(&msg) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
}

fn is_disk_full(e: &(dyn StdError + 'static)) -> bool {
    error_chain(e).any(|err| {
        err.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        })
    })
}

/// Whether the request never reached a server: refused, unreachable, unknown host.
fn is_connect_failure(e: &(dyn StdError + 'static)) -> bool {
    error_chain(e).any(|err| {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        let msg = err.to_string();
        msg.contains("dns error")
            || msg.contains("tcp connect error")
            || msg.contains("client error (Connect)")
    })
}

/// The S3 error code inside OpenDAL's message (`S3Error { code: "AccessDenied", ...`).
fn s3_code(message: &str) -> Option<&str> {
    let rest = &message[message.find("code: \"")? + 7..];
    Some(&rest[..rest.find('"')?])
}

pub(crate) fn map_opendal_error(
    backend: Backend,
    location: &str,
    what: &str,
    key: &str,
    e: ::opendal::Error,
) -> Error {
    let text = chain_text(&e);
    let ctx = if key.is_empty() {
        format!("{what} on {location}")
    } else {
        format!("{what} {key} on {location}")
    };
    if is_disk_full(&e) {
        return Error::NoSpace(disk_full(&ctx, &text));
    }
    let code = s3_code(e.message()).unwrap_or_default().to_string();
    // A WebDAV server refuses to GET a collection (a directory): no such object.
    if backend == Backend::Other
        && matches!(what, "get" | "head")
        && e.to_string().contains("status: 405")
    {
        return Error::NotFound(key.to_string());
    }
    if backend == Backend::Other
        && (e.to_string().contains("status: 401") || e.to_string().contains("status: 403"))
    {
        return Error::Permanent(format!(
            "{ctx}: access denied: check the credentials (--access-key/--secret-key, or \
             ACCESS_KEY/SECRET_KEY) and that they may read and write there ({text})"
        ));
    }
    match e.kind() {
        ErrorKind::NotFound => return Error::NotFound(key.to_string()),
        // A directory of a file store is not an object.
        ErrorKind::IsADirectory if matches!(what, "get" | "head" | "delete") => {
            return Error::NotFound(key.to_string())
        }
        ErrorKind::PermissionDenied => {
            return Error::Permanent(match backend {
                Backend::S3 => format!(
                    "access denied by {location}{}: check the credentials \
                     (--access-key/--secret-key) and that they may read and write the bucket",
                    if code.is_empty() {
                        String::new()
                    } else {
                        format!(" ({code})")
                    }
                ),
                Backend::Fs => fs_denied(&ctx, location, &text),
                _ => format!("{ctx}: permission denied: {text}"),
            })
        }
        ErrorKind::ConfigInvalid if code == "NoSuchBucket" => {
            return Error::Config(no_such_bucket(location));
        }
        ErrorKind::ConfigInvalid => return Error::Config(format!("{ctx}: {text}")),
        ErrorKind::RateLimited => {
            return Error::Temporary(format!("{ctx}: throttled by the server: {text}"))
        }
        _ => {}
    }
    // OpenDAL calls these temporary; on a file store they mean the key names a
    // directory, or passes through a file: there is no such object, and no retry helps.
    if let Some(io) = error_chain(&e).find_map(|x| x.downcast_ref::<io::Error>()) {
        if matches!(
            io.kind(),
            io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory
        ) {
            return match what {
                "get" | "head" | "delete" => Error::NotFound(key.to_string()),
                _ => Error::Permanent(key_collides(&ctx, &text)),
            };
        }
    }
    if backend == Backend::S3 && is_connect_failure(&e) {
        // The innermost cause ("Connection refused") says it all; the wrappers only
        // repeat the URL.
        let cause = error_chain(&e)
            .last()
            .map(|c| c.to_string())
            .unwrap_or(text);
        return Error::Temporary(format!(
            "cannot reach {location}: is the server running? ({cause})"
        ));
    }
    if e.is_temporary() {
        return Error::Temporary(format!("{ctx}: {text}"));
    }
    let hint = match code.as_str() {
        "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "IllegalLocationConstraintException" => {
            "; the bucket is probably in another region: set AWS_REGION"
        }
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            "; check the credentials (--access-key/--secret-key)"
        }
        _ => "",
    };
    Error::Permanent(format!("{ctx}: {text}{hint}"))
}

fn disk_full(ctx: &str, text: &str) -> String {
    format!("{ctx}: {text}; free space on the disk or use another --bucket")
}

fn fs_denied(ctx: &str, location: &str, text: &str) -> String {
    format!(
        "{ctx}: permission denied: check that the user running nectar may read and write \
         {location} ({text})"
    )
}

fn key_collides(ctx: &str, text: &str) -> String {
    format!("{ctx}: the key collides with an object or directory of another key: {text}")
}

/// The message for a bucket that does not exist; `location` is its URL.
pub(crate) fn no_such_bucket(location: &str) -> String {
    let (endpoint, bucket) = match location.rsplit_once('/') {
        Some((e, b)) if e.contains("://") && !e.ends_with('/') => (e, b),
        _ => (location, "BUCKET"),
    };
    format!(
        "the bucket {location} does not exist: create it first, e.g. with \
         `aws s3 mb s3://{bucket} --endpoint-url {endpoint}`"
    )
}

#[async_trait]
impl ObjectStore for OpendalStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        if let Some(local) = &self.local {
            return local
                .put(key, data)
                .await
                .map_err(|e| self.map_io_err("put", key, e));
        }
        self.op
            .write(key, data)
            .await
            .map(|_| ())
            .map_err(|f| self.map_err("put", key, f))
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        validate_key(key)?;
        if let Some(local) = &self.local {
            return local
                .get(key, range)
                .await
                .map_err(|e| self.map_io_err("get", key, e));
        }
        let Some(range) = range else {
            return self
                .op
                .read(key)
                .await
                .map(|b| b.to_bytes())
                .map_err(|f| self.map_err("get", key, f));
        };
        if range.start >= range.end {
            // Nothing to read, but a missing object is still an error.
            return match self.head(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(Error::NotFound(key.to_string())),
            };
        }
        match self.read_range(key, range.clone()).await {
            // OpenDAL refuses a range that ends past the object; clamp it to the size,
            // as MemStore does (callers ask for whole blocks whose length they may not
            // know exactly). This costs a stat only in that unusual case.
            Err(RangeError::PastEnd) => match self.head(key).await? {
                None => Err(Error::NotFound(key.to_string())),
                Some(size) if range.start >= size => Ok(Bytes::new()),
                Some(size) => match self.read_range(key, range.start..size).await {
                    Ok(b) => Ok(b),
                    // Shrunk in between: report it rather than loop.
                    Err(RangeError::PastEnd) => Err(Error::Temporary(format!(
                        "object {key} changed size while being read"
                    ))),
                    Err(RangeError::Other(e)) => Err(e),
                },
            },
            Err(RangeError::Other(e)) => Err(e),
            Ok(b) => Ok(b),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        match self.op.stat(key).await {
            Ok(meta) if meta.mode() == EntryMode::FILE => Ok(Some(meta.content_length())),
            Ok(_) => Ok(None),
            Err(f) => match self.map_err("head", key, f) {
                Error::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let Some(local) = &self.local else {
            return crate::delete_each(self, keys).await;
        };
        for k in keys {
            validate_key(k)?;
        }
        local
            .delete_many(keys.to_vec())
            .await
            .map_err(|e| self.map_io_err("delete", &format!("({} objects)", keys.len()), e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(f) => match self.map_err("delete", key, f) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn sync(&self) -> Result<()> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        local.sync().await.map_err(|e| {
            Error::Permanent(format!(
                "syncing {} to its disk failed: {e}; objects written since the last sync may \
                 be lost: check the disk (dmesg)",
                self.location
            ))
        })
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if prefix.starts_with('/') || prefix.contains("//") {
            // OpenDAL would normalise these to other prefixes; no valid key has them.
            return Ok(Vec::new());
        }
        if self.native_list {
            self.list_native(prefix, start_after, limit).await
        } else {
            self.list_walk(prefix, start_after, limit).await
        }
    }
}
