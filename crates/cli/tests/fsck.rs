//! `nectar fsck` on a volume written through a real mount, then damaged behind its
//! back: a block removed from the bucket, a directory's link count and a file's parent
//! pointer made wrong. fsck names the broken file by path and each problem, `--repair`
//! fixes the tree (not the lost block), and the volume checks clean once the block is
//! back.

mod common;

use common::*;
use nectar_meta::{keys, Attr, Ctx, Meta, ROOT_INODE};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_attr(meta: &Meta, ino: u64, change: impl Fn(&mut Attr)) {
    meta.kv()
        .txn(|tx| {
            let mut a = Attr::decode(&tx.get(&keys::attr(ino))?.unwrap())?;
            change(&mut a);
            tx.set(&keys::attr(ino), &a.encode())?;
            Ok::<_, nectar_meta::Error>(())
        })
        .unwrap();
}

#[test]
fn fsck_finds_a_lost_block_and_repairs_the_tree() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    std::fs::create_dir_all(m.path("a/b")).unwrap();
    std::fs::create_dir_all(m.path("a/c")).unwrap();
    let mut data = vec![0u8; 5 << 20];
    Pattern::new(7).fill(&mut data);
    std::fs::write(m.path("a/f"), &data).unwrap();
    std::fs::write(m.path("small"), b"small").unwrap();
    // In the trash: a file, and a directory (the trash keeps no link counts).
    std::fs::write(m.path("gone"), &data[..2 << 20]).unwrap();
    std::fs::remove_file(m.path("gone")).unwrap();
    std::fs::create_dir(m.path("old")).unwrap();
    std::fs::remove_dir(m.path("old")).unwrap();
    m.unmount();

    let ok = nectar(&["fsck", &vol.meta_url]);
    assert!(ok.status.success(), "{ok:?}");

    // Damage: a block of a/f gone, a's link count and f's parent pointer wrong.
    let meta = Meta::connect(&vol.meta_url).unwrap();
    meta.load().unwrap();
    let (a, _) = meta.lookup(&Ctx::root(), ROOT_INODE, b"a").unwrap();
    let (f, _) = meta.lookup(&Ctx::root(), a, b"f").unwrap();
    let slices = meta.read_chunk(f, 0).unwrap();
    let id = slices[0].id;
    let block = vol
        .path("data/testvol/chunks/0/0")
        .join(format!("{id}_1_1048576"));
    let saved = std::fs::read(&block).unwrap();
    std::fs::remove_file(&block).unwrap();
    set_attr(&meta, a, |at| at.nlink = 7);
    set_attr(&meta, f, |at| at.parent = 999);
    // And the block of the file in the trash.
    let hour = meta.trash_hours().unwrap()[0].1;
    let trashed = meta
        .readdir(&Ctx::root(), hour, None, 10, false)
        .unwrap()
        .into_iter()
        .find(|e| e.name.ends_with(b"-gone"))
        .unwrap();
    let gone_id = meta.read_chunk(trashed.ino, 0).unwrap()[0].id;
    let gone_block = vol
        .path("data/testvol/chunks/0/0")
        .join(format!("{gone_id}_0_2097152"));
    let gone_saved = std::fs::read(&gone_block).unwrap();
    std::fs::remove_file(&gone_block).unwrap();

    let bad = nectar(&["fsck", &vol.meta_url]);
    let text = stdout(&bad);
    assert!(!bad.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "broken file /a/f: block chunks/0/0/{id}_1_1048576 is missing"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "directory /a (inode {a}) has link count 7, its subdirectories make 4"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("/a/f (inode {f}) says its parent is inode 999")),
        "{text}"
    );
    assert!(!text.contains("/small"), "{text}");
    assert!(
        text.contains(&format!(
            "-gone: block chunks/0/0/{gone_id}_0_2097152 is missing"
        )) && text.contains("broken file /.trash/"),
        "{text}"
    );
    assert!(
        !text.contains("-old"),
        "the trash keeps no link counts: {text}"
    );
    // A subtree is checked block by block: the same broken file.
    let sub = nectar(&["fsck", &vol.meta_url, "--path", "a", "--recursive"]);
    assert!(!sub.status.success());
    assert!(
        stdout(&sub).contains(&format!(
            "broken file /a/f: block chunks/0/0/{id}_1_1048576 is missing"
        )),
        "{}",
        stdout(&sub)
    );

    // --repair fixes the tree; the lost block stays lost.
    let repaired = nectar(&["fsck", &vol.meta_url, "--repair"]);
    let text = stdout(&repaired);
    assert!(
        !repaired.status.success(),
        "the block is still missing: {text}"
    );
    assert_eq!(text.matches("repaired: ").count(), 2, "{text}");
    let attr = |ino| {
        meta.kv()
            .read(|tx| Attr::decode(&tx.get(&keys::attr(ino))?.unwrap()))
            .unwrap()
    };
    assert_eq!(attr(a).nlink, 4);
    assert_eq!(attr(f).parent, a);

    // --path checks one subtree.
    let sub = nectar(&["fsck", &vol.meta_url, "--path", "a/c"]);
    assert!(sub.status.success(), "{sub:?}");
    std::fs::write(&block, saved).unwrap();
    std::fs::write(&gone_block, gone_saved).unwrap();
    let clean = nectar(&["fsck", &vol.meta_url, "--path", "/a", "--recursive"]);
    assert!(clean.status.success(), "{clean:?}");
    let clean = nectar(&["fsck", &vol.meta_url]);
    assert!(clean.status.success(), "{clean:?}");
}
