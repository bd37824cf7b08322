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
            bucket: String::new(),
            access_key: None,
            secret_key: None,
            block_size: 64,
            compression: None,
            hash_prefix: false,
            capacity: 0,
            inodes: 0,
            trash_days: 0,
            meta_version: 1,
            min_client_version: None,
            dir_stats: false,
            enable_acl: false,
        },
        false,
    )
    .unwrap();
    url
}
