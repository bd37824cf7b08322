//! `nectar gc`: explains what the volume's part of the bucket holds, to the byte, and
//! with `--delete` removes what nothing refers to.
//!
//! Every block object is put in one class by a sorted join of two streams, both sorted
//! on disk so memory stays bounded whatever the bucket holds ([`nectar_meta::spill`]):
//! the slices metadata refers to (`Meta::slice_references`: live files, the trash,
//! files whose data is not released yet) and the bucket's listing of `chunks/`. A block
//! of no referenced slice is *unfinished* when its id is one a session has not settled
//! (a write in flight, or a dead client's not cleaned yet; read before the walk, so a
//! slice written during the walk is never called leaked), and *leaked* otherwise.
//! Objects that are not blocks (the volume's UUID, metadata backups) are counted apart.
//!
//! The walk is not a snapshot: a file renamed during it from a directory not walked yet
//! into one already walked is not seen, and its blocks look leaked. So `--delete` walks
//! a second time (with the unsettled ids read again) and deletes only the leaked blocks
//! that pass finds unreferenced too; a file would have to be moved that way during both
//! walks to be lost. `--delete` first expires the trash and the delayed slices past
//! the trash time (as the mounts' hourly job would), so their blocks go as leaked.

use anyhow::{Context, Result};
use clap::Args;
use nectar_meta::gc::SliceUse;
use nectar_meta::spill::{Record, Sorter};
use nectar_meta::Meta;
use std::io::IsTerminal;

#[derive(Args)]
pub struct GcArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Expire the trash entries and delayed slices older than the trash time first,
    /// then delete the leaked objects (after a second pass over metadata confirms that
    /// nothing refers to them), the expired data's among them.
    #[arg(long)]
    delete: bool,
    /// Threads reading metadata, and deletions in flight.
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

/// A reference to a slice: (id, size, use).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Reference(u64, u32, u8);

impl Record for Reference {
    const SIZE: usize = 13;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.push(self.2);
    }
    fn get(b: &[u8]) -> Self {
        Reference(
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
            b[12],
        )
    }
}

/// A block object: (slice id, block index, block length, stored size).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Block(pub u64, pub u32, pub u32, pub u64);

impl Record for Block {
    const SIZE: usize = 24;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.extend_from_slice(&self.2.to_be_bytes());
        out.extend_from_slice(&self.3.to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Block(
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u32_at(8),
            u32_at(12),
            u64::from_be_bytes(b[16..24].try_into().unwrap_or_default()),
        )
    }
}

/// Objects and bytes of one class.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// What the bucket holds, by class.
#[derive(Default, Debug)]
pub struct Classes {
    pub live: Tally,
    pub trash: Tally,
    pub pending: Tally,
    pub unfinished: Tally,
    pub leaked: Tally,
    pub other: Tally,
}

pub(crate) const SPILL_AT: usize = 4 << 20;

pub fn run(a: GcArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    let rt = crate::runtime()?;
    let store = nectar_object::create_store(&crate::store_config(&fmt)?)?;
    let talk = std::io::stderr().is_terminal();

    if a.delete {
        // What expires loses its last reference here; its blocks are then leaked
        // objects that the deletion below removes, so nothing is deleted twice.
        meta.set_slice_deleter(std::sync::Arc::new(|_| {}));
        let edge = nectar_meta::Time::now().sec - i64::from(fmt.trash_days) * 86_400;
        let done = meta.expire_trash(edge, a.threads, &Default::default())?;
        let slices = meta.expire_delayed_slices(edge)?;
        println!(
            "expired {} trash entries ({} hours) and {slices} delayed slices older than {} days",
            done.entries, done.hours, fmt.trash_days
        );
    }
    // Before the walk: what is in flight now may be committed while it runs.
    let unsettled = meta.unsettled_slices()?;
    let refs = references(&meta, a.threads, talk)?;
    let (blocks, other) = list_blocks(store.as_ref(), &rt, talk)?;
    let mut classes = Classes {
        other,
        ..Classes::default()
    };
    let mut leaked = Sorter::<Block>::new(SPILL_AT);
    join(refs, blocks, &unsettled, &mut classes, &mut |b| {
        Ok(leaked.push(b)?)
    })?;
    print!("{}", report(&classes));
    if !a.delete || classes.leaked.objects == 0 {
        return Ok(());
    }
    // The second pass: only what it finds unreferenced too goes.
    let unsettled = meta.unsettled_slices()?;
    let refs = references(&meta, a.threads, talk)?;
    let mut deleted = Tally::default();
    let mut again = Classes::default();
    let mut failed = 0u64;
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
    // Deletions run `threads` at a time; their outcomes are gathered as they go.
    let mut settle = |tasks: &mut Vec<tokio::task::JoinHandle<Result<(), String>>>| -> Result<()> {
        for t in tasks.drain(..) {
            if let Err(e) = rt.block_on(t)? {
                eprintln!("gc: {e}");
                failed += 1;
            }
        }
        Ok(())
    };
    join(refs, leaked, &unsettled, &mut again, &mut |block| {
        let Block(id, index, len, size) = block;
        let key = nectar_chunk::block_key(id, index, len, fmt.hash_prefix);
        let store = store.clone();
        deleted.add(size);
        tasks.push(rt.spawn(async move {
            store
                .delete(&key)
                .await
                .map_err(|e| format!("deleting {key}: {e}"))
        }));
        if tasks.len() >= a.threads.max(1) {
            settle(&mut tasks)?;
        }
        Ok(())
    })?;
    settle(&mut tasks)?;
    println!(
        "deleted {} leaked objects ({} bytes); {} still referenced on a second look were kept{}",
        deleted.objects - failed,
        deleted.bytes,
        classes.leaked.objects - deleted.objects,
        if failed > 0 {
            format!("; {failed} deletions failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        anyhow::bail!("{failed} leaked objects could not be deleted");
    }
    Ok(())
}

/// The block objects of the bucket sorted on disk by (id, index, length), and the
/// count of the other objects.
pub(crate) fn list_blocks(
    store: &dyn nectar_object::ObjectStore,
    rt: &tokio::runtime::Runtime,
    talk: bool,
) -> Result<(Sorter<Block>, Tally)> {
    let start = std::time::Instant::now();
    let mut blocks = Sorter::<Block>::new(SPILL_AT);
    let mut other = Tally::default();
    let mut after: Option<String> = None;
    let mut listed = 0u64;
    loop {
        let page = rt
            .block_on(store.list("", after.as_deref(), 100_000))
            .context("listing the bucket")?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for o in &page {
            listed += 1;
            match nectar_chunk::parse_block_key(&o.key) {
                Some((id, index, len)) => blocks.push(Block(id, index, len, o.size))?,
                None => other.add(o.size),
            }
        }
        if talk {
            eprint!("\rlisted {listed} objects");
        }
    }
    if talk {
        eprintln!();
    }
    tracing::info!(
        "{listed} objects listed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok((blocks, other))
}

/// Every slice metadata refers to, sorted on disk.
fn references(meta: &Meta, threads: usize, talk: bool) -> Result<Sorter<Reference>> {
    let start = std::time::Instant::now();
    let mut refs = Sorter::<Reference>::new(SPILL_AT);
    let mut n = 0u64;
    meta.slice_references(threads, &mut |id, size, used| {
        n += 1;
        if talk && n.is_multiple_of(100_000) {
            eprint!("\rgc: {n} slice references read");
        }
        Ok(refs.push(Reference(id, size, used as u8))?)
    })?;
    if talk {
        eprintln!();
    }
    tracing::info!(
        "{n} slice references read in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(refs)
}

/// Classifies each block by the references to its slice id (both streams sorted by id;
/// the first reference of an id is its strongest use, [`SliceUse`] being in order).
fn join(
    refs: Sorter<Reference>,
    blocks: Sorter<Block>,
    unsettled: &[(u64, u64)],
    classes: &mut Classes,
    leaked: &mut dyn FnMut(Block) -> Result<()>,
) -> Result<()> {
    let mut refs = refs.sorted();
    let mut next_ref = refs.next().transpose()?;
    for b in blocks.sorted() {
        let block = b?;
        let Block(id, _, _, bytes) = block;
        while next_ref.is_some_and(|r| r.0 < id) {
            next_ref = refs.next().transpose()?;
        }
        let used = next_ref
            .filter(|r| r.0 == id)
            .map(|r| SliceUse::from_u8(r.2).unwrap_or(SliceUse::Live));
        let class = match used {
            Some(SliceUse::Live) => &mut classes.live,
            Some(SliceUse::Trash) => &mut classes.trash,
            Some(SliceUse::Pending) => &mut classes.pending,
            None if unsettled.iter().any(|&(s, e)| s <= id && id < e) => &mut classes.unfinished,
            None => {
                leaked(block)?;
                &mut classes.leaked
            }
        };
        class.add(bytes);
    }
    Ok(())
}

/// The table `gc` prints.
pub fn report(c: &Classes) -> String {
    let rows = [
        ("live (files of the tree)", c.live),
        ("trash and delayed slices", c.trash),
        ("pending deletion", c.pending),
        ("unfinished writes", c.unfinished),
        ("leaked", c.leaked),
        ("other objects", c.other),
    ];
    let total = rows.iter().fold(Tally::default(), |t, (_, r)| Tally {
        objects: t.objects + r.objects,
        bytes: t.bytes + r.bytes,
    });
    let mut out = String::new();
    for (name, t) in rows.iter().chain(std::iter::once(&("total", total))) {
        out.push_str(&format!(
            "{name:<26} {:>12} objects {:>16} bytes\n",
            t.objects, t.bytes
        ));
    }
    out
}
