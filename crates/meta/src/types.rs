//! Metadata types and their stored encodings (those of JuiceFS, byte for byte).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// An inode number.
pub type Ino = u64;

pub const ROOT_INODE: Ino = 1;
/// The trash directory, `.trash` at the root (see `trash.rs`); its hour directories
/// take the inode numbers above it.
pub const TRASH_INODE: Ino = 0x7FFF_FFFF_1000_0000;
/// The name the trash is looked up by in the root directory.
pub const TRASH_NAME: &[u8] = b".trash";

/// Whether `ino` is the trash or one of its hour directories.
pub fn is_trash(ino: Ino) -> bool {
    ino >= TRASH_INODE
}

/// An attribute flag (JuiceFS's, set by `chattr +s` there): the inode skips the trash
/// when removed.
pub const FLAG_SKIP_TRASH: u8 = 1 << 5;
/// Chunks are 64 MiB: `index = offset >> CHUNK_BITS`.
pub const CHUNK_BITS: u32 = 26;
pub const CHUNK_SIZE: u64 = 1 << CHUNK_BITS;
pub const MAX_NAME: usize = 255;
pub const MAX_SYMLINK: usize = 4096;
/// Largest file: 2^57 bytes (as JuiceFS).
pub const MAX_FILE_SIZE: u64 = 1 << 57;
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 65536;

/// Node types, numbered as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileType {
    File = 1,
    Directory = 2,
    Symlink = 3,
    Fifo = 4,
    BlockDev = 5,
    CharDev = 6,
    Socket = 7,
}

impl FileType {
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => FileType::File,
            2 => FileType::Directory,
            3 => FileType::Symlink,
            4 => FileType::Fifo,
            5 => FileType::BlockDev,
            6 => FileType::CharDev,
            7 => FileType::Socket,
            _ => return Err(Error::Corrupt(format!("unknown node type {v}"))),
        })
    }

    /// The `S_IF*` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::File => libc::S_IFREG,
            FileType::Directory => libc::S_IFDIR,
            FileType::Symlink => libc::S_IFLNK,
            FileType::Fifo => libc::S_IFIFO,
            FileType::BlockDev => libc::S_IFBLK,
            FileType::CharDev => libc::S_IFCHR,
            FileType::Socket => libc::S_IFSOCK,
        }
    }

    /// The type named by the `S_IF*` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => FileType::File,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFBLK => FileType::BlockDev,
            libc::S_IFCHR => FileType::CharDev,
            libc::S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }
}

/// When reads update atime (`mount --atime-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    /// Never (the default, as in JuiceFS): reads cost no metadata write.
    #[default]
    NoAtime,
    /// Linux's default: when atime is not after mtime or ctime, or is a day old.
    RelAtime,
    /// On every access, at most once a second per file (a metadata write each time).
    StrictAtime,
}

impl std::str::FromStr for AtimeMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "noatime" => Ok(AtimeMode::NoAtime),
            "relatime" => Ok(AtimeMode::RelAtime),
            "strictatime" => Ok(AtimeMode::StrictAtime),
            other => Err(format!(
                "unknown atime mode {other:?}: use noatime, relatime or strictatime"
            )),
        }
    }
}

impl AtimeMode {
    /// Whether an access at `now` must store a new atime in `attr`.
    pub fn needs_update(self, attr: &Attr, now: Time) -> bool {
        match self {
            AtimeMode::NoAtime => false,
            AtimeMode::RelAtime => {
                attr.atime <= attr.mtime
                    || attr.atime <= attr.ctime
                    || now.sec - attr.atime.sec >= 24 * 3600
            }
            AtimeMode::StrictAtime => now.sec > attr.atime.sec,
        }
    }
}

/// A point in time: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    pub fn to_system_time(self) -> std::time::SystemTime {
        use std::time::{Duration, UNIX_EPOCH};
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs())
                + Duration::from_nanos(self.nsec as u64)
        }
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Time { sec, nsec }
            }
        }
    }
}

/// A UTC calendar time, to the second: what backup names and trash directories are
/// named by (`YYYY-MM-DD-HHMMSS`, `YYYY-MM-DD-HH`, as JuiceFS names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// The calendar time of `secs` since the epoch (proleptic Gregorian calendar).
    pub fn from_secs(secs: i64) -> Utc {
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days to a civil date (H. Hinnant's algorithm): eras of 400 years.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest % 3600 / 60) as u32,
            second: (rest % 60) as u32,
        }
    }

    /// Seconds since the epoch; a day past the end of its month rolls over into the
    /// next one (as Go's `time.Date` normalises it).
    pub fn to_secs(self) -> i64 {
        let (y, m) = (
            self.year - i64::from(self.month <= 2),
            i64::from(self.month),
        );
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// `YYYY-MM-DD-HHMMSS`.
    pub fn stamp(self) -> String {
        format!(
            "{:04}-{:02}-{:02}-{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYY-MM-DD-HH`: the name of the trash's directory for this hour.
    pub fn hour_name(self) -> String {
        format!(
            "{:04}-{:02}-{:02}-{:02}",
            self.year, self.month, self.day, self.hour
        )
    }

    /// Reads [`Utc::hour_name`]'s form back (minutes and seconds zero).
    pub fn parse_hour(s: &str) -> Option<Utc> {
        Self::parse_stamp(&format!("{s}0000")).filter(|_| s.len() == 13)
    }

    /// Reads [`Utc::stamp`]'s form back.
    pub fn parse_stamp(s: &str) -> Option<Utc> {
        let b = s.as_bytes();
        if b.len() != 17 || b[4] != b'-' || b[7] != b'-' || b[10] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
        let t = Utc {
            year: i64::from(num(0..4)?),
            month: num(5..7)?,
            day: num(8..10)?,
            hour: num(11..13)?,
            minute: num(13..15)?,
            second: num(15..17)?,
        };
        let valid = (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day)
            && t.hour < 24
            && t.minute < 60
            && t.second < 60;
        valid.then_some(t)
    }
}

/// Attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub flags: u8,
    pub typ: FileType,
    /// Permission bits only (07777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub nlink: u32,
    pub length: u64,
    pub rdev: u32,
    /// The parent directory; 0 when the inode has several parents (hard links).
    pub parent: Ino,
    pub access_acl: u32,
    pub default_acl: u32,
}

/// Size of an encoded attribute without ACL ids.
pub const ATTR_LEN: usize = 71;

impl Attr {
    /// The link count to show: a file in the trash has no name left in the tree, so it
    /// shows 0, as POSIX has it for a file unlinked while open (`fstat` after `unlink`);
    /// metadata keeps the trash's entry as its one link.
    pub fn visible_nlink(&self) -> u32 {
        if self.typ != FileType::Directory && is_trash(self.parent) {
            0
        } else {
            self.nlink
        }
    }

    pub fn new(typ: FileType, mode: u16, uid: u32, gid: u32) -> Self {
        let now = Time::now();
        Attr {
            flags: 0,
            typ,
            mode: mode & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
            length: 0,
            rdev: 0,
            parent: 0,
            access_acl: 0,
            default_acl: 0,
        }
    }

    /// `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.typ.mode_bits() | self.mode as u32
    }

    pub fn encode(&self) -> Vec<u8> {
        let with_acl = self.access_acl != 0 || self.default_acl != 0;
        let mut b = Vec::with_capacity(ATTR_LEN + 8);
        b.push(self.flags);
        b.extend_from_slice(&(((self.typ as u16) << 12) | (self.mode & 0o7777)).to_be_bytes());
        b.extend_from_slice(&self.uid.to_be_bytes());
        b.extend_from_slice(&self.gid.to_be_bytes());
        for t in [self.atime, self.mtime, self.ctime] {
            b.extend_from_slice(&t.sec.to_be_bytes());
            b.extend_from_slice(&t.nsec.to_be_bytes());
        }
        b.extend_from_slice(&self.nlink.to_be_bytes());
        b.extend_from_slice(&self.length.to_be_bytes());
        b.extend_from_slice(&self.rdev.to_be_bytes());
        b.extend_from_slice(&self.parent.to_be_bytes());
        if with_acl {
            b.extend_from_slice(&self.access_acl.to_be_bytes());
            b.extend_from_slice(&self.default_acl.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < ATTR_LEN {
            return Err(Error::Corrupt(format!("attribute of {} bytes", b.len())));
        }
        let mut r = Reader(b);
        let flags = r.u8();
        let mode = r.u16();
        let typ = FileType::from_u8((mode >> 12) as u8)?;
        let uid = r.u32();
        let gid = r.u32();
        let mut times = [Time::default(); 3];
        for t in times.iter_mut() {
            t.sec = r.u64() as i64;
            t.nsec = r.u32();
        }
        let nlink = r.u32();
        let length = r.u64();
        let rdev = r.u32();
        let parent = r.u64();
        let (access_acl, default_acl) = if r.0.len() >= 8 {
            (r.u32(), r.u32())
        } else {
            (0, 0)
        };
        Ok(Attr {
            flags,
            typ,
            mode: mode & 0o7777,
            uid,
            gid,
            atime: times[0],
            mtime: times[1],
            ctime: times[2],
            nlink,
            length,
            rdev,
            parent,
            access_acl,
            default_acl,
        })
    }
}

/// A cursor over big-endian fields; callers check the length first.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (a, rest) = self.0.split_at(N);
        self.0 = rest;
        a.try_into().unwrap_or([0; N])
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

/// One slice record of a chunk: bytes `[off, off+len)` of slice `id` (whose objects hold
/// `size` bytes) appear at `pos` within the chunk. `id == 0` is a hole (reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub pos: u32,
    pub id: u64,
    pub size: u32,
    pub off: u32,
    pub len: u32,
}

pub const SLICE_LEN: usize = 24;

impl Slice {
    pub fn encode(&self) -> [u8; SLICE_LEN] {
        let mut b = [0u8; SLICE_LEN];
        b[0..4].copy_from_slice(&self.pos.to_be_bytes());
        b[4..12].copy_from_slice(&self.id.to_be_bytes());
        b[12..16].copy_from_slice(&self.size.to_be_bytes());
        b[16..20].copy_from_slice(&self.off.to_be_bytes());
        b[20..24].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Decodes a chunk value: concatenated records, later ones written later.
    pub fn decode_all(b: &[u8]) -> Result<Vec<Slice>> {
        if !b.len().is_multiple_of(SLICE_LEN) {
            return Err(Error::Corrupt(format!("chunk value of {} bytes", b.len())));
        }
        Ok(b.chunks_exact(SLICE_LEN)
            .map(|c| {
                let mut r = Reader(c);
                Slice {
                    pos: r.u32(),
                    id: r.u64(),
                    size: r.u32(),
                    off: r.u32(),
                    len: r.u32(),
                }
            })
            .collect())
    }
}

/// The volume's settings, stored as JSON under `setting` with JuiceFS's field names.
/// `Default` is all zeros and empty names, for tests to fill in what they need.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Format {
    pub name: String,
    #[serde(rename = "UUID")]
    pub uuid: String,
    pub storage: String,
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// KiB.
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub hash_prefix: bool,
    /// Bytes; 0 means unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub capacity: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inodes: u64,
    #[serde(default)]
    pub trash_days: u32,
    #[serde(default)]
    pub meta_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_client_version: Option<String>,
    #[serde(default)]
    pub dir_stats: bool,
    #[serde(rename = "EnableACL", default)]
    pub enable_acl: bool,
    /// Settings Nectar does not use, kept as they were (a JuiceFS volume's `Shards`,
    /// `StorageClass`, `UploadLimit`, `EncryptKey`... after a `load` of its dump), so
    /// that they survive a later `dump` and the volume can go back.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// JuiceFS's cipher of the secrets in the settings: AES-128-GCM keyed by MD5(UUID).
fn secrets_cipher(uuid: &str) -> aes_gcm::Aes128Gcm {
    use aes_gcm::KeyInit;
    use md5::Digest;
    let key = md5::Md5::digest(uuid.as_bytes());
    aes_gcm::Aes128Gcm::new(&key)
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Format {
    /// The settings with the secrets JuiceFS obfuscates (`KeyEncrypted`: the object
    /// store's secret key and session token and the RSA key of encrypted data, each
    /// AES-GCM-sealed with a key derived from the UUID and base64-encoded) opened, as
    /// they are used in memory. An obfuscation, not a protection: anyone with the
    /// settings has the UUID.
    pub fn with_secrets_opened(mut self) -> Result<Format, String> {
        if self.other.remove("KeyEncrypted").and_then(|v| v.as_bool()) != Some(true) {
            return Ok(self);
        }
        let cipher = secrets_cipher(&self.uuid);
        let open = |v: &str| -> Result<String, String> {
            if v.is_empty() || v == "removed" {
                return Ok(v.to_string());
            }
            use aes_gcm::aead::Aead;
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| format!("an obfuscated secret is not base64 ({e})"))?;
            if b.len() < 12 {
                return Err("an obfuscated secret is too short".into());
            }
            let plain = cipher
                .decrypt(aes_gcm::Nonce::from_slice(&b[..12]), &b[12..])
                .map_err(|_| {
                    "an obfuscated secret does not open with the volume's UUID".to_string()
                })?;
            String::from_utf8(plain).map_err(|_| "an obfuscated secret is not text".into())
        };
        if let Some(k) = &self.secret_key {
            self.secret_key = Some(open(k)?);
        }
        for name in ["SessionToken", "EncryptKey"] {
            if let Some(v) = self.other.get(name).and_then(|v| v.as_str()) {
                let opened = open(v)?;
                self.other.insert(name.into(), opened.into());
            }
        }
        Ok(self)
    }

    /// The settings as they are stored and dumped: secrets obfuscated as JuiceFS does
    /// (see [`Format::with_secrets_opened`]), so either system reads them.
    pub fn with_secrets_sealed(&self) -> Format {
        use aes_gcm::aead::{Aead, AeadCore};
        use base64::Engine;
        let mut f = self.clone();
        let cipher = secrets_cipher(&f.uuid);
        let mut sealed_any = false;
        let mut seal = |v: &str| -> String {
            if v.is_empty() || v == "removed" {
                return v.to_string();
            }
            let nonce = aes_gcm::Aes128Gcm::generate_nonce(&mut aes_gcm::aead::OsRng);
            let Ok(ct) = cipher.encrypt(&nonce, v.as_bytes()) else {
                return v.to_string();
            };
            sealed_any = true;
            let mut b = nonce.to_vec();
            b.extend_from_slice(&ct);
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        if let Some(k) = &f.secret_key {
            f.secret_key = Some(seal(k));
        }
        for name in ["SessionToken", "EncryptKey"] {
            if let Some(v) = f
                .other
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
            {
                let sealed = seal(&v);
                f.other.insert(name.into(), sealed.into());
            }
        }
        if sealed_any {
            f.other.insert("KeyEncrypted".into(), true.into());
        }
        f
    }

    /// A copy safe to print or dump: secrets replaced by "removed" (the object store's
    /// secret key and session token, the RSA key of encrypted data), as JuiceFS does.
    pub fn redacted(&self) -> Format {
        let mut f = self.clone();
        if f.secret_key.is_some() {
            f.secret_key = Some("removed".into());
        }
        for name in ["SessionToken", "EncryptKey"] {
            if let Some(v) = f.other.get_mut(name) {
                if v.as_str().is_some_and(|s| !s.is_empty()) {
                    *v = "removed".into();
                }
            }
        }
        f
    }
}

/// Who performs an operation.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may be empty when unknown).
    pub gids: Vec<u32>,
    pub pid: u32,
    /// Whether metadata must check permissions itself. False when the kernel already did
    /// (FUSE mounted with `default_permissions`).
    pub check_permission: bool,
}

impl Ctx {
    pub fn root() -> Self {
        Ctx::default()
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }
}

/// What a session records about itself (`SI<sid>`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct SessionInfo {
    pub version: String,
    pub host_name: String,
    #[serde(rename = "IPAddrs", default)]
    pub ip_addrs: Vec<String>,
    pub mount_point: String,
    #[serde(rename = "ProcessID")]
    pub process_id: u32,
}

/// A session as listed by `status`.
#[derive(Debug, Clone)]
pub struct Session {
    pub sid: u64,
    pub expire: i64,
    pub info: SessionInfo,
    pub sustained: Vec<Ino>,
}

/// File-system usage for statfs.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub total_space: u64,
    pub avail_space: u64,
    pub used_inodes: u64,
    pub avail_inodes: u64,
}

/// A directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ino: Ino,
    pub name: Vec<u8>,
    pub typ: FileType,
    /// Filled when asked for (readdirplus).
    pub attr: Option<Attr>,
}

/// Which attributes `setattr` changes.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Time>,
    pub flags: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(Time),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_round_trip_and_length() {
        let mut a = Attr::new(FileType::File, 0o4755, 1000, 100);
        a.length = 123456789;
        a.parent = 42;
        a.nlink = 3;
        a.rdev = 7;
        let b = a.encode();
        assert_eq!(b.len(), ATTR_LEN);
        assert_eq!(Attr::decode(&b).unwrap(), a);
        a.access_acl = 5;
        let b = a.encode();
        assert_eq!(b.len(), ATTR_LEN + 8);
        assert_eq!(Attr::decode(&b).unwrap(), a);
        assert!(Attr::decode(&b[..70]).is_err());
    }

    #[test]
    fn attr_layout_matches_juicefs() {
        let mut a = Attr::new(FileType::Directory, 0o755, 1, 2);
        a.atime = Time { sec: 3, nsec: 4 };
        let b = a.encode();
        assert_eq!(b[0], 0);
        assert_eq!(u16::from_be_bytes([b[1], b[2]]), (2 << 12) | 0o755);
        assert_eq!(&b[3..7], &1u32.to_be_bytes());
        assert_eq!(&b[11..19], &3i64.to_be_bytes());
        assert_eq!(&b[19..23], &4u32.to_be_bytes());
    }

    #[test]
    fn slice_round_trip() {
        let s = Slice {
            pos: 1,
            id: 2,
            size: 3,
            off: 4,
            len: 5,
        };
        let mut v = s.encode().to_vec();
        v.extend_from_slice(&Slice { id: 9, ..s }.encode());
        assert_eq!(
            Slice::decode_all(&v).unwrap(),
            vec![s, Slice { id: 9, ..s }]
        );
        assert!(Slice::decode_all(&v[..30]).is_err());
    }

    #[test]
    fn utc_calendar_round_trips() {
        let t = Utc::from_secs(1_796_434_366);
        assert_eq!(t.stamp(), "2026-12-05-013246");
        assert_eq!(Utc::parse_stamp(&t.stamp()), Some(t));
        assert_eq!(Utc::from_secs(0).stamp(), "1970-01-01-000000");
        assert_eq!(t.hour_name(), &t.stamp()[..13]);
        let hour = Utc::parse_hour(&t.hour_name()).unwrap();
        assert_eq!(hour.to_secs(), t.to_secs() - t.to_secs() % 3600);
        assert_eq!(Utc::parse_hour("2026-13-01-00"), None);
        assert_eq!(Utc::parse_hour("2026-12-01-0"), None);
        assert_eq!(Utc::from_secs(951_782_400).stamp(), "2000-02-29-000000");
        for secs in (-10_000_000_000i64..10_000_000_000).step_by(86_399 * 37) {
            assert_eq!(Utc::from_secs(secs).to_secs(), secs, "{secs}");
        }
        // Two years before a leap day rolls over as Go's AddDate does.
        let leap = Utc::from_secs(951_782_400);
        assert_eq!(
            Utc::from_secs(Utc { year: 1998, ..leap }.to_secs()).stamp(),
            "1998-03-01-000000"
        );
        assert_eq!(Utc::parse_stamp("2026-13-01-000000"), None);
        assert_eq!(Utc::parse_stamp("2026-12-01-00000"), None);
    }

    #[test]
    fn format_json_uses_juicefs_names() {
        let f = Format {
            name: "v".into(),
            uuid: "u".into(),
            storage: "file".into(),
            bucket: "/b/".into(),
            access_key: None,
            secret_key: Some("s".into()),
            block_size: 4096,
            compression: None,
            hash_prefix: false,
            capacity: 0,
            inodes: 0,
            trash_days: 1,
            meta_version: 1,
            min_client_version: None,
            dir_stats: true,
            enable_acl: false,
            other: serde_json::from_str(r#"{"Shards":0,"StorageClass":"STANDARD"}"#).unwrap(),
        };
        let j = serde_json::to_string(&f).unwrap();
        assert!(
            j.contains("\"UUID\":\"u\"")
                && j.contains("\"BlockSize\":4096")
                && j.contains("\"EnableACL\"")
                && j.contains("\"StorageClass\":\"STANDARD\""),
            "JuiceFS's settings Nectar does not use are kept: {j}"
        );
        assert!(f.redacted().secret_key.as_deref() == Some("removed"));
        // Secrets are stored obfuscated as JuiceFS stores them, and open again.
        let mut g = f.clone();
        g.other
            .insert("EncryptKey".into(), "-----BEGIN PRIVATE KEY-----".into());
        let sealed = g.with_secrets_sealed();
        assert_eq!(sealed.other["KeyEncrypted"], true);
        assert_ne!(sealed.secret_key, g.secret_key);
        assert_ne!(sealed.other["EncryptKey"], g.other["EncryptKey"]);
        assert_eq!(sealed.clone().with_secrets_opened().unwrap(), g);
        let mut other_uuid = sealed;
        other_uuid.uuid = "another".into();
        assert!(other_uuid.with_secrets_opened().is_err());
        assert_eq!(serde_json::from_str::<Format>(&j).unwrap(), f);
    }
}
