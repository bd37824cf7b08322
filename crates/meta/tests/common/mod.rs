//! What the metadata tests share.

use nectar_meta::Format;

/// Settings of a test volume: 4 KiB blocks on memory storage, no limits.
pub fn new_format(name: &str) -> Format {
    Format {
        name: name.into(),
        uuid: "00000000-0000-0000-0000-000000000001".into(),
        storage: "memory".into(),
        bucket: String::new(),
        access_key: None,
        secret_key: None,
        block_size: 4096,
        compression: None,
        hash_prefix: false,
        capacity: 0,
        inodes: 0,
        trash_days: 0,
        meta_version: 1,
        min_client_version: None,
        dir_stats: false,
        enable_acl: false,
    }
}
