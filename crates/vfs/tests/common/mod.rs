//! What the VFS tests share: a formatted volume on the memory engine.

use nectar_meta::{Format, Meta};

/// Formats volume `vol` (64 KiB blocks, no trash) on a fresh memory engine named
/// `name` and returns the engine's URL, for as many clients as a test wants.
pub fn memory_volume(name: &str) -> String {
    let url = format!("memory://{name}");
    let meta = Meta::connect(&url).unwrap();
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
    url
}
