//! What the metadata tests share.

// Each test binary uses part of it.
#![allow(dead_code)]

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
        other: Default::default(),
    }
}

/// The META-URL of the test server of `engine` (`redis`, `postgres`, `mysql`, `etcd`,
/// `tikv`), found by its scheme in `NECTAR_TEST_META_URLS` (space-separated; CI starts
/// the servers), made private to `space` so that tests may run at once on one server:
/// its own key prefix on Redis, table on SQL, key path on etcd and TiKV. `None`, after
/// saying so, when no such server is given.
pub fn server_url(engine: &str, space: &str) -> Option<String> {
    let urls = std::env::var("NECTAR_TEST_META_URLS").unwrap_or_default();
    let found = urls.split_whitespace().find(|u| {
        let scheme = u.split("://").next().unwrap_or("");
        match engine {
            "redis" => scheme == "redis" || scheme == "rediss",
            "postgres" => scheme == "postgres" || scheme == "postgresql",
            other => scheme == other,
        }
    });
    let Some(url) = found else {
        eprintln!("skipped: no {engine} server in NECTAR_TEST_META_URLS");
        return None;
    };
    let option = |opt: String| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{opt}")
    };
    Some(match engine {
        "redis" => option(format!("prefix={space}:")),
        "postgres" | "mysql" => option(format!("table=nectar_{space}")),
        // etcd and TiKV keep a volume under the URL's path.
        _ => format!("{}-{space}", url.trim_end_matches('/')),
    })
}
