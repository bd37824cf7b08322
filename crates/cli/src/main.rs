//! `nectar`: the command-line entry point. Each subcommand parses its flags (named as
//! JuiceFS names them where they mean the same thing) and calls the libraries; no
//! file-system behaviour lives here.

mod bench;
mod clone;
mod compact;
mod config;
mod dump;
mod duration;
mod exporter;
mod format;
mod fsck;
mod gc;
mod mount;
mod objbench;
mod quota;
mod restore;
mod rmr;
mod stats;
mod status;
mod summary;
mod umount;
mod warmup;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "nectar", version, about = "A distributed POSIX file system over object storage", long_about = None)]
struct Cli {
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a volume (or update its settings with --force).
    Format(format::FormatArgs),
    /// Mount a volume.
    Mount(Box<mount::MountArgs>),
    /// Unmount a volume.
    Umount(umount::UmountArgs),
    /// Show a volume's settings and its live sessions.
    Status(status::StatusArgs),
    /// Show the inode, size, chunks, slices and objects of a path in a mounted volume.
    Info(status::InfoArgs),
    /// Show a mount's activity live, one line per interval.
    Stats(stats::StatsArgs),
    /// Fill (or empty, or measure) this node's cache for files and directories.
    Warmup(warmup::WarmupArgs),
    /// Measure big and small file I/O in a directory of a mount.
    Bench(bench::BenchArgs),
    /// Check and measure an object store before putting a volume on it.
    Objbench(objbench::ObjbenchArgs),
    /// Write a volume's metadata to a file (JuiceFS's JSON dump format).
    Dump(dump::DumpArgs),
    /// Load a dump into an empty metadata engine (a volume moves between engines, or
    /// from JuiceFS, with its data left in place).
    Load(dump::LoadArgs),
    /// Check a volume: its tree, and that every block of every file is stored.
    Fsck(fsck::FsckArgs),
    /// Explain what the volume's bucket holds: live data, trash, pending deletions,
    /// unfinished writes and leaked objects, in objects and bytes.
    Gc(gc::GcArgs),
    /// Change a volume's settings (capacity, inodes, trash days, storage and keys).
    Config(config::ConfigArgs),
    /// Remove trees of a mounted volume in parallel on the metadata side.
    Rmr(rmr::RmrArgs),
    /// Show the size, directories and files of a tree of a mounted volume.
    Summary(summary::SummaryArgs),
    /// Copy a file or tree of a mounted volume by sharing its data (no block copied).
    Clone(clone::CloneArgs),
    /// Rewrite fragmented files of a mounted volume as one slice per chunk.
    Compact(compact::CompactArgs),
    /// Bring removed files and directories back from the trash.
    Restore(restore::RestoreArgs),
    /// Set, show, remove, list and check directory quotas.
    Quota(quota::QuotaArgs),
    /// Remove a volume: every object of it, then its metadata.
    Destroy(config::DestroyArgs),
    /// Print the version.
    Version,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NECTAR_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},opendal=warn,fuser=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Gives glibc's malloc one arena. By default it gives each thread that contends an
/// arena of its own (up to eight per core), and each arena keeps the memory freed in
/// it: with block buffers of megabytes freed on one thread and allocated on another,
/// a mount's resident memory grew to several times its `--buffer-size` (426 MiB for a
/// 96 MiB budget in tests/memory.rs; 169 MiB with one arena, 208 MiB with two).
/// Allocations on the data path are few and large, so one arena costs no measurable
/// contention.
fn bound_allocator() {
    // SAFETY: mallopt only changes malloc's tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    bound_allocator();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let res = match cli.command {
        Command::Format(a) => format::run(a),
        Command::Mount(a) => mount::run(*a),
        Command::Umount(a) => umount::run(a),
        Command::Status(a) => status::run(a),
        Command::Info(a) => status::info(a),
        Command::Warmup(a) => warmup::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Objbench(a) => objbench::run(a),
        Command::Dump(a) => dump::dump(a),
        Command::Fsck(a) => fsck::run(a),
        Command::Config(a) => config::config(a),
        Command::Destroy(a) => config::destroy(a),
        Command::Gc(a) => gc::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Quota(a) => quota::run(a),
        Command::Compact(a) => compact::run(a),
        Command::Clone(a) => clone::run(a),
        Command::Summary(a) => summary::run(a),
        Command::Rmr(a) => rmr::run(a),
        Command::Load(a) => dump::load(a),
        Command::Version => {
            println!("nectar {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nectar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A runtime for commands that touch object storage.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(4)
        .max_blocking_threads(512)
        .thread_name("nectar-io")
        .build()?)
}

/// The META-URL with `META_PASSWORD` applied (so a password stays out of the process
/// list).
pub(crate) fn meta_url(url: &str) -> String {
    match std::env::var("META_PASSWORD") {
        Ok(pw) if !pw.is_empty() => match url::Url::parse(url) {
            Ok(mut u) if u.password().is_none() && u.has_host() => {
                let _ = u.set_password(Some(&pw));
                u.to_string()
            }
            _ => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// The object store of a volume, with credentials from the environment when given.
pub(crate) fn store_config(fmt: &nectar_meta::Format) -> Result<nectar_object::StoreConfig> {
    Ok(nectar_object::StoreConfig {
        storage: fmt.storage.clone(),
        bucket: fmt.bucket.clone(),
        access_key: std::env::var("ACCESS_KEY")
            .ok()
            .or_else(|| fmt.access_key.clone()),
        secret_key: std::env::var("SECRET_KEY")
            .ok()
            .or_else(|| fmt.secret_key.clone()),
        prefix: format!("{}/", fmt.name),
        encryption: encryptor(fmt)?,
    })
}

/// The volume's object encryption, from its settings (`EncryptKey`, `EncryptAlgo`, as
/// JuiceFS names them) and the key's passphrase from the environment.
pub(crate) fn encryptor(
    fmt: &nectar_meta::Format,
) -> Result<Option<std::sync::Arc<nectar_object::Encryptor>>> {
    let setting = |name: &str| fmt.other.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let pem = setting("EncryptKey");
    if pem.is_empty() {
        return Ok(None);
    }
    if pem == "removed" {
        anyhow::bail!(
            "volume {} is encrypted but its RSA key was left out of the dump it was loaded from: \
             put it back with `nectar config META-URL --encrypt-rsa-key KEY.pem`",
            fmt.name
        );
    }
    let algo = nectar_object::EncryptAlgo::parse(setting("EncryptAlgo"))?;
    let passphrase = rsa_passphrase();
    let enc = nectar_object::Encryptor::from_pem(pem, passphrase.as_deref(), algo)
        .with_context(|| format!("volume {} is encrypted", fmt.name))?;
    Ok(Some(std::sync::Arc::new(enc)))
}

/// The passphrase of the RSA key: `NECTAR_RSA_PASSPHRASE`, or JuiceFS's
/// `JFS_RSA_PASSPHRASE` for volumes that came from it.
pub(crate) fn rsa_passphrase() -> Option<String> {
    ["NECTAR_RSA_PASSPHRASE", "JFS_RSA_PASSPHRASE"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
}
