//! Tree summaries (`nectar summary`): the files, directories and bytes below a
//! directory, with its subdirectories summarised the same way down to a depth.
//!
//! One walk of the subtree ([`Meta::walk`]) with a visitor that keeps a frame per
//! directory on the path being walked: a directory's totals are complete when the walk
//! leaves it, and are then added to its parent's. Only directories within `depth` keep
//! their children, and only the `entries` largest of them, so memory stays bounded by
//! the depth of the tree and the summary asked for, not by its size.

use crate::error::Result;
use crate::meta::{space_of, Meta};
use crate::types::*;
use crate::walk::{Node, Visitor};

/// What a directory (or a file at the top) holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub name: String,
    /// Bytes of the files (their lengths).
    pub length: u64,
    /// Space charged: lengths rounded up to 4 KiB, and 4 KiB for every other node.
    pub size: u64,
    pub files: u64,
    pub dirs: u64,
    /// The largest subdirectories and files, largest first, when within the depth;
    /// `others` sums the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Summary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<Box<Summary>>,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.length += o.length;
        self.size += o.size;
        self.files += o.files;
        self.dirs += o.dirs;
    }

    fn of_node(name: &[u8], node: &Node) -> Summary {
        let file = node.attr.typ == FileType::File;
        Summary {
            name: String::from_utf8_lossy(name).into_owned(),
            length: if file { node.attr.length } else { 0 },
            size: space_of(if file { node.attr.length } else { 0 }) as u64,
            files: u64::from(node.attr.typ != FileType::Directory),
            dirs: u64::from(node.attr.typ == FileType::Directory),
            ..Summary::default()
        }
    }
}

struct Frame {
    ino: Ino,
    depth: usize,
    summary: Summary,
}

struct Summer {
    depth: usize,
    entries: usize,
    stack: Vec<Frame>,
    done: Option<Summary>,
}

impl Summer {
    /// Adds `s` (complete) to the directory on top of the stack.
    fn give(&mut self, s: Summary) {
        let (depth, entries) = (self.depth, self.entries);
        let Some(top) = self.stack.last_mut() else {
            self.done = Some(s);
            return;
        };
        top.summary.add(&s);
        if top.depth < depth {
            top.summary.children.push(s);
            if top.summary.children.len() > 2 * entries.max(1) {
                keep_largest(&mut top.summary, entries);
            }
        }
    }
}

/// Keeps the `entries` largest children, the others summed.
fn keep_largest(s: &mut Summary, entries: usize) {
    s.children
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    if s.children.len() > entries {
        let rest: Vec<Summary> = s.children.drain(entries..).collect();
        let others = s.others.get_or_insert_with(|| {
            Box::new(Summary {
                name: "...".into(),
                ..Summary::default()
            })
        });
        for r in &rest {
            others.add(r);
        }
    }
}

impl Visitor for Summer {
    fn entry(&mut self, _parent: Option<Ino>, name: &[u8], ino: Ino, node: &Node) -> Result<()> {
        let s = Summary::of_node(name, node);
        if node.attr.typ == FileType::Directory {
            let depth = self.stack.last().map_or(0, |f| f.depth + 1);
            self.stack.push(Frame {
                ino,
                depth,
                summary: s,
            });
        } else {
            self.give(s);
        }
        Ok(())
    }

    fn leave(&mut self, dir: Ino) -> Result<()> {
        if let Some(pos) = self.stack.iter().rposition(|f| f.ino == dir) {
            // Frames above it (none in a complete walk) are closed with it.
            while self.stack.len() > pos {
                let mut f = self.stack.pop().expect("a frame");
                keep_largest(&mut f.summary, self.entries);
                self.give(f.summary);
            }
        }
        Ok(())
    }
}

impl Meta {
    /// The summary of the tree at `top` (shown as `name`): totals of everything below,
    /// and the `entries` largest children of every directory down to `depth` levels
    /// (0: the totals only), read with up to `threads` threads.
    pub fn summary(
        &self,
        top: Ino,
        name: &[u8],
        depth: usize,
        entries: usize,
        threads: usize,
    ) -> Result<Summary> {
        let mut v = Summer {
            depth,
            entries,
            stack: Vec::new(),
            done: None,
        };
        self.walk(top, name, threads, &mut v)?;
        // A file at the top, or a walk that ended early, leaves frames to close.
        while let Some(f) = v.stack.pop() {
            let mut s = f.summary;
            keep_largest(&mut s, entries);
            v.give(s);
        }
        Ok(v.done.unwrap_or_default())
    }
}
