//! `nectar dump` and `nectar load`: a volume's metadata as JuiceFS's JSON dump.
//!
//! The format and the streaming are `nectar_meta::dump`'s; this adds the files: a
//! name ending in `.gz` is gzip, `.zst` or `.zstd` (JuiceFS's name) zstd, anything
//! else plain JSON, and no name (or `-`) is stdout or stdin. A dump goes to a temporary name beside the file and is
//! renamed when complete, so a failed dump never leaves a file that looks whole.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nectar_meta::{DumpOptions, DumpSummary, LoadOptions, Meta, ROOT_INODE};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct DumpArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Where to write the dump: `.gz` is compressed with gzip, `.zst`/`.zstd` with zstd;
    /// stdout when absent or `-`.
    file: Option<PathBuf>,
    /// Dump only this directory of the volume (a path from its root); the dump loads as
    /// a volume whose root is that directory.
    #[arg(long, value_name = "PATH")]
    subdir: Option<String>,
    /// Keep the object store's secret key in the dump (it is replaced by "removed"
    /// otherwise, and a volume loaded from it needs SECRET_KEY at mount).
    #[arg(long)]
    keep_secret_key: bool,
    /// Leave the trash out of the dump.
    #[arg(long)]
    skip_trash: bool,
    /// Accepted as JuiceFS accepts it; every dump reads a page of entries per
    /// transaction already.
    #[arg(long)]
    fast: bool,
    /// Threads reading entries at once.
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Metadata engine URL of an empty database to load the volume into.
    meta_url: String,
    /// The dump to load (`.gz` gzip, `.zst`/`.zstd` zstd, else plain JSON); stdin when absent
    /// or `-`.
    file: Option<PathBuf>,
    /// Transactions writing in parallel.
    #[arg(long, default_value_t = 10)]
    threads: usize,
    /// The dump is encrypted with this RSA private key (a PEM; passphrase from
    /// NECTAR_RSA_PASSPHRASE or JFS_RSA_PASSPHRASE): the metadata backup of an encrypted
    /// volume, as JuiceFS writes it into the bucket.
    #[arg(long, value_name = "PEM")]
    encrypt_rsa_key: Option<PathBuf>,
    /// Cipher of the encrypted dump: aes256gcm-rsa or chacha20-rsa.
    #[arg(long, default_value = "aes256gcm-rsa")]
    encrypt_algo: String,
}

/// Whether `file` names stdin/stdout.
fn is_std(file: &Option<PathBuf>) -> bool {
    file.as_deref().is_none_or(|p| p == Path::new("-"))
}

fn compression_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => "gzip",
        // `.zstd` is what JuiceFS names its zstd dumps.
        Some("zst" | "zstd") => "zstd",
        _ => "none",
    }
}

/// A progress line on stderr when it is a terminal.
fn progress_bar(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} entries ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn report(what: &str, s: &DumpSummary, start: Instant) {
    eprintln!(
        "{what} {} entries ({} inodes) in {:.1} s{}",
        s.entries,
        s.inodes,
        start.elapsed().as_secs_f64(),
        if s.skipped > 0 {
            format!("; {} entries naming missing inodes left out", s.skipped)
        } else {
            String::new()
        }
    );
}

pub fn dump(a: DumpArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    meta.load()?;
    let root = match &a.subdir {
        Some(p) => crate::mount::resolve_subdir(&meta, p)?,
        None => ROOT_INODE,
    };
    let opts = DumpOptions {
        root,
        keep_secret_key: a.keep_secret_key,
        skip_trash: a.skip_trash,
        threads: a.threads.max(1),
    };
    let bar = progress_bar("dumped");
    let progress = |n: u64| bar.set_position(n);
    let start = Instant::now();
    let summary = if is_std(&a.file) {
        let mut out = std::io::stdout().lock();
        let s = meta.dump(&mut out, &opts, &progress)?;
        out.flush()?;
        s
    } else {
        let path = a.file.clone().unwrap_or_default();
        // A device, a pipe or a socket (/dev/null, a FIFO) is written as it is: renaming
        // a file over it would replace it.
        let special = std::fs::metadata(&path).is_ok_and(|m| !m.is_file());
        if special {
            let summary = write_dump(&meta, &path, compression_of(&path), &opts, &progress)?;
            bar.finish_and_clear();
            report("dumped", &summary, start);
            return Ok(());
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let res = write_dump(&meta, &tmp, compression_of(&path), &opts, &progress);
        match res {
            Ok(s) => {
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
                s
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    };
    bar.finish_and_clear();
    report("dumped", &summary, start);
    Ok(())
}

/// Writes the dump to `path`, compressed as `compression` says, and syncs it.
fn write_dump(
    meta: &Meta,
    path: &Path,
    compression: &str,
    opts: &DumpOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DumpSummary> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create the dump file {}", path.display()))?;
    let file = std::io::BufWriter::with_capacity(1 << 20, file);
    let (summary, file) = match compression {
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let s = meta.dump(&mut enc, opts, progress)?;
            (s, enc.finish()?)
        }
        "zstd" => {
            let mut enc = zstd::Encoder::new(file, 3)?;
            let s = meta.dump(&mut enc, opts, progress)?;
            (s, enc.finish()?)
        }
        _ => {
            let mut file = file;
            let s = meta.dump(&mut file, opts, progress)?;
            (s, file)
        }
    };
    let file = file.into_inner().map_err(|e| e.into_error())?;
    if file.metadata()?.is_file() {
        file.sync_all()?;
    }
    Ok(summary)
}

pub fn load(a: LoadArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let mut input: Box<dyn Read> = if is_std(&a.file) {
        Box::new(std::io::stdin().lock())
    } else {
        let path = a.file.clone().unwrap_or_default();
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open the dump {}", path.display()))?;
        let file: Box<dyn Read> = match &a.encrypt_rsa_key {
            None => Box::new(file),
            Some(key) => Box::new(std::io::Cursor::new(decrypt_dump(
                file,
                &path,
                key,
                &a.encrypt_algo,
            )?)),
        };
        match compression_of(&path) {
            "gzip" => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                file,
            ))),
            "zstd" => Box::new(
                zstd::Decoder::new(file)
                    .with_context(|| format!("{} is not a zstd file", path.display()))?,
            ),
            _ => Box::new(file),
        }
    };
    let bar = progress_bar("loaded");
    let progress = |n: u64| bar.set_position(n);
    let start = Instant::now();
    let opts = LoadOptions {
        threads: a.threads.max(1),
    };
    let summary = meta.load_dump(&mut input, &opts, &progress)?;
    bar.finish_and_clear();
    report("loaded", &summary, start);
    Ok(())
}

/// The plain bytes of an encrypted dump (an encrypted object is opened whole, as
/// JuiceFS's `load --encrypt-rsa-key` opens it).
fn decrypt_dump(mut file: std::fs::File, path: &Path, key: &Path, algo: &str) -> Result<Vec<u8>> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("--encrypt-rsa-key {}: cannot read it", key.display()))?;
    let algo = nectar_object::EncryptAlgo::parse(algo)?;
    let enc = nectar_object::Encryptor::from_pem(&pem, crate::rsa_passphrase().as_deref(), algo)?;
    let mut stored = Vec::new();
    file.read_to_end(&mut stored)
        .with_context(|| format!("cannot read the dump {}", path.display()))?;
    enc.decrypt(&stored).with_context(|| {
        format!(
            "the dump {} does not decrypt with --encrypt-rsa-key",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_names_the_compression() {
        let of = |p: &str| compression_of(Path::new(p));
        assert_eq!(of("d.json.gz"), "gzip");
        assert_eq!(of("d.json.zst"), "zstd");
        assert_eq!(of("dump-2026.json.zstd"), "zstd", "JuiceFS's name");
        assert_eq!(of("d.json"), "none");
    }
}
