//! `nectar fsck`: checks a volume's tree (`nectar_meta::fsck`) and that every block of
//! every slice of every file is in the object store, with the right size when blocks are
//! stored as they are (no compression, no encryption). Broken files are named by path.
//!
//! The whole volume is checked by a sorted join on disk (`nectar_meta::spill`) of the
//! blocks the walk expects with the bucket's listing, so memory and requests do not grow
//! with the volume; the files of the broken slices are then found by a second walk. A
//! `--path` asks for its blocks one by one (`HEAD`, `--threads` x 4 in flight).

use crate::gc::{list_blocks, Block, SPILL_AT};
use anyhow::{bail, Result};
use clap::Args;
use nectar_meta::spill::{Record, Sorter};
use nectar_meta::walk::Node;
use nectar_meta::{Meta, ROOT_INODE};
use nectar_object::ObjectStore;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;

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
    /// Metadata reads at once (and, with --path, block checks in flight: four times as
    /// many).
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

/// What the block checks found: broken files by path, with their first few problems.
#[derive(Default)]
struct Broken {
    files: BTreeMap<String, Vec<String>>,
    blocks: u64,
}

/// A block a slice needs: (slice id, block index, block length).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Expected(u64, u32, u32);

impl Record for Expected {
    const SIZE: usize = 16;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.extend_from_slice(&self.2.to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Expected(
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u32_at(8),
            u32_at(12),
        )
    }
}

/// The blocks of the slices of `node`: (slice id, index, length).
fn blocks_of(node: &Node, block_size: u64) -> impl Iterator<Item = Expected> + '_ {
    node.chunks
        .iter()
        .flat_map(|(_, slices)| slices.iter().filter(|s| s.id != 0))
        .flat_map(move |s| {
            let size = s.size as u64;
            (0..size.div_ceil(block_size)).map(move |index| {
                let len = (size - index * block_size).min(block_size) as u32;
                Expected(s.id, index as u32, len)
            })
        })
}

pub fn run(a: FsckArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    let rt = crate::runtime()?;
    let store = nectar_object::create_store(&crate::store_config(&fmt)?)?;
    let block_size = fmt.block_size as u64 * 1024;
    // Compressed or encrypted blocks are stored with another size than their length.
    let sized =
        fmt.compression.as_deref().unwrap_or("none") == "none" && crate::encryptor(&fmt)?.is_none();
    let key_of = |b: Expected| nectar_chunk::block_key(b.0, b.1, b.2, fmt.hash_prefix);
    let mut broken = Broken::default();
    let report = match &a.path {
        None => {
            let mut expected = Sorter::<Expected>::new(SPILL_AT);
            let mut failed: Option<std::io::Error> = None;
            let report = meta.fsck(
                ROOT_INODE,
                "/",
                true,
                a.repair,
                a.threads,
                &mut |_, _, node| {
                    for b in blocks_of(node, block_size) {
                        if let Err(e) = expected.push(b) {
                            failed.get_or_insert(e);
                        }
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            let talk = std::io::stderr().is_terminal();
            let (listed, _) = list_blocks(store.as_ref(), &rt, talk)?;
            // Problems by slice id, then the files holding those slices.
            let mut by_slice: HashMap<u64, Vec<String>> = HashMap::new();
            let mut listed = listed.sorted();
            let mut next = listed.next().transpose()?;
            for e in expected.sorted() {
                let e = e?;
                broken.blocks += 1;
                while next
                    .is_some_and(|Block(id, index, len, _)| (id, index, len) < (e.0, e.1, e.2))
                {
                    next = listed.next().transpose()?;
                }
                let problem = match next {
                    Some(Block(id, index, len, size)) if (id, index, len) == (e.0, e.1, e.2) => {
                        (sized && size != len as u64).then(|| {
                            format!("block {} has {size} bytes, {len} expected", key_of(e))
                        })
                    }
                    _ => Some(format!("block {} is missing", key_of(e))),
                };
                if let Some(p) = problem {
                    let list = by_slice.entry(e.0).or_default();
                    if list.len() < 5 {
                        list.push(p);
                    }
                }
            }
            if !by_slice.is_empty() {
                let mut files = |path: &str, _: u64, node: &Node| {
                    for (_, slices) in &node.chunks {
                        for s in slices {
                            if let Some(problems) = by_slice.get(&s.id) {
                                broken
                                    .files
                                    .entry(path.to_string())
                                    .or_default()
                                    .extend(problems.iter().cloned());
                            }
                        }
                    }
                };
                meta.fsck(ROOT_INODE, "/", true, false, a.threads, &mut files)?;
            }
            report
        }
        Some(p) => {
            let top = crate::mount::resolve_path(&meta, p)?;
            let shown = format!("/{}", p.trim_matches('/'));
            let mut problems = Vec::new();
            let mut tasks = Vec::new();
            let in_flight = a.threads.max(1) * 4;
            let mut check_file = |path: &str, _: u64, node: &Node| {
                for b in blocks_of(node, block_size) {
                    let (store, key, path) = (store.clone(), key_of(b), path.to_string());
                    tasks.push(rt.spawn(async move {
                        (path, check_block(store.as_ref(), &key, b.2, sized).await)
                    }));
                    if tasks.len() >= in_flight {
                        for t in tasks.drain(..) {
                            if let Ok(done) = rt.block_on(t) {
                                problems.push(done);
                            }
                        }
                    }
                }
            };
            let report = meta.fsck(
                top,
                &shown,
                a.recursive,
                a.repair,
                a.threads,
                &mut check_file,
            )?;
            for t in tasks {
                problems.push(rt.block_on(t)?);
            }
            for (path, problem) in problems {
                broken.blocks += 1;
                if let Some(problem) = problem {
                    broken.files.entry(path).or_default().push(problem);
                }
            }
            report
        }
    };
    for (file, problems) in &broken.files {
        let mut problems = problems.clone();
        problems.dedup();
        problems.truncate(5);
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
/// `sized`: blocks stored as they are, neither compressed nor encrypted).
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
