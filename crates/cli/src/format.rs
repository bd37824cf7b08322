//! `nectar format`: create a volume, or update its settings with `--force`.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_meta::{Format, Meta};
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Args)]
pub struct FormatArgs {
    /// Metadata engine URL, e.g. sqlite3:///var/lib/nectar/myvol.db
    meta_url: String,
    /// Volume name: 3-63 lower-case letters, digits and dashes.
    name: String,
    /// Object storage type: file (a local directory), s3, or memory (tests only).
    #[arg(long, default_value = "file")]
    storage: String,
    /// Where the objects go: a directory for `file` (default /var/lib/nectar/data), a
    /// bucket URL for `s3` (http://host:port/bucket).
    #[arg(long)]
    bucket: Option<String>,
    /// Access key of the object storage.
    #[arg(long, env = "ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
    /// Secret key of the object storage (prefer the SECRET_KEY environment variable).
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Block size in KiB (64 to 16384).
    #[arg(long, default_value_t = 4096)]
    block_size: u32,
    /// Compression of blocks: none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compress: String,
    /// Spread object keys over 256 prefixes (for stores that shard by key prefix).
    #[arg(long)]
    hash_prefix: bool,
    /// Days deleted files are kept in the trash (0 disables the trash).
    #[arg(long, default_value_t = 1)]
    trash_days: u32,
    /// Volume capacity in GiB (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    capacity: u64,
    /// Maximum number of inodes (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    inodes: u64,
    /// Encrypt every object with a fresh key wrapped by this RSA private key (a PEM
    /// file; a passphrase, if any, from NECTAR_RSA_PASSPHRASE), as JuiceFS does. The key
    /// is kept in the volume's settings; it cannot change later.
    #[arg(long, value_name = "PEM")]
    encrypt_rsa_key: Option<PathBuf>,
    /// Cipher of the objects' keys: aes256gcm-rsa or chacha20-rsa.
    #[arg(long, default_value = "aes256gcm-rsa")]
    encrypt_algo: String,
    /// Enable POSIX ACLs (getfacl/setfacl). Cannot be turned off again.
    #[arg(long)]
    enable_acl: bool,
    /// Update the settings of an existing volume (its UUID is kept).
    #[arg(long)]
    force: bool,
    /// Do not check that the object storage is reachable and writable.
    #[arg(long)]
    no_check_storage: bool,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The object that names the volume a bucket belongs to (JuiceFS's name, so a bucket
/// is recognised by either system).
pub(crate) const UUID_OBJECT: &str = "juicefs_uuid";

pub fn run(a: FormatArgs) -> Result<()> {
    if !valid_name(&a.name) {
        bail!("invalid volume name {:?}: use 3-63 lower-case letters, digits and dashes, not starting or ending with a dash", a.name);
    }
    if !(64..=16384).contains(&a.block_size) {
        bail!(
            "--block-size {} KiB is out of range: use 64 to 16384 (KiB)",
            a.block_size
        );
    }
    nectar_chunk::Compression::from_str(&a.compress)
        .map_err(|e| anyhow::anyhow!("--compress: {e}"))?;
    let bucket = match (a.bucket.clone(), a.storage.as_str()) {
        (Some(b), _) => b,
        (None, "file") => "/var/lib/nectar/data/".to_string(),
        (None, "memory") => String::new(),
        (None, other) => bail!("--bucket is required for --storage {other}"),
    };
    let bucket = normalize_bucket(&a.storage, bucket)?;
    let url = crate::meta_url(&a.meta_url);
    let meta = Meta::connect(&url)?;
    let existing = match meta.load() {
        Ok(f) => Some(f),
        Err(nectar_meta::Error::NotFormatted(_)) => None,
        Err(e) => return Err(e).context("cannot read the metadata engine"),
    };
    if let Some(old) = &existing {
        if !a.force {
            bail!(
                "volume {:?} already exists in {} (UUID {}): use --force to update its settings, or another META-URL",
                old.name,
                meta.url(),
                old.uuid
            );
        }
    }
    let fmt = Format {
        name: a.name.clone(),
        uuid: existing
            .as_ref()
            .map(|f| f.uuid.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        storage: a.storage.clone(),
        bucket,
        access_key: a.access_key.clone(),
        secret_key: a.secret_key.clone(),
        block_size: a.block_size,
        compression: (a.compress != "none").then(|| a.compress.clone()),
        hash_prefix: a.hash_prefix,
        capacity: a.capacity << 30,
        inodes: a.inodes,
        trash_days: a.trash_days,
        meta_version: 1,
        min_client_version: None,
        dir_stats: true,
        // ACL ids in attributes outlive the setting: once on, it stays on.
        enable_acl: a.enable_acl || existing.as_ref().is_some_and(|f| f.enable_acl),
        other: existing
            .as_ref()
            .map(|f| f.other.clone())
            .unwrap_or_default(),
    };
    let mut fmt = fmt;
    if let Some(path) = &a.encrypt_rsa_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--encrypt-rsa-key {}: cannot read it", path.display()))?;
        let algo = nectar_object::EncryptAlgo::parse(&a.encrypt_algo)?;
        fmt.other.insert("EncryptKey".into(), pem.into());
        fmt.other.insert("EncryptAlgo".into(), algo.name().into());
        // Fails here, naming the problem, if the key does not open.
        crate::encryptor(&fmt)?;
    }
    if let Some(old) = &existing {
        let key = |f: &Format| f.other.get("EncryptKey").cloned();
        if key(old) != key(&fmt) {
            bail!("--encrypt-rsa-key cannot change on an existing volume: its data is encrypted with the old key");
        }
        if old.block_size != fmt.block_size
            || old.compression != fmt.compression
            || old.hash_prefix != fmt.hash_prefix
        {
            bail!("--block-size, --compress and --hash-prefix cannot change on an existing volume: its data is laid out with the old settings");
        }
    }
    if !a.no_check_storage && fmt.storage != "memory" {
        check_volume_storage(&fmt, true, a.force)?;
    }
    let stored = meta.format(fmt, a.force)?;
    let shown = serde_json::to_string_pretty(&stored.redacted())?;
    eprintln!(
        "volume {} is ready in {}:\n{shown}",
        stored.name,
        meta.url()
    );
    Ok(())
}

/// Checks that the storage of `fmt` works (put, get, list, delete of a probe object)
/// and belongs to this volume: its UUID object names the volume, or is absent and then
/// written (for a new volume: `create`, which also creates a missing S3 bucket; an
/// existing volume's storage must hold the object already, or its data is not there).
/// Another volume's UUID is refused unless `take_over`.
pub(crate) fn check_volume_storage(fmt: &Format, create: bool, take_over: bool) -> Result<()> {
    let rt = crate::runtime()?;
    let cfg = crate::store_config(fmt)?;
    rt.block_on(async {
        if create && matches!(fmt.storage.as_str(), "s3" | "minio") {
            nectar_object::create_bucket(&cfg)
                .await
                .context("cannot create the bucket")?;
        }
        let store = nectar_object::create_store(&cfg)?;
        nectar_object::check_store(store.as_ref()).await?;
        match store.get(UUID_OBJECT, None).await {
            Ok(found) if found.as_ref() != fmt.uuid.as_bytes() && !take_over => bail!(
                "storage {} already holds volume {} (UUID {}): use another --bucket, or --force to take it over",
                store.describe(),
                fmt.name,
                String::from_utf8_lossy(&found)
            ),
            Err(nectar_object::Error::NotFound(_)) if !create && !take_over => bail!(
                "storage {} holds no data of volume {} (no {UUID_OBJECT} object): copy its objects there first",
                store.describe(),
                fmt.name
            ),
            Ok(_) | Err(nectar_object::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store
            .put(UUID_OBJECT, fmt.uuid.clone().into_bytes().into())
            .await?;
        anyhow::Ok(())
    })
}

/// A bucket as stored: a `file` bucket as an absolute directory path ending in `/`
/// (the trailing slash JuiceFS stores, which it needs to find the objects of a volume
/// it takes over from a dump).
pub(crate) fn normalize_bucket(storage: &str, bucket: String) -> Result<String> {
    if storage != "file" {
        return Ok(bucket);
    }
    let p = std::path::Path::new(&bucket);
    let path = if p.is_relative() {
        std::env::current_dir()?.join(p).display().to_string()
    } else {
        bucket
    };
    Ok(nectar_meta::dump::file_bucket(&path))
}
