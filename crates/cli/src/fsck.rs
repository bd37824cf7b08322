//! `nectar fsck`: checks a volume's tree (`nectar_meta::fsck`) and that every block of
//! every slice of every file is in the object store, with the right size when blocks are
//! stored as they are (no compression). Broken files are named by path. The blocks are
//! asked for (`HEAD`) by up to `--threads` requests at once while the walk goes on.

use anyhow::{bail, Result};
use clap::Args;
use nectar_meta::{Meta, ROOT_INODE};
use nectar_object::ObjectStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Args)]
pub struct FsckArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Check only this path of the volume (and, with --recursive, everything under it).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Check everything under --path (the whole volume is always checked whole).
    #[arg(long)]
    recursive: bool,
    /// Repair what can be repaired: directory link counts and parent pointers.
    #[arg(long)]
    repair: bool,
    /// Metadata reads and block checks in flight at once.
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

/// What the block checks found: broken files by path, with their first few problems.
#[derive(Default)]
struct Broken {
    files: BTreeMap<String, Vec<String>>,
    blocks: u64,
}

pub fn run(a: FsckArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    let rt = crate::runtime()?;
    let store = nectar_object::create_store(&crate::store_config(&fmt))?;
    let (top, path, recursive) = match &a.path {
        Some(p) => {
            let ino = crate::mount::resolve_path(&meta, p)?;
            let shown = format!("/{}", p.trim_matches('/'));
            (ino, shown, a.recursive)
        }
        None => (ROOT_INODE, "/".to_string(), true),
    };
    let block_size = fmt.block_size as u64 * 1024;
    let sized = fmt.compression.as_deref().unwrap_or("none") == "none";
    let broken = Arc::new(parking_lot::Mutex::new(Broken::default()));
    let limit = Arc::new(Semaphore::new(a.threads.max(1) * 4));
    let mut tasks = Vec::new();
    let mut check_file = |path: &str, _ino: u64, node: &nectar_meta::walk::Node| {
        for (_, slices) in &node.chunks {
            for s in slices.iter().filter(|s| s.id != 0) {
                let size = s.size as u64;
                for index in 0..size.div_ceil(block_size) {
                    let len = (size - index * block_size).min(block_size) as u32;
                    let key = nectar_chunk::block_key(s.id, index as u32, len, fmt.hash_prefix);
                    let permit = rt.block_on(limit.clone().acquire_owned());
                    let (store, broken, path) = (store.clone(), broken.clone(), path.to_string());
                    tasks.push(rt.spawn(async move {
                        let _permit = permit;
                        let problem = check_block(store.as_ref(), &key, len, sized).await;
                        let mut b = broken.lock();
                        b.blocks += 1;
                        if let Some(problem) = problem {
                            let list = b.files.entry(path).or_default();
                            if list.len() < 5 {
                                list.push(problem);
                            }
                        }
                    }));
                }
            }
        }
    };
    let report = meta.fsck(top, &path, recursive, a.repair, a.threads, &mut check_file)?;
    for t in tasks {
        rt.block_on(t)?;
    }
    let broken = std::mem::take(&mut *broken.lock());
    for (file, problems) in &broken.files {
        println!("broken file {file}: {}", problems.join("; "));
    }
    let mut unrepaired = 0;
    for (p, repaired) in &report.problems {
        if *repaired {
            println!("repaired: {p}");
        } else {
            unrepaired += 1;
            println!("{p}");
        }
    }
    eprintln!(
        "checked {} entries and {} blocks: {} broken files, {} problems in the tree ({} repaired)",
        report.entries,
        broken.blocks,
        broken.files.len(),
        report.problems.len(),
        report.problems.len() - unrepaired
    );
    if !broken.files.is_empty() || unrepaired > 0 {
        let hint = if unrepaired > 0 && !a.repair {
            "; --repair fixes link counts and parent pointers"
        } else {
            ""
        };
        bail!("the volume has problems{hint}");
    }
    Ok(())
}

/// What is wrong with block `key` of `len` bytes, if anything (its size is checked when
/// `sized`: blocks stored uncompressed).
async fn check_block(store: &dyn ObjectStore, key: &str, len: u32, sized: bool) -> Option<String> {
    match store.head(key).await {
        Ok(Some(n)) if sized && n != len as u64 => {
            Some(format!("block {key} has {n} bytes, {len} expected"))
        }
        Ok(Some(_)) => None,
        Ok(None) => Some(format!("block {key} is missing")),
        Err(e) => Some(format!("block {key} cannot be checked: {e}")),
    }
}
