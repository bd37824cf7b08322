//! What the VFS tests share: a formatted volume on the memory engine.

use nectar_meta::{Format, Meta};

/// Formats volume `vol` (64 KiB blocks, no trash) on a fresh memory engine named
/// `name` and returns the engine's URL, for as many clients as a test wants.
pub fn memory_volume(name: &str) -> String {
    volume_at(&format!("memory://{name}"))
}

/// Formats the same volume at `url`, emptied first, and returns the URL.
#[allow(dead_code)]
pub fn volume_at(url: &str) -> String {
    let meta = Meta::connect(url).unwrap();
    meta.kv().reset().unwrap();
    meta.format(
        Format {
            name: "vol".into(),
            uuid: "u".into(),
            storage: "memory".into(),
            block_size: 64,
            meta_version: 1,
            ..Format::default()
        },
        false,
    )
    .unwrap();
    url.to_string()
}
