//! Directory streams: paged listings whose memory stays bounded.
//!
//! A stream holds one page of entries (a window) and the name it ended at (the whole
//! directory where the engine lists directories whole, see `Meta::lists_whole`, as
//! JuiceFS does on every engine). Offsets are
//! positions in the listing: 1 and 2 follow "." and "..", entry `i` (from 0) is followed
//! by offset `i + 3`; internal entries (`.trash` in the root) come right after "..", and
//! shift the listing's offsets by their number. The kernel reads forward, so the next page is fetched after the
//! last name seen — entries added or removed meanwhile never make the listing skip or
//! repeat a name that stayed. Seeking back restarts from the beginning.

use crate::error::Result;
use crate::xattr_cache::XattrCache;
use nectar_meta::{Attr, ChangeSeq, Ctx, FileType, Ino, Meta};

const PAGE: usize = 1024;

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: Vec<u8>,
    pub typ: FileType,
    pub attr: Option<Attr>,
    /// The offset of the entry after this one.
    pub next_offset: u64,
}

/// Entries of one `readdir` call and when their listing was read.
#[derive(Debug, Clone)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// Where the sequence of changes heard stood before the listing was read: a kernel
    /// adapter that lets the kernel keep listings asks [`crate::Vfs::listing_changed_since`]
    /// whether it may be stale.
    pub listed_at: ChangeSeq,
}

pub(crate) struct DirStream {
    ino: Ino,
    parent: Ino,
    /// Entries listed before the directory's own (the root's internal nodes).
    internal: Vec<nectar_meta::Entry>,
    window: Vec<nectar_meta::Entry>,
    /// See [`DirPage::listed_at`], for the window.
    listed_at: Option<ChangeSeq>,
    /// Index in the listing of `window[0]`.
    window_start: u64,
    eof: bool,
}

impl DirStream {
    pub fn new(ino: Ino, parent: Ino, internal: Vec<nectar_meta::Entry>) -> Self {
        DirStream {
            ino,
            parent,
            internal,
            window: Vec::new(),
            listed_at: None,
            window_start: 0,
            eof: false,
        }
    }

    fn restart(&mut self) {
        self.window.clear();
        self.window_start = 0;
        self.eof = false;
    }

    /// Fetches the page after the window. With `plus`, `xattrs` learns which inodes
    /// were listed together, so that the kernel's first xattr question about one of
    /// them loads the answers for the whole page.
    fn next_page(
        &mut self,
        meta: &Meta,
        ctx: &Ctx,
        mino: Ino,
        plus: bool,
        xattrs: &XattrCache,
    ) -> Result<()> {
        let limit = if meta.lists_whole() { usize::MAX } else { PAGE };
        self.listed_at = Some(meta.change_seq());
        let after = self.window.last().map(|e| e.name.clone());
        let loaded_before = self.window_start + self.window.len() as u64;
        let page = if after.is_none() && self.window_start > 0 {
            Vec::new()
        } else {
            let page = meta.readdir(ctx, mino, after.as_deref(), limit, plus)?;
            if plus {
                for part in page.chunks(PAGE) {
                    xattrs.note_listed(part.iter().map(|e| e.ino).collect());
                }
            }
            page
        };
        self.eof = page.len() < limit;
        self.window_start = loaded_before;
        self.window = page;
        Ok(())
    }

    /// Entries starting at `offset`: at most `max` (the caller's reply holds no more),
    /// and at most one page.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        meta: &Meta,
        ctx: &Ctx,
        mino: Ino,
        offset: u64,
        plus: bool,
        max: usize,
        xattrs: &XattrCache,
    ) -> Result<DirPage> {
        let mut out = Vec::new();
        let dot_attr = |ino: Ino| -> Option<Attr> {
            if plus {
                meta.get_attr(if ino == self.ino { mino } else { ino }).ok()
            } else {
                None
            }
        };
        if offset == 0 {
            out.push(DirEntry {
                ino: self.ino,
                name: b".".to_vec(),
                typ: FileType::Directory,
                attr: dot_attr(self.ino),
                next_offset: 1,
            });
        }
        if offset <= 1 {
            out.push(DirEntry {
                ino: self.parent,
                name: b"..".to_vec(),
                typ: FileType::Directory,
                attr: dot_attr(self.parent),
                next_offset: 2,
            });
        }
        let first = 2 + self.internal.len() as u64;
        for (j, e) in self.internal.iter().enumerate() {
            let at = 2 + j as u64;
            if offset <= at && out.len() < max {
                out.push(DirEntry {
                    ino: e.ino,
                    name: e.name.clone(),
                    typ: e.typ,
                    attr: if plus {
                        meta.get_attr(e.ino).ok()
                    } else {
                        None
                    },
                    next_offset: at + 1,
                });
            }
        }
        let index = offset.saturating_sub(first);
        if index < self.window_start
            || (offset == 0 && self.window_start + self.window.len() as u64 > 0)
        {
            self.restart();
        }
        if self.window.is_empty() && !self.eof {
            self.next_page(meta, ctx, mino, plus, xattrs)?;
        }
        while index >= self.window_start + self.window.len() as u64 && !self.eof {
            self.next_page(meta, ctx, mino, plus, xattrs)?;
        }
        let listed_at = self.listed_at.unwrap_or_else(|| meta.change_seq());
        if index < self.window_start {
            return Ok(DirPage {
                entries: out,
                listed_at,
            });
        }
        let skip = (index - self.window_start) as usize;
        let room = max.min(PAGE).saturating_sub(out.len());
        for (i, e) in self.window.iter().enumerate().skip(skip).take(room) {
            if plus && e.attr.is_none() {
                continue;
            }
            out.push(DirEntry {
                ino: e.ino,
                name: e.name.clone(),
                typ: e.typ,
                attr: e.attr.clone(),
                next_offset: first + self.window_start + i as u64 + 1,
            });
        }
        Ok(DirPage {
            entries: out,
            listed_at,
        })
    }
}
