//! `nectar config` (change a volume's settings) and `nectar destroy` (remove a volume:
//! its objects, then its metadata), named and flagged as JuiceFS's commands.

use crate::format::{check_volume_storage, normalize_bucket};
use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_meta::Meta;

#[derive(Args)]
pub struct ConfigArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Volume capacity in GiB (0 = unlimited).
    #[arg(long)]
    capacity: Option<u64>,
    /// Maximum number of inodes (0 = unlimited).
    #[arg(long)]
    inodes: Option<u64>,
    /// Days deleted files are kept in the trash (0 disables the trash).
    #[arg(long)]
    trash_days: Option<u32>,
    /// Object storage type, when the volume's data moved to another kind of store.
    #[arg(long)]
    storage: Option<String>,
    /// Where the volume's objects are now (a directory for `file`, a bucket URL for
    /// `s3`); the data must have been moved there.
    #[arg(long)]
    bucket: Option<String>,
    /// Access key of the object storage, stored in the settings.
    #[arg(long)]
    access_key: Option<String>,
    /// Secret key of the object storage, stored in the settings. On a command line it
    /// shows in the process list while this runs; to keep it out of both, store none and
    /// give it to each mount as SECRET_KEY.
    #[arg(long)]
    secret_key: Option<String>,
    /// Put back the RSA key of an encrypted volume whose key was left out of the dump
    /// it was loaded from (a PEM file; checked against the volume's objects). The key
    /// of a volume cannot change: its data is encrypted with it.
    #[arg(long, value_name = "PEM")]
    encrypt_rsa_key: Option<std::path::PathBuf>,
    /// Enable POSIX ACLs. Cannot be turned off again.
    #[arg(long)]
    enable_acl: bool,
    /// Do not check the storage, and take it over even if it names another volume.
    #[arg(long)]
    force: bool,
}

pub fn config(a: ConfigArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let old = meta.load()?;
    let mut fmt = old.clone();
    if let Some(c) = a.capacity {
        fmt.capacity = c << 30;
    }
    if let Some(n) = a.inodes {
        fmt.inodes = n;
    }
    if let Some(d) = a.trash_days {
        fmt.trash_days = d;
    }
    if let Some(s) = &a.storage {
        fmt.storage = s.clone();
    }
    if let Some(b) = a.bucket.clone() {
        fmt.bucket = normalize_bucket(&fmt.storage, b)?;
    }
    if a.access_key.is_some() {
        fmt.access_key = a.access_key.clone();
    }
    if a.secret_key.is_some() {
        fmt.secret_key = a.secret_key.clone();
    }
    fmt.enable_acl |= a.enable_acl;
    if let Some(path) = &a.encrypt_rsa_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--encrypt-rsa-key {}: cannot read it", path.display()))?;
        match old.other.get("EncryptKey").and_then(|k| k.as_str()) {
            Some("removed") => {}
            Some(k) if k == pem => {}
            Some(_) => bail!("volume {} has another RSA key: the key of a volume cannot change, its data is encrypted with it", old.name),
            None => bail!("volume {} is not encrypted: its data cannot be encrypted afterwards", old.name),
        }
        fmt.other.insert("EncryptKey".into(), pem.into());
        crate::encryptor(&fmt)?;
    }
    if fmt == old {
        println!("{}", serde_json::to_string_pretty(&old.redacted())?);
        return Ok(());
    }
    let storage_changed = fmt.storage != old.storage
        || fmt.other.get("EncryptKey") != old.other.get("EncryptKey")
        || fmt.bucket != old.bucket
        || fmt.access_key != old.access_key
        || fmt.secret_key != old.secret_key;
    if storage_changed && !a.force && fmt.storage != "memory" {
        check_volume_storage(&fmt, false, false)
            .context("the new storage settings do not work (--force skips this check)")?;
    }
    let stored = meta.format(fmt, true)?;
    eprintln!(
        "volume {} updated:\n{}",
        stored.name,
        serde_json::to_string_pretty(&stored.redacted())?
    );
    Ok(())
}

#[derive(Args)]
pub struct DestroyArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// The volume's UUID (`nectar status` shows it), as a confirmation.
    uuid: String,
    /// Destroy it even while clients have it mounted.
    #[arg(long)]
    force: bool,
    /// Deletions in flight at once.
    #[arg(long, default_value_t = 20)]
    threads: usize,
}

pub fn destroy(a: DestroyArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    if fmt.uuid != a.uuid {
        bail!(
            "volume {} in {} has UUID {}, not {}: give the UUID `nectar status` shows",
            fmt.name,
            meta.url(),
            fmt.uuid,
            a.uuid
        );
    }
    let now = nectar_meta::Time::now().sec;
    let mounted: Vec<String> = meta
        .list_sessions()?
        .into_iter()
        .filter(|s| s.expire >= now)
        .map(|s| format!("{}:{}", s.info.host_name, s.info.mount_point))
        .collect();
    if !mounted.is_empty() && !a.force {
        bail!(
            "volume {} is mounted by {} client(s): {}; unmount them first, or use --force",
            fmt.name,
            mounted.len(),
            mounted.join(", ")
        );
    }
    let rt = crate::runtime()?;
    let store = nectar_object::create_store(&crate::store_config(&fmt)?)?;
    let (mut objects, mut bytes) = (0u64, 0u64);
    loop {
        // Deleting what was listed, the next listing starts from the beginning again.
        let page = rt
            .block_on(store.list("", None, 1000))
            .context("listing the volume's objects")?;
        if page.is_empty() {
            break;
        }
        let results = rt.block_on(async {
            use futures::StreamExt;
            futures::stream::iter(page.iter())
                .map(|o| async { store.delete(&o.key).await.map(|_| o.size) })
                .buffer_unordered(a.threads.max(1))
                .collect::<Vec<_>>()
                .await
        });
        for r in results {
            let size = r.context("deleting the volume's objects")?;
            objects += 1;
            bytes += size;
        }
    }
    meta.kv().reset()?;
    eprintln!(
        "volume {} ({}) destroyed: {objects} objects ({bytes} bytes) deleted, and its metadata",
        fmt.name, fmt.uuid
    );
    Ok(())
}
