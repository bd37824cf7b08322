//! HDFS as an object store, through the pure-Rust `hdfs-native` client used directly.
//!
//! A volume on HDFS names its bucket `hdfs://NAMESERVICE/path` or
//! `hdfs://host:port/path` (JuiceFS also accepts `host1:port,host2:port/path`, and so does
//! this): every object is a file under `path`, `<path>/<volume>/chunks/...`, and nothing is
//! read or written outside it, so a tenant confined to its own directory can hold a
//! volume. A nameservice (HA or federated) is resolved from `HADOOP_CONF_DIR`'s
//! `core-site.xml` and `hdfs-site.xml` by the client, as Hadoop's own clients do; a list of
//! NameNodes becomes a nameservice of its own.
//!
//! Credentials come from the environment, as in JuiceFS with NAVER's patches:
//! - `KRB5PRINCIPAL` with `KRB5KEYTAB` (a keytab file) or `KRB5KEYTAB_BASE64` (the keytab
//!   itself, as a Kubernetes Secret holds it). A base64 keytab is decoded into an anonymous
//!   in-memory file (`memfd_create`) that the Kerberos library reads through
//!   `/proc/self/fd/N`: it never touches a disk and disappears with the process, even one
//!   killed by SIGKILL. The library keeps the tickets in a private in-memory cache and
//!   gets new ones from the keytab before they expire, so a mount outlives any ticket
//!   lifetime (the reason NAVER left credential caches). `KRB5_CONFIG` is honoured by the
//!   library.
//! - `KRB5PRINCIPAL` alone uses the credential cache of `KRB5CCNAME` (a `kinit`).
//! - Without Kerberos the HDFS user is the access key if one is given (as in JuiceFS),
//!   else `HADOOP_USER_NAME`, else the process's user.
//!
//! Writes go to a temporary name beside the object (`.<name>.tmp<random>`, skipped by
//! listings) and are renamed over it when the file is complete, so a reader never sees a
//! partial object and a put cut off by a crash or a NameNode failover leaves at most a
//! temporary file (retrying the put is always safe). Objects are created `0600` and their
//! directories `0700`: blocks are for the volume's own principal only. NameNode failover
//! is the client's (the nameservice's NameNodes are tried in turn, with
//! `dfs.client.failover.*`); what still fails is reported as temporary and retried by the
//! data path like any store's error.
//!
//! hdfs-native keeps its NameNode connections on a runtime of the process (one thread;
//! the client is built inside it), so a store outlives the runtime it was built in; the
//! tasks of a block's transfer run on the runtime of the caller, next to the data path
//! (on a runtime of their own every packet crossed threads: a cold read took twice the
//! CPU).

use crate::walk::{list_by_walking, DirEntry};
use crate::{opendal::validate_key, Error, ObjectInfo, ObjectStore, Result};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The nameservice a comma-separated list of NameNodes is given (it never reaches a
/// server: the client resolves it to the list).
const LISTED_NAMENODES: &str = "nectar-namenodes";
/// Permissions of the files and directories a store creates.
const FILE_MODE: u32 = 0o600;

/// Where a volume's objects live in HDFS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HdfsLocation {
    /// What the client connects to: `hdfs://nameservice` or `hdfs://host:port`.
    url: String,
    /// Client configuration that goes with `url` (a list of NameNodes as a nameservice).
    config: HashMap<String, String>,
    /// The directory of every object: absolute, ending in `/`.
    base: String,
}

impl HdfsLocation {
    pub(crate) fn parse(bucket: &str) -> Result<Self> {
        let usage = "the bucket of storage hdfs is hdfs://NAMESERVICE/path or \
                     hdfs://namenode:port/path (e.g. hdfs://mycluster/user/tenant)";
        let rest = match bucket.split_once("://") {
            Some(("hdfs", rest)) => rest,
            Some((scheme, _)) => {
                return Err(Error::Config(format!(
                    "{usage}; got the scheme {scheme:?} in {bucket:?}"
                )))
            }
            None => bucket,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(Error::Config(format!(
                "{usage}; {bucket:?} names no NameNode or nameservice"
            )));
        }
        let mut config = HashMap::new();
        let url = if authority.contains(',') {
            let mut ids = Vec::new();
            for (i, addr) in authority.split(',').enumerate() {
                if !has_port(addr) {
                    return Err(Error::Config(format!(
                        "{usage}; in a list of NameNodes each is host:port, got {addr:?}"
                    )));
                }
                let id = format!("nn{i}");
                config.insert(
                    format!("dfs.namenode.rpc-address.{LISTED_NAMENODES}.{id}"),
                    addr.to_string(),
                );
                ids.push(id);
            }
            config.insert(
                format!("dfs.ha.namenodes.{LISTED_NAMENODES}"),
                ids.join(","),
            );
            format!("hdfs://{LISTED_NAMENODES}")
        } else {
            format!("hdfs://{authority}")
        };
        url::Url::parse(&url)
            .map_err(|e| Error::Config(format!("{usage}; {bucket:?} is not a URL: {e}")))?;
        let mut base = String::from("/");
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.contains('\0') {
                return Err(Error::Config(format!(
                    "{usage}; the path of {bucket:?} may not have '.' or '..' parts"
                )));
            }
            base.push_str(part);
            base.push('/');
        }
        Ok(Self { url, config, base })
    }

    /// The location as users write it, ending in `/`.
    fn describe(&self) -> String {
        match self
            .config
            .get(&format!("dfs.ha.namenodes.{LISTED_NAMENODES}"))
        {
            Some(ids) => {
                let addrs: Vec<&str> = ids
                    .split(',')
                    .filter_map(|id| {
                        self.config
                            .get(&format!("dfs.namenode.rpc-address.{LISTED_NAMENODES}.{id}"))
                            .map(String::as_str)
                    })
                    .collect();
                format!("hdfs://{}{}", addrs.join(","), self.base)
            }
            None => format!("{}{}", self.url, self.base),
        }
    }
}

fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Kerberos credentials of a store.
pub(crate) struct Kerberos {
    principal: String,
    keytab: Option<Keytab>,
}

/// A keytab the Kerberos library reads by path.
enum Keytab {
    File(String),
    /// Decoded from base64 into an anonymous in-memory file.
    Memory(OwnedFd),
}

impl Keytab {
    fn path(&self) -> String {
        match self {
            Keytab::File(path) => path.clone(),
            Keytab::Memory(fd) => format!("/proc/self/fd/{}", fd.as_raw_fd()),
        }
    }
}

impl std::fmt::Debug for Kerberos {
    // A keytab's bytes are a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kerberos")
            .field("principal", &self.principal)
            .field(
                "keytab",
                &match &self.keytab {
                    None => "credential cache",
                    Some(Keytab::File(_)) => "file",
                    Some(Keytab::Memory(_)) => "in memory",
                },
            )
            .finish()
    }
}

impl Kerberos {
    /// The credentials the environment gives: `KRB5PRINCIPAL`, `KRB5KEYTAB`,
    /// `KRB5KEYTAB_BASE64`; `None` without a principal or keytab.
    pub(crate) fn from_env() -> Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::new(
            var("KRB5PRINCIPAL"),
            var("KRB5KEYTAB"),
            var("KRB5KEYTAB_BASE64"),
        )
    }

    pub(crate) fn new(
        principal: Option<String>,
        keytab: Option<String>,
        keytab_base64: Option<String>,
    ) -> Result<Option<Self>> {
        let keytab = match (keytab, keytab_base64) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "both KRB5KEYTAB and KRB5KEYTAB_BASE64 are set; set one of them".into(),
                ))
            }
            (Some(path), None) => {
                let bytes = std::fs::read(&path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read the keytab KRB5KEYTAB={path}: {e}; it must be a file \
                         this process can read"
                    ))
                })?;
                check_keytab(&bytes, &format!("KRB5KEYTAB={path}"))?;
                Some(Keytab::File(path))
            }
            (None, Some(b64)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        Error::Config(format!(
                            "KRB5KEYTAB_BASE64 is not valid base64 ({e}); encode the keytab \
                             with `base64 -w0 FILE`"
                        ))
                    })?;
                check_keytab(&bytes, "KRB5KEYTAB_BASE64")?;
                Some(Keytab::Memory(memory_file(&bytes)?))
            }
            (None, None) => None,
        };
        match principal {
            Some(principal) => Ok(Some(Self { principal, keytab })),
            None if keytab.is_some() => Err(Error::Config(
                "a keytab is set but KRB5PRINCIPAL is not; set it to the principal whose key \
                 the keytab holds (e.g. tenant@EXAMPLE.COM)"
                    .into(),
            )),
            None => Ok(None),
        }
    }
}

/// A keytab file starts with version 0x0502 (0x0501 in very old ones).
fn check_keytab(bytes: &[u8], what: &str) -> Result<()> {
    if bytes.len() < 2 || bytes[0] != 5 || !matches!(bytes[1], 1 | 2) {
        return Err(Error::Config(format!(
            "{what} does not hold a Kerberos keytab (one starts with the bytes 05 02); \
             make it with `kadmin ktadd` or `ktutil`"
        )));
    }
    Ok(())
}

/// An anonymous file in memory holding `bytes`, closed on exec.
fn memory_file(bytes: &[u8]) -> Result<OwnedFd> {
    let fail = |e: std::io::Error| {
        Error::Config(format!(
            "cannot keep the keytab of KRB5KEYTAB_BASE64 in memory: {e}"
        ))
    };
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"nectar-keytab".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes).map_err(fail)?;
    Ok(file.into())
}

/// The runtime of every HDFS client's NameNode connections, for the whole process (never
/// dropped: a runtime may not be dropped inside another, where a store may end).
fn namenode_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("nectar-hdfs")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Config(format!("cannot start the HDFS client's thread: {e}")))
}

/// An [`ObjectStore`] on HDFS.
pub struct HdfsStore {
    client: Client,
    location: HdfsLocation,
    principal: Option<String>,
    has_keytab: bool,
    /// Read by the Kerberos library whenever it needs new tickets: kept open as long as
    /// the client lives.
    _keytab: Option<Keytab>,
}

impl HdfsStore {
    /// A store at `bucket` (see the module doc) with Kerberos credentials from the
    /// environment. `user` (JuiceFS's `--access-key` for HDFS) is the HDFS user when
    /// Kerberos is off, before `HADOOP_USER_NAME`.
    pub fn from_env(bucket: &str, user: Option<&str>) -> Result<Self> {
        Self::new(bucket, Kerberos::from_env()?, user)
    }

    pub(crate) fn new(
        bucket: &str,
        kerberos: Option<Kerberos>,
        user: Option<&str>,
    ) -> Result<Self> {
        let location = HdfsLocation::parse(bucket)?;
        let mut config = location.config.clone();
        let mut builder = ClientBuilder::new().with_url(&location.url);
        let (principal, keytab) = match kerberos {
            Some(k) => {
                // Without this a client configured for SIMPLE would not even try the
                // credentials it was given (the NameNode then drops the connection).
                config.insert("hadoop.security.authentication".into(), "kerberos".into());
                builder = builder.with_kerberos_principal(&k.principal);
                if let Some(keytab) = &k.keytab {
                    builder = builder.with_kerberos_keytab(keytab.path());
                }
                (Some(k.principal), k.keytab)
            }
            None => {
                if let Some(user) = user {
                    builder = builder.with_user(user);
                }
                (None, None)
            }
        };
        // Built inside the process's HDFS runtime: the client's NameNode connections run
        // there and outlive whichever runtime builds the store, while block reads and
        // writes spawn their tasks on the runtime that calls them, next to the data path.
        let client = {
            let _runtime = namenode_runtime()?.enter();
            builder.with_config(config).build()
        };
        let client = client.map_err(|e| {
            let hint = match &e {
                HdfsError::InvalidArgument(m) if m.contains("No NameNode hosts") => format!(
                    "; {} is neither host:port nor a nameservice defined in \
                     HADOOP_CONF_DIR's hdfs-site.xml (dfs.nameservices, dfs.ha.namenodes.NS, \
                     dfs.namenode.rpc-address.NS.ID){}",
                    location.url,
                    match std::env::var_os("HADOOP_CONF_DIR") {
                        Some(_) => "",
                        None => "; HADOOP_CONF_DIR is not set",
                    }
                ),
                _ => String::new(),
            };
            Error::Config(format!("HDFS at {}: {e}{hint}", location.describe()))
        })?;
        Ok(Self {
            client,
            location,
            principal,
            has_keytab: keytab.is_some(),
            _keytab: keytab,
        })
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.location.base)
    }

    /// Turns a client error into this crate's, saying what to check.
    fn map_err(&self, what: &str, key: &str, e: HdfsError) -> Error {
        let at = format!("{what} {} in {}", key, self.location.describe());
        let who = match &self.principal {
            Some(p) => format!("the principal {p}"),
            None => "this user (HADOOP_USER_NAME, or the process's user)".into(),
        };
        match e {
            HdfsError::FileNotFound(_) => Error::NotFound(key.to_string()),
            HdfsError::RPCError(class, msg) | HdfsError::FatalRPCError(class, msg) => {
                let short = class.rsplit('.').next().unwrap_or(&class).to_string();
                let first_line = msg.lines().next().unwrap_or("").to_string();
                match short.as_str() {
                    "FileNotFoundException" => Error::NotFound(key.to_string()),
                    "AccessControlException" => Error::Permanent(format!(
                        "cannot {at}: permission denied ({first_line}); {who} needs write \
                         access to {}",
                        self.location.base
                    )),
                    "NSQuotaExceededException" | "DSQuotaExceededException" => {
                        Error::NoSpace(format!("cannot {at}: HDFS quota exceeded: {first_line}"))
                    }
                    "StandbyException"
                    | "SafeModeException"
                    | "RetriableException"
                    | "NotReplicatedYetException"
                    | "LeaseExpiredException"
                    | "ObserverRetryOnActiveException" => {
                        Error::Temporary(format!("cannot {at}: {short}: {first_line}"))
                    }
                    _ => Error::Permanent(format!("cannot {at}: {short}: {first_line}")),
                }
            }
            HdfsError::GSSAPIError(_, _, msg) => Error::Permanent(format!(
                "cannot {at}: Kerberos authentication failed: {msg}{}",
                kerberos_hint(&msg, self.has_keytab)
            )),
            HdfsError::SASLError(_) | HdfsError::NoSASLMechanism => Error::Permanent(format!(
                "cannot {at}: {e}; check that the cluster's security settings in \
                 HADOOP_CONF_DIR (hadoop.security.authentication) match the NameNode's"
            )),
            HdfsError::IOError(io) => Error::Temporary(format!(
                "cannot {at}: {io}; is the NameNode running and reachable? If the cluster \
                 uses Kerberos, set KRB5PRINCIPAL and KRB5KEYTAB (or KRB5KEYTAB_BASE64)"
            )),
            HdfsError::InvalidPath(_) | HdfsError::InvalidArgument(_) => {
                Error::Config(format!("cannot {at}: {e}"))
            }
            HdfsError::IsADirectoryError(_) | HdfsError::UnsupportedFeature(_) => {
                Error::Permanent(format!("cannot {at}: {e}"))
            }
            // Data transfer, checksums, missing blocks, a file that did not complete in
            // time: a DataNode or the NameNode may be restarting.
            other => Error::Temporary(format!("cannot {at}: {other}")),
        }
    }

    /// Writes `data` to a new file at `path`.
    async fn write_file(&self, path: &str, data: Bytes) -> std::result::Result<(), HdfsError> {
        let options = WriteOptions::default()
            .permission(FILE_MODE)
            .overwrite(false)
            .create_parent(true);
        let mut writer = self.client.create(path, options).await?;
        let written = writer.write_bytes(data).await;
        // Close even after a failed write: it releases the file's lease.
        let closed = writer.close().await;
        written?;
        closed
    }

    /// The entries of one directory, relative to the store's base.
    async fn list_dir(&self, dir: String) -> Result<Vec<DirEntry>> {
        let full = self.path(&dir);
        let statuses = match self.client.list_status(&full, false).await {
            Ok(s) => s,
            Err(HdfsError::FileNotFound(_)) => return Ok(Vec::new()),
            Err(e) => match self.map_err("list", &dir, e) {
                Error::NotFound(_) => return Ok(Vec::new()),
                e => return Err(e),
            },
        };
        let mut out = Vec::with_capacity(statuses.len());
        for s in statuses {
            let name = s.path.rsplit('/').next().unwrap_or("");
            if name.is_empty() || is_temp_name(name) {
                continue;
            }
            if s.isdir {
                out.push((format!("{dir}{name}/"), true, 0));
            } else {
                out.push((format!("{dir}{name}"), false, s.length as u64));
            }
        }
        Ok(out)
    }
}

/// The temporary name a put writes `path` under before renaming it.
fn temp_path(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let name: String = name.chars().take(200).collect();
    format!("{dir}/.{name}.tmp{:016x}", rand::random::<u64>())
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp")
}

/// What to check for a Kerberos failure, from the library's message.
fn kerberos_hint(msg: &str, has_keytab: bool) -> &'static str {
    if msg.contains("not found in Kerberos database") {
        "; the principal (KRB5PRINCIPAL) is unknown to the KDC"
    } else if msg.contains("Clock skew") {
        "; this machine's clock differs too much from the KDC's: synchronise it"
    } else if msg.contains("Key table") || msg.contains("keytab") {
        "; the keytab (KRB5KEYTAB or KRB5KEYTAB_BASE64) cannot be read or lacks the \
         principal's key"
    } else if msg.contains("Cannot contact any KDC") || msg.contains("Cannot find KDC") {
        "; no KDC answers: check KRB5_CONFIG (or /etc/krb5.conf) and the KDC"
    } else if msg.contains("Preauthentication failed") || msg.contains("Decrypt integrity") {
        "; the keytab's key is not the principal's current one (it was re-keyed?)"
    } else if has_keytab && msg.contains("No credentials") {
        "; the keytab holds no key for KRB5PRINCIPAL, or the KDC does not know that principal"
    } else if msg.contains("No Kerberos credentials") || msg.contains("No credentials cache") {
        "; no tickets: set KRB5PRINCIPAL with KRB5KEYTAB or KRB5KEYTAB_BASE64, or kinit"
    } else {
        "; check KRB5PRINCIPAL, KRB5KEYTAB (or KRB5KEYTAB_BASE64) and KRB5_CONFIG"
    }
}

#[async_trait]
impl ObjectStore for HdfsStore {
    fn describe(&self) -> String {
        self.location.describe()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let path = self.path(key);
        let tmp = temp_path(&path);
        let mut result = self.write_file(&tmp, data).await;
        if result.is_ok() {
            result = self.client.rename(&tmp, &path, true).await;
        }
        if let Err(e) = result {
            // Best effort: a temporary file is invisible to listings anyway.
            let _ = self.client.delete(&tmp, false).await;
            return Err(self.map_err("write", key, e));
        }
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        validate_key(key)?;
        let reader = self
            .client
            .read(&self.path(key))
            .await
            .map_err(|e| self.map_err("read", key, e))?;
        let len = reader.file_length() as u64;
        let (start, end) = match range {
            Some(r) => (r.start.min(len), r.end.min(len).max(r.start.min(len))),
            None => (0, len),
        };
        if start == end {
            return Ok(Bytes::new());
        }
        reader
            .read_range(start as usize, (end - start) as usize)
            .await
            .map_err(|e| self.map_err("read", key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        match self.client.get_file_info(&self.path(key)).await {
            Ok(s) if s.isdir => Ok(None),
            Ok(s) => Ok(Some(s.length as u64)),
            Err(e) => match self.map_err("stat", key, e) {
                Error::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self.client.delete(&self.path(key), false).await {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("delete", key, e) {
                Error::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        list_by_walking(prefix, start_after, limit, |dir| self.list_dir(dir)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = HdfsLocation::parse("hdfs://mycluster/user/tenant").unwrap();
        assert_eq!(l.url, "hdfs://mycluster");
        assert_eq!(l.base, "/user/tenant/");
        assert!(l.config.is_empty());
        assert_eq!(l.describe(), "hdfs://mycluster/user/tenant/");

        let l = HdfsLocation::parse("hdfs://nn:8020").unwrap();
        assert_eq!((l.url.as_str(), l.base.as_str()), ("hdfs://nn:8020", "/"));
        let l = HdfsLocation::parse("nn:8020//a//b/").unwrap();
        assert_eq!(
            (l.url.as_str(), l.base.as_str()),
            ("hdfs://nn:8020", "/a/b/")
        );

        let l = HdfsLocation::parse("hdfs://h1:8020,h2:8021/jfs").unwrap();
        assert_eq!(l.url, format!("hdfs://{LISTED_NAMENODES}"));
        assert_eq!(
            l.config[&format!("dfs.ha.namenodes.{LISTED_NAMENODES}")],
            "nn0,nn1"
        );
        assert_eq!(
            l.config[&format!("dfs.namenode.rpc-address.{LISTED_NAMENODES}.nn1")],
            "h2:8021"
        );
        assert_eq!(l.describe(), "hdfs://h1:8020,h2:8021/jfs/");

        for bad in [
            "hdfs:///user/x",
            "s3://bucket/x",
            "hdfs://ns/user/../other",
            "hdfs://ns/./x",
            "hdfs://h1:8020,h2/x",
            "hdfs://bad host/x",
        ] {
            let e = HdfsLocation::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{bad}: {e}");
            assert!(e.to_string().contains("hdfs://NAMESERVICE/path"), "{e}");
        }
    }

    fn keytab_bytes() -> Vec<u8> {
        let mut k = vec![5, 2];
        k.extend_from_slice(b"not a real entry, but the version is right");
        k
    }

    #[test]
    fn keytab_from_base64_lives_in_memory() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(keytab_bytes());
        let k = Kerberos::new(Some("t@R".into()), None, Some(b64))
            .unwrap()
            .unwrap();
        let path = k.keytab.as_ref().unwrap().path();
        assert!(path.starts_with("/proc/self/fd/"), "{path}");
        // The library reads the same bytes through the path; no file on disk.
        assert_eq!(std::fs::read(&path).unwrap(), keytab_bytes());
        let target = std::fs::read_link(&path).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:"),
            "{target:?}"
        );
        // Never in a debug print.
        assert!(!format!("{k:?}").contains("/proc"), "{k:?}");
        drop(k);
        assert!(std::fs::read(&path).is_err() || std::fs::read(&path).unwrap() != keytab_bytes());
    }

    #[test]
    fn bad_credentials_say_what_to_fix() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(keytab_bytes());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.keytab");
        std::fs::write(&file, keytab_bytes()).unwrap();
        let file = file.to_string_lossy().to_string();

        let err = |p: Option<&str>, k: Option<&str>, b: Option<&str>| {
            Kerberos::new(p.map(Into::into), k.map(Into::into), b.map(Into::into))
                .unwrap_err()
                .to_string()
        };
        assert!(err(Some("t@R"), Some(&file), Some(&b64)).contains("set one of them"));
        assert!(err(None, Some(&file), None).contains("KRB5PRINCIPAL is not"));
        assert!(err(None, None, Some(&b64)).contains("KRB5PRINCIPAL is not"));
        assert!(err(Some("t@R"), Some("/nonexistent/k"), None).contains("cannot read the keytab"));
        let e = err(Some("t@R"), None, Some("%%%"));
        assert!(e.contains("not valid base64") && !e.contains("%%%"), "{e}");
        let not_keytab = base64::engine::general_purpose::STANDARD.encode(b"hello");
        assert!(
            err(Some("t@R"), None, Some(&not_keytab)).contains("does not hold a Kerberos keytab")
        );

        assert!(Kerberos::new(None, None, None).unwrap().is_none());
        let k = Kerberos::new(Some("t@R".into()), Some(file.clone()), None)
            .unwrap()
            .unwrap();
        assert_eq!(k.keytab.unwrap().path(), file);
        let k = Kerberos::new(Some("t@R".into()), None, None)
            .unwrap()
            .unwrap();
        assert!(k.keytab.is_none());
    }

    #[test]
    fn temporary_names_are_hidden() {
        let t = temp_path("/user/t/vol/chunks/0/0/1_0_4096");
        let (dir, name) = t.rsplit_once('/').unwrap();
        assert_eq!(dir, "/user/t/vol/chunks/0/0");
        assert!(is_temp_name(name), "{name}");
        assert!(!is_temp_name("1_0_4096"));
        assert!(!is_temp_name("nectar-check-0123"));
    }
}
