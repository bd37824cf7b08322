//! Tests of every store against one behaviour contract, plus the pieces around them.

use crate::opendal::{map_opendal_error, Backend};
use crate::s3::S3Location;
use crate::*;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

fn data(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

/// Lists everything under `prefix` in pages of `page`, checking each page's order.
async fn list_all(store: &dyn ObjectStore, prefix: &str, page: usize) -> Vec<ObjectInfo> {
    let mut out: Vec<ObjectInfo> = Vec::new();
    loop {
        let after = out.last().map(|o| o.key.clone());
        let got = store.list(prefix, after.as_deref(), page).await.unwrap();
        assert!(got.len() <= page, "page larger than the limit");
        if got.is_empty() {
            return out;
        }
        out.extend(got);
        for w in out.windows(2) {
            assert!(w[0].key < w[1].key, "not in key order: {:?}", w);
        }
    }
}

fn keys(v: &[ObjectInfo]) -> Vec<&str> {
    v.iter().map(|o| o.key.as_str()).collect()
}

/// What S3 specifies but SeaweedFS 4.48 does not do: list in byte order of the whole
/// key when names hold bytes below `/` (it lists `d/a/b` before `d/a.b`), and resume
/// inside a directory whose bare name is the resume point (it skips the directory).
/// Nectar's own keys (`chunks/0/0/123_0_4096`) meet neither case.
async fn strict_s3_order(store: &dyn ObjectStore) {
    // Byte order across separators: '-' < '.' < '/' < '0'.
    for k in ["order/a0", "order/a/b", "order/a.b", "order/a-c"] {
        store.put(k, data(1, 0)).await.unwrap();
    }
    let got = list_all(store, "order/", 1).await;
    assert_eq!(
        keys(&got),
        vec!["order/a-c", "order/a.b", "order/a/b", "order/a0"]
    );
    for k in ["order/a0", "order/a/b", "order/a.b", "order/a-c"] {
        store.delete(k).await.unwrap();
    }
    for k in ["d/0/x", "d/1/a", "d/1/b", "d/2/c"] {
        store.put(k, data(1, 0)).await.unwrap();
    }
    let got = store.list("d/", Some("d/1"), 10).await.unwrap();
    assert_eq!(keys(&got), vec!["d/1/a", "d/1/b", "d/2/c"]);
    let got = store.list("d/", Some("d/1/"), 10).await.unwrap();
    assert_eq!(keys(&got), vec!["d/1/a", "d/1/b", "d/2/c"]);
    for k in ["d/0/x", "d/1/a", "d/1/b", "d/2/c"] {
        store.delete(k).await.unwrap();
    }
}

/// The behaviour every store must have; `store` must be empty.
pub(crate) async fn conformance(store: &dyn ObjectStore) {
    // Put, get, ranged get, head.
    let d = data(1000, 7);
    store.put("a/b/c", d.clone()).await.unwrap();
    assert_eq!(store.get("a/b/c", None).await.unwrap(), d);
    assert_eq!(
        store.get("a/b/c", Some(10..20)).await.unwrap(),
        d.slice(10..20)
    );
    assert_eq!(store.get("a/b/c", Some(0..1000)).await.unwrap(), d);
    // Ranges past the end are clamped.
    assert_eq!(
        store.get("a/b/c", Some(990..2000)).await.unwrap(),
        d.slice(990..)
    );
    assert!(store
        .get("a/b/c", Some(1500..1600))
        .await
        .unwrap()
        .is_empty());
    assert!(store.get("a/b/c", Some(5..5)).await.unwrap().is_empty());
    assert_eq!(store.head("a/b/c").await.unwrap(), Some(1000));

    // Missing objects.
    assert!(matches!(
        store.get("a/b/missing", None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get("a/b/missing", Some(0..10)).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get("a/b/missing", Some(3..3)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.head("a/b/missing").await.unwrap(), None);
    // A "directory" of a file store is not an object.
    assert_eq!(store.head("a/b").await.unwrap(), None);
    let e = store.get("a/b", None).await;
    assert!(matches!(e, Err(Error::NotFound(_))), "{e:?}");

    // Empty objects and overwrites.
    store.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(store.head("empty").await.unwrap(), Some(0));
    assert!(store.get("empty", None).await.unwrap().is_empty());
    let d2 = data(300, 9);
    store.put("a/b/c", d2.clone()).await.unwrap();
    assert_eq!(store.get("a/b/c", None).await.unwrap(), d2);
    assert_eq!(store.head("a/b/c").await.unwrap(), Some(300));

    // Listing: the JuiceFS block layout, with paging.
    let mut expected = Vec::new();
    for dir in ["chunks/0/0", "chunks/0/1", "chunks/1/1000"] {
        for i in 0..9u64 {
            let key = format!("{dir}/{i}_0_{}", 100 + i);
            store.put(&key, data(100 + i as usize, 1)).await.unwrap();
            expected.push((key, 100 + i));
        }
    }
    store.put("chunks0", data(3, 0)).await.unwrap();
    store.put("other/x", data(3, 0)).await.unwrap();
    expected.sort();
    for page in [1, 4, 7, 1000] {
        let all = list_all(store, "chunks/", page).await;
        let got: Vec<(String, u64)> = all.into_iter().map(|o| (o.key, o.size)).collect();
        assert_eq!(got, expected, "page {page}");
    }
    // A prefix that ends inside a name.
    let got = list_all(store, "chunks/0/0/1", 2).await;
    assert_eq!(keys(&got), vec!["chunks/0/0/1_0_101"]);
    let got = list_all(store, "chunks", 100).await;
    assert_eq!(got.len(), expected.len() + 1);
    assert_eq!(got.last().unwrap().key, "chunks0");
    // A resume point before the prefix lists from the start of the prefix; one after
    // everything lists nothing; limit 0 lists nothing.
    let got = store.list("chunks/", Some("a"), 3).await.unwrap();
    assert_eq!(keys(&got), keys_of(&expected[..3]));
    // Resume points inside a directory, existing or not (for a directory's own name,
    // see `strict_s3_order`).
    let got = store
        .list("chunks/", Some("chunks/0/0/8_0_108"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&got), vec!["chunks/0/1/0_0_100", "chunks/0/1/1_0_101"]);
    let got = store
        .list("chunks/", Some("chunks/0/0/9"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&got), vec!["chunks/0/1/0_0_100", "chunks/0/1/1_0_101"]);
    let got = store
        .list("chunks/", Some("chunks/0/1/4"), 1)
        .await
        .unwrap();
    assert_eq!(keys(&got), vec!["chunks/0/1/4_0_104"]);
    assert!(store
        .list("chunks/", Some("chunks/2"), 5)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list("chunks/", Some("zzz"), 5)
        .await
        .unwrap()
        .is_empty());
    assert!(store.list("chunks/", None, 0).await.unwrap().is_empty());
    assert!(store.list("nothing/", None, 5).await.unwrap().is_empty());
    // The whole store.
    let all = list_all(store, "", 5).await;
    assert_eq!(all.len(), expected.len() + 2 + 2);
    assert_eq!(all[0].key, "a/b/c");

    // Delete, also of missing objects.
    store.delete("a/b/c").await.unwrap();
    store.delete("a/b/c").await.unwrap();
    store.delete("never/was").await.unwrap();
    assert!(matches!(
        store.get("a/b/c", None).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.head("a/b/c").await.unwrap(), None);
    for (k, _) in &expected {
        store.delete(k).await.unwrap();
    }
    assert!(store.list("chunks/", None, 10).await.unwrap().is_empty());
    for k in ["chunks0", "other/x", "empty"] {
        store.delete(k).await.unwrap();
    }
    assert!(store.list("", None, 10).await.unwrap().is_empty());

    // And the store passes its own check.
    check_store(store).await.unwrap();
    assert!(store.list("", None, 10).await.unwrap().is_empty());
}

fn keys_of(v: &[(String, u64)]) -> Vec<&str> {
    v.iter().map(|(k, _)| k.as_str()).collect()
}

fn cfg(storage: &str, bucket: &str, prefix: &str) -> StoreConfig {
    StoreConfig {
        storage: storage.into(),
        bucket: bucket.into(),
        prefix: prefix.into(),
        ..Default::default()
    }
}

// ---- MemStore -------------------------------------------------------------------

#[tokio::test]
async fn mem_store_conformance() {
    conformance(&MemStore::new()).await;
    strict_s3_order(&MemStore::new()).await;
}

#[tokio::test]
async fn mem_store_start_after_before_prefix() {
    let m = MemStore::new();
    for k in ["a", "b/1", "b/2", "c"] {
        m.put(k, data(1, 0)).await.unwrap();
    }
    assert_eq!(
        keys(&m.list("b/", Some("a"), 10).await.unwrap()),
        vec!["b/1", "b/2"]
    );
    assert_eq!(keys(&m.list("b/", Some(""), 1).await.unwrap()), vec!["b/1"]);
    assert_eq!(
        keys(&m.list("b/", Some("b/"), 10).await.unwrap()),
        vec!["b/1", "b/2"]
    );
    assert_eq!(
        keys(&m.list("b/", Some("b/1"), 10).await.unwrap()),
        vec!["b/2"]
    );
    assert!(m.list("b/", Some("b0"), 10).await.unwrap().is_empty());
    assert_eq!(m.len(), 4);
}

// ---- PrefixStore ----------------------------------------------------------------

#[tokio::test]
async fn prefix_store_conformance() {
    let inner = Arc::new(MemStore::new());
    // Neighbours that share the prefix's first letters must never leak in.
    inner.put("vol", data(1, 0)).await.unwrap();
    inner.put("vol0/x", data(1, 0)).await.unwrap();
    inner.put("vok/x", data(1, 0)).await.unwrap();
    let store = PrefixStore::new(inner.clone(), "vol/");
    conformance(&store).await;
    assert_eq!(inner.len(), 3);
}

#[tokio::test]
async fn prefix_store_maps_keys() {
    let inner = Arc::new(MemStore::new());
    inner.put("a", data(1, 0)).await.unwrap();
    inner.put("vol/0", data(1, 0)).await.unwrap();
    let store = PrefixStore::new(inner.clone(), "vol/");
    store.put("chunks/1", data(5, 0)).await.unwrap();
    assert_eq!(inner.head("vol/chunks/1").await.unwrap(), Some(5));
    assert_eq!(store.head("chunks/1").await.unwrap(), Some(5));
    assert_eq!(
        keys(&store.list("", None, 10).await.unwrap()),
        vec!["0", "chunks/1"]
    );
    // A resume point before the volume's keys (relative "" sorts first anyway), and
    // one in the middle.
    assert_eq!(
        keys(&store.list("", Some(""), 10).await.unwrap()),
        vec!["0", "chunks/1"]
    );
    assert_eq!(
        keys(&store.list("", Some("0"), 10).await.unwrap()),
        vec!["chunks/1"]
    );
    assert_eq!(store.describe(), "memory://vol/");
    store.delete("chunks/1").await.unwrap();
    assert_eq!(inner.len(), 2);
}

// ---- FaultStore -----------------------------------------------------------------

#[tokio::test]
async fn fault_store_injects_failures() {
    let inner = Arc::new(MemStore::new());
    let f = FaultStore::new(inner.clone());
    f.fail_puts(2);
    assert!(matches!(
        f.put("k", data(1, 0)).await,
        Err(Error::Temporary(_))
    ));
    assert!(f.put("k", data(1, 0)).await.unwrap_err().is_temporary());
    f.put("k", data(4, 0)).await.unwrap();
    assert_eq!(f.puts(), 3);
    assert_eq!(inner.len(), 1);

    f.fail_gets(1);
    assert!(matches!(f.get("k", None).await, Err(Error::Temporary(_))));
    assert_eq!(f.get("k", Some(1..3)).await.unwrap().len(), 2);
    assert_eq!(f.gets(), 2);

    f.break_puts(true);
    for _ in 0..3 {
        assert!(matches!(
            f.put("k2", data(1, 0)).await,
            Err(Error::Permanent(_))
        ));
    }
    f.break_puts(false);
    f.put("k2", data(1, 0)).await.unwrap();

    f.break_gets(true);
    assert!(matches!(f.get("k", None).await, Err(Error::Permanent(_))));
    assert!(matches!(check_store(&f).await, Err(Error::Permanent(_))));
    f.break_gets(false);
    check_store(&f).await.unwrap();
    // The failed check removed its probe.
    assert_eq!(inner.len(), 2);

    f.delete("k").await.unwrap();
    assert!(f.deletes() >= 1);
    assert_eq!(f.head("k").await.unwrap(), None);
    assert!(f.describe().starts_with("fault+memory://"));
}

#[tokio::test]
async fn fault_store_delays_puts() {
    let f = FaultStore::new(Arc::new(MemStore::new()));
    f.set_put_delay(Duration::from_millis(100));
    let t = std::time::Instant::now();
    f.put("k", data(1, 0)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));
    f.set_put_delay(Duration::ZERO);
    let t = std::time::Instant::now();
    f.put("k", data(1, 0)).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn fault_store_passes_conformance() {
    conformance(&FaultStore::new(Arc::new(MemStore::new()))).await;
}

// ---- OpendalStore: file and memory ----------------------------------------------

#[tokio::test]
async fn bulk_deletes_remove_what_exists_and_pass_over_what_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = create_store(&cfg("file", dir.path().to_str().unwrap(), "vol/")).unwrap();
    let mem: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
    for store in [file, mem] {
        for i in 0..5 {
            store
                .put(&format!("chunks/0/0/{i}_0_3"), data(3, 0))
                .await
                .unwrap();
        }
        let doomed: Vec<String> = [0, 2, 4, 9]
            .iter()
            .map(|i| format!("chunks/0/0/{i}_0_3"))
            .collect();
        store.delete_many(&doomed).await.unwrap();
        let left = list_all(store.as_ref(), "chunks/", 100).await;
        assert_eq!(
            keys(&left),
            ["chunks/0/0/1_0_3", "chunks/0/0/3_0_3"],
            "{}",
            store.describe()
        );
    }
}

#[tokio::test]
async fn file_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: it is created, like JuiceFS does.
    let bucket = dir.path().join("bucket");
    let store = create_store(&cfg("file", bucket.to_str().unwrap(), "vol/")).unwrap();
    assert!(bucket.is_dir());
    let canon = bucket.canonicalize().unwrap();
    assert_eq!(store.describe(), format!("file://{}/vol/", canon.display()));
    conformance(store.as_ref()).await;
    strict_s3_order(store.as_ref()).await;

    // Objects are plain files under the prefix.
    store.put("chunks/0/0/5_0_3", data(3, 0)).await.unwrap();
    let on_disk = std::fs::read(bucket.join("vol/chunks/0/0/5_0_3")).unwrap();
    assert_eq!(on_disk, data(3, 0).to_vec());

    // The root of the directory shows no temp directory, only objects.
    let root = create_store(&cfg("file", &format!("{}/", bucket.display()), "")).unwrap();
    assert_eq!(
        keys(&root.list("", None, 10).await.unwrap()),
        vec!["vol/chunks/0/0/5_0_3"]
    );
    assert!(bucket.join(crate::local::FS_TMP_DIR).is_dir());
    // Reopening removes temp files of failed writes, once they are old.
    let tmp = bucket.join(crate::local::FS_TMP_DIR);
    let old = std::fs::File::create(tmp.join("a.stale")).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    std::fs::write(tmp.join("b.fresh"), b"x").unwrap();
    drop(OpendalStore::fs(&bucket).unwrap());
    assert!(!tmp.join("a.stale").exists());
    assert!(tmp.join("b.fresh").exists());
    // Files that are not regular files are skipped.
    std::os::unix::net::UnixListener::bind(bucket.join("vol/sock")).unwrap();
    assert_eq!(
        keys(&store.list("", None, 10).await.unwrap()),
        vec!["chunks/0/0/5_0_3"]
    );
}

#[tokio::test]
async fn opendal_memory_conformance() {
    let store = OpendalStore::memory().unwrap();
    conformance(&store).await;
    strict_s3_order(&store).await;
}

#[tokio::test]
async fn opendal_store_rejects_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = OpendalStore::fs(dir.path()).unwrap();
    for key in ["", "/a", "a/", "a//b", "a/../b", "../x", "./x", "a\0b"] {
        let e = store.put(key, data(1, 0)).await.unwrap_err();
        assert!(matches!(e, Error::Permanent(_)), "{key:?}: {e}");
        assert!(store.get(key, None).await.is_err());
        assert!(store.head(key).await.is_err());
        assert!(store.delete(key).await.is_err());
    }
    assert!(store.list("/", None, 10).await.unwrap().is_empty());
    // Nothing escaped the directory.
    assert!(store.list("", None, 10).await.unwrap().is_empty());
}

#[test]
fn file_store_permission_denied_says_what_to_check() {
    // Root ignores file modes, so fake the error where it matters: the mapping.
    let e = ::opendal::Error::new(::opendal::ErrorKind::PermissionDenied, "permission denied");
    let e = map_opendal_error(Backend::Fs, "/data", "put", "x/y", e);
    let msg = e.to_string();
    assert!(matches!(e, Error::Permanent(_)));
    assert!(
        msg.contains("/data") && msg.contains("may read and write"),
        "{msg}"
    );
}

#[test]
fn disk_full_maps_to_no_space() {
    for kind in [
        std::io::ErrorKind::StorageFull,
        std::io::ErrorKind::QuotaExceeded,
    ] {
        // What OpenDAL's fs service makes of ENOSPC: a temporary "unexpected" error
        // with the io::Error as its source.
        let e = ::opendal::Error::new(::opendal::ErrorKind::Unexpected, "no storage space")
            .set_source(std::io::Error::from(kind))
            .set_temporary();
        let e = map_opendal_error(Backend::Fs, "/data", "put", "k", e);
        assert!(matches!(e, Error::NoSpace(_)), "{e}");
    }
}

/// A full local disk, for real: runs when `NECTAR_TEST_FULL_DIR` names a directory on a
/// small file system, e.g. `mount -t tmpfs -o size=1m tmpfs /tmp/full`.
#[tokio::test]
async fn file_store_full_disk_is_no_space() {
    let Ok(dir) = std::env::var("NECTAR_TEST_FULL_DIR") else {
        eprintln!(
            "SKIPPED file_store_full_disk_is_no_space: NECTAR_TEST_FULL_DIR is not set (set it \
             to a directory on a small file system, e.g. a 1 MiB tmpfs)"
        );
        return;
    };
    let store = OpendalStore::fs(&dir).unwrap();
    let mut err = None;
    for i in 0..64 {
        if let Err(e) = store.put(&format!("fill/{i}"), data(1 << 20, 0)).await {
            err = Some(e);
            break;
        }
    }
    for i in 0..64 {
        store.delete(&format!("fill/{i}")).await.unwrap();
    }
    let e = err.expect("the file system never filled up");
    eprintln!("full disk: {e}");
    assert!(matches!(e, Error::NoSpace(_)), "{e}");
}

#[test]
fn opendal_errors_map_to_kinds() {
    use ::opendal::{Error as OErr, ErrorKind as K};
    let m = |e: OErr| map_opendal_error(Backend::S3, "http://h:1/b", "get", "k", e);
    assert!(matches!(m(OErr::new(K::NotFound, "x")), Error::NotFound(k) if k == "k"));
    assert!(m(OErr::new(K::RateLimited, "slow down")).is_temporary());
    assert!(m(OErr::new(K::Unexpected, "503").set_temporary()).is_temporary());
    let bad = OErr::new(K::Unexpected, "bad request").set_persistent();
    assert!(matches!(m(bad), Error::Permanent(_)));
    let denied = m(OErr::new(
        K::PermissionDenied,
        "S3Error { code: \"SignatureDoesNotMatch\", message: \"...\" }",
    ));
    let msg = denied.to_string();
    assert!(matches!(denied, Error::Permanent(_)));
    assert!(
        msg.contains("access denied by http://h:1/b (SignatureDoesNotMatch)")
            && msg.contains("--access-key/--secret-key"),
        "{msg}"
    );
    let missing = m(OErr::new(
        K::ConfigInvalid,
        "S3Error { code: \"NoSuchBucket\", message: \"...\" }",
    ));
    let msg = missing.to_string();
    assert!(matches!(missing, Error::Config(_)));
    assert!(
        msg.contains("http://h:1/b does not exist")
            && msg.contains("aws s3 mb s3://b --endpoint-url http://h:1"),
        "{msg}"
    );
}

// ---- Configuration -------------------------------------------------------------

fn config_err(c: &StoreConfig) -> String {
    match create_store(c) {
        Err(Error::Config(m)) => m,
        Err(e) => panic!("expected a config error for {c:?}, got {e}"),
        Ok(s) => panic!(
            "expected a config error for {c:?}, got a store {}",
            s.describe()
        ),
    }
}

#[test]
fn bad_configs_say_what_is_accepted() {
    let m = config_err(&cfg("ftp", "x", ""));
    assert!(m.contains("unknown storage type \"ftp\"") && m.contains("file") && m.contains("s3"));
    assert!(config_err(&cfg("", "x", "")).contains("accepted"));
    for bucket in [
        "",
        "bucket",
        "ftp://host/bucket",
        "http://host:8333",
        "http://host/bucket/extra",
        "http://key:secret@host/bucket",
        "http://host/bucket?x=1",
        "https://example.com",
    ] {
        let m = config_err(&cfg("s3", bucket, ""));
        assert!(m.contains("http(s)://host[:port]/bucket"), "{bucket}: {m}");
    }
    assert!(config_err(&cfg("file", "", "")).contains("local directory"));
    assert!(config_err(&cfg("file", "http://h/b", "")).contains("--storage s3"));
    for prefix in ["/vol/", "a//b/", "../x/", "./", "/"] {
        assert!(config_err(&cfg("memory", "m", prefix)).contains("bad object prefix"));
    }
    let mut c = cfg("s3", "http://127.0.0.1:8333/b", "");
    c.access_key = Some("k".into());
    assert!(config_err(&c).contains("without a secret key"));
    c.access_key = None;
    c.secret_key = Some("s".into());
    assert!(config_err(&c).contains("without an access key"));
    // The secret never shows in debug output.
    assert!(!format!("{c:?}").contains("\"s\""));
}

#[test]
fn s3_bucket_urls() {
    let p = |u: &str, env: Option<&str>| S3Location::parse(u, env.map(String::from)).unwrap();
    let l = p("http://127.0.0.1:8333/nectar-test", None);
    assert_eq!(l.endpoint, "http://127.0.0.1:8333");
    assert_eq!(l.bucket, "nectar-test");
    assert_eq!(l.region, "us-east-1");
    assert!(!l.virtual_host);
    assert_eq!(l.url(), "http://127.0.0.1:8333/nectar-test");
    let l = p("http://127.0.0.1:8333/nectar-test/", Some("eu-west-3"));
    assert_eq!(
        (l.bucket.as_str(), l.region.as_str()),
        ("nectar-test", "eu-west-3")
    );

    let l = p(
        "https://mybucket.s3.eu-west-1.amazonaws.com",
        Some("us-west-2"),
    );
    assert_eq!(l.endpoint, "https://s3.eu-west-1.amazonaws.com");
    assert_eq!(
        (l.bucket.as_str(), l.region.as_str()),
        ("mybucket", "eu-west-1")
    );
    assert!(l.virtual_host);
    let l = p("https://mybucket.s3.amazonaws.com/", None);
    assert_eq!(
        (l.bucket.as_str(), l.region.as_str()),
        ("mybucket", "us-east-1")
    );
    let l = p("https://mybucket.s3.amazonaws.com", Some("ap-south-1"));
    assert_eq!(l.endpoint, "https://s3.ap-south-1.amazonaws.com");
    let l = p("https://my.dotted.bucket.s3-us-west-2.amazonaws.com", None);
    assert_eq!(
        (l.bucket.as_str(), l.region.as_str()),
        ("my.dotted.bucket", "us-west-2")
    );
    assert!(!l.virtual_host);
    let l = p("https://b.s3.dualstack.eu-central-1.amazonaws.com", None);
    assert_eq!(l.region, "eu-central-1");
    let l = p("https://s3.eu-north-1.amazonaws.com/pathbucket", None);
    assert_eq!(
        (l.bucket.as_str(), l.region.as_str()),
        ("pathbucket", "eu-north-1")
    );
    assert!(!l.virtual_host);
}

#[tokio::test]
async fn memory_storage_is_shared_per_bucket() {
    let a = create_store(&cfg("memory", "shared-test", "v/")).unwrap();
    let b = create_store(&cfg("memory", "shared-test", "v/")).unwrap();
    let c = create_store(&cfg("memory", "other-test", "v/")).unwrap();
    a.put("k", data(2, 0)).await.unwrap();
    assert_eq!(b.head("k").await.unwrap(), Some(2));
    assert_eq!(c.head("k").await.unwrap(), None);
    assert!(!create_bucket(&cfg("memory", "x", "")).await.unwrap());
}

#[tokio::test]
async fn unreachable_s3_says_is_the_server_running() {
    // Port 1 on loopback: connection refused at once, no traffic leaves the machine.
    let store = create_store(&StoreConfig {
        storage: "s3".into(),
        bucket: "http://127.0.0.1:1/nectar-test".into(),
        access_key: Some("k".into()),
        secret_key: Some("s".into()),
        prefix: "vol/".into(),
        encryption: None,
    })
    .unwrap();
    assert_eq!(store.describe(), "s3://127.0.0.1:1/nectar-test/vol/");
    let e = check_store(store.as_ref()).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("unreachable: {msg}");
    assert!(e.is_temporary(), "{msg}");
    assert!(
        msg.contains("cannot reach http://127.0.0.1:1/nectar-test: is the server running?"),
        "{msg}"
    );
    let e = create_bucket(&cfg("s3", "http://127.0.0.1:1/nectar-test", ""))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is the server running"), "{e}");
}

/// A loopback HTTP server that answers every request with `status` and an S3 error
/// `code`; returns its port and a request counter.
fn fake_s3(status: u16, code: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let xml = format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/xml\r\n\
                 Connection: close\r\n\r\n{xml}",
                xml.len()
            );
        }
    });
    (port, count)
}

#[tokio::test]
async fn s3_server_errors_are_temporary_only_when_retrying_may_help() {
    use std::sync::atomic::Ordering;
    let store_at = |port: u16| {
        create_store(&StoreConfig {
            storage: "s3".into(),
            bucket: format!("http://127.0.0.1:{port}/b"),
            access_key: Some("k".into()),
            secret_key: Some("s".into()),
            prefix: String::new(),
            encryption: None,
        })
        .unwrap()
    };
    // 503: reported as temporary at once (the data path retries it, `--io-retries`).
    let (port, count) = fake_s3(503, "ServiceUnavailable");
    let e = store_at(port).put("k", data(10, 0)).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let (port, count) = fake_s3(503, "SlowDown");
    let e = store_at(port).get("k", None).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // 400: not retried, permanent.
    let (port, count) = fake_s3(400, "InvalidArgument");
    let e = store_at(port).get("k", None).await.unwrap_err();
    assert!(matches!(e, Error::Permanent(_)), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // 403: permanent, says to check the credentials.
    let (port, count) = fake_s3(403, "InvalidAccessKeyId");
    let e = store_at(port).head("k").await.unwrap_err();
    assert!(e.to_string().contains("--access-key/--secret-key"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // A HEAD gets no body; a 404 there is simply "no object".
    let (port, _) = fake_s3(404, "NoSuchKey");
    assert_eq!(store_at(port).head("k").await.unwrap(), None);
}

// ---- S3 against a real server ---------------------------------------------------

/// Runs against the server named by `NECTAR_TEST_S3` (a bucket URL, e.g. from
/// `scripts/start-seaweedfs.sh`), with `NECTAR_TEST_S3_ACCESS_KEY` and
/// `NECTAR_TEST_S3_SECRET_KEY`.
#[tokio::test]
async fn s3_store_conformance() {
    let Ok(bucket) = std::env::var("NECTAR_TEST_S3") else {
        eprintln!(
            "SKIPPED s3_store_conformance: NECTAR_TEST_S3 is not set (set it to a bucket URL \
             such as http://127.0.0.1:8333/nectar-test, e.g. from scripts/start-seaweedfs.sh)"
        );
        return;
    };
    let ak = std::env::var("NECTAR_TEST_S3_ACCESS_KEY").ok();
    let sk = std::env::var("NECTAR_TEST_S3_SECRET_KEY").ok();
    let run = format!("nectar-test-{:08x}/", rand::random::<u32>());
    let c = StoreConfig {
        storage: "s3".into(),
        bucket: bucket.clone(),
        access_key: ak.clone(),
        secret_key: sk.clone(),
        prefix: run.clone(),
        encryption: None,
    };
    // The bucket exists (or is made now).
    create_bucket(&c).await.unwrap();
    assert!(!create_bucket(&c).await.unwrap());
    let store = create_store(&c).unwrap();
    check_store(store.as_ref()).await.unwrap();
    conformance(store.as_ref()).await;

    // Larger than one list page of the server, and a block-sized object.
    let big = data(4 << 20, 3);
    store
        .put("chunks/0/0/1_0_4194304", big.clone())
        .await
        .unwrap();
    assert_eq!(
        store.get("chunks/0/0/1_0_4194304", None).await.unwrap(),
        big
    );
    assert_eq!(
        store
            .get("chunks/0/0/1_0_4194304", Some(4_000_000..4_100_000))
            .await
            .unwrap(),
        big.slice(4_000_000..4_100_000)
    );
    store.delete("chunks/0/0/1_0_4194304").await.unwrap();
    let n = 1100;
    use futures::StreamExt;
    let puts = futures::stream::iter(0..n).map(|i| {
        let store = store.clone();
        async move { store.put(&format!("many/{i:05}"), data(1, 0)).await }
    });
    let results: Vec<_> = puts.buffer_unordered(16).collect().await;
    results.into_iter().for_each(|r| r.unwrap());
    let all = list_all(store.as_ref(), "many/", 1000).await;
    assert_eq!(all.len(), n);
    let all = list_all(store.as_ref(), "many/", 333).await;
    assert_eq!(all.len(), n);
    let dels = futures::stream::iter(all.iter()).map(|o| store.delete(&o.key));
    let results: Vec<_> = dels.buffer_unordered(16).collect().await;
    results.into_iter().for_each(|r| r.unwrap());
    assert!(store.list("", None, 10).await.unwrap().is_empty());

    // A wrong secret key is a permanent error that says to check the credentials.
    if ak.is_some() {
        let wrong = create_store(&StoreConfig {
            secret_key: Some("definitely-wrong".into()),
            ..c.clone()
        })
        .unwrap();
        let e = wrong.put("x", data(1, 0)).await.unwrap_err();
        let msg = e.to_string();
        eprintln!("wrong secret key: {msg}");
        assert!(matches!(e, Error::Permanent(_)), "{msg}");
        assert!(
            msg.contains("credentials") && msg.contains("--secret-key"),
            "{msg}"
        );
        let e = check_store(wrong.as_ref()).await.unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
    } else {
        eprintln!("s3_store_conformance: no access key given, skipping the wrong-key check");
    }

    // A bucket that does not exist.
    let missing_url = format!(
        "{}/nectar-missing-{:08x}",
        bucket.trim_end_matches('/').rsplit_once('/').unwrap().0,
        rand::random::<u32>()
    );
    let missing = create_store(&StoreConfig {
        bucket: missing_url.clone(),
        ..c.clone()
    })
    .unwrap();
    let e = check_store(missing.as_ref()).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("missing bucket: {msg}");
    assert!(matches!(e, Error::Config(_)), "{msg}");
    assert!(
        msg.contains("does not exist") && msg.contains("aws s3 mb"),
        "{msg}"
    );
    // ... until it is created.
    let mc = StoreConfig {
        bucket: missing_url,
        ..c.clone()
    };
    assert!(create_bucket(&mc).await.unwrap());
    check_store(missing.as_ref()).await.unwrap();
}

// ---- HDFS against a real, Kerberized cluster ----------------------------------------

/// The cluster of `scripts/start-hdfs.sh`, or why the test is skipped. Points the
/// Kerberos library and the HDFS client at the cluster's configuration (process-wide
/// variables, the same for every test that sets them).
fn hdfs_cluster(test: &str) -> Option<String> {
    let Ok(url) = std::env::var("NECTAR_TEST_HDFS_URL") else {
        eprintln!(
            "SKIPPED {test}: NECTAR_TEST_HDFS_URL is not set (start a cluster with \
             `eval \"$(scripts/start-hdfs.sh DIR)\"`)"
        );
        return None;
    };
    static ENV: std::sync::Once = std::sync::Once::new();
    ENV.call_once(|| {
        std::env::set_var(
            "KRB5_CONFIG",
            std::env::var("NECTAR_TEST_KRB5_CONFIG").unwrap(),
        );
        std::env::set_var(
            "HADOOP_CONF_DIR",
            std::env::var("NECTAR_TEST_HADOOP_CONF_DIR").unwrap(),
        );
    });
    Some(url)
}

fn test_kerberos() -> Option<crate::hdfs::Kerberos> {
    crate::hdfs::Kerberos::new(
        std::env::var("NECTAR_TEST_KRB5PRINCIPAL").ok(),
        std::env::var("NECTAR_TEST_KRB5KEYTAB").ok(),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn hdfs_store_conformance() {
    let Some(url) = hdfs_cluster("hdfs_store_conformance") else {
        return;
    };
    let run = format!("{url}/nectar-test-{:08x}", rand::random::<u32>());
    let store = HdfsStore::new(&run, test_kerberos(), None).unwrap();
    assert_eq!(store.describe(), format!("{run}/"));
    check_store(&store).await.unwrap();
    conformance(&store).await;

    // A block-sized object (several data packets), ranged reads inside it.
    let big = data(4 << 20, 3);
    store
        .put("chunks/0/0/1_0_4194304", big.clone())
        .await
        .unwrap();
    assert_eq!(
        store.get("chunks/0/0/1_0_4194304", None).await.unwrap(),
        big
    );
    assert_eq!(
        store
            .get("chunks/0/0/1_0_4194304", Some(4_000_000..4_100_000))
            .await
            .unwrap(),
        big.slice(4_000_000..4_100_000)
    );
    // Puts in parallel to one directory, then all listed.
    use futures::StreamExt;
    let puts = futures::stream::iter(0..64).map(|i| {
        let store = &store;
        async move { store.put(&format!("many/{i:03}"), data(10, i as u8)).await }
    });
    let results: Vec<_> = puts.buffer_unordered(16).collect().await;
    results.into_iter().for_each(|r| r.unwrap());
    assert_eq!(list_all(&store, "many/", 10).await.len(), 64);
    let mut keys: Vec<String> = list_all(&store, "", 1000)
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    store.delete_many(&keys).await.unwrap();
    assert!(store.list("", None, 10).await.unwrap().is_empty());

    // The same cluster through its list of NameNodes, whichever is active.
    let namenodes = std::env::var("NECTAR_TEST_HDFS_NAMENODES").unwrap();
    let path = run.split_once("://").unwrap().1.split_once('/').unwrap().1;
    let listed =
        HdfsStore::new(&format!("hdfs://{namenodes}/{path}"), test_kerberos(), None).unwrap();
    listed.put("via/list", data(5, 5)).await.unwrap();
    assert_eq!(store.get("via/list", None).await.unwrap(), data(5, 5));
    keys = vec!["via/list".into()];
    store.delete_many(&keys).await.unwrap();
}

#[tokio::test]
async fn hdfs_keytab_in_base64_is_enough() {
    let Some(url) = hdfs_cluster("hdfs_keytab_in_base64_is_enough") else {
        return;
    };
    use base64::Engine;
    let keytab = std::fs::read(std::env::var("NECTAR_TEST_KRB5KEYTAB").unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(keytab);
    let k = crate::hdfs::Kerberos::new(
        std::env::var("NECTAR_TEST_KRB5PRINCIPAL").ok(),
        None,
        Some(b64),
    )
    .unwrap();
    let run = format!("{url}/nectar-test-{:08x}", rand::random::<u32>());
    let store = HdfsStore::new(&run, k, None).unwrap();
    check_store(&store).await.unwrap();
}

#[tokio::test]
async fn hdfs_failures_say_what_is_wrong() {
    let Some(url) = hdfs_cluster("hdfs_failures_say_what_is_wrong") else {
        return;
    };
    // Another tenant's directory: refused, permanently, saying who lacks what.
    let other = std::env::var("NECTAR_TEST_HDFS_OTHER_URL").unwrap();
    let store = HdfsStore::new(&format!("{other}/x"), test_kerberos(), None).unwrap();
    let e = check_store(&store).await.unwrap_err();
    eprintln!("outside the tenant's directory: {e}");
    assert!(matches!(e, Error::Permanent(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("permission denied") && msg.contains("nectar@"),
        "{msg}"
    );
    assert!(msg.contains("/user/other/x/"), "{msg}");

    // A principal the KDC does not know.
    let keytab = std::env::var("NECTAR_TEST_KRB5KEYTAB").ok();
    let k = crate::hdfs::Kerberos::new(Some("nobody@NECTAR.TEST".into()), keytab, None).unwrap();
    let store = HdfsStore::new(&url, k, None).unwrap();
    let e = check_store(&store).await.unwrap_err();
    eprintln!("principal without a key in the keytab: {e}");
    assert!(matches!(e, Error::Permanent(_)), "{e}");
    assert!(
        e.to_string()
            .contains("keytab holds no key for KRB5PRINCIPAL"),
        "{e}"
    );

    // No credentials at all on a Kerberized cluster.
    let store = HdfsStore::new(&url, None, Some("nectar")).unwrap();
    let e = check_store(&store).await.unwrap_err();
    eprintln!("no credentials: {e}");
    assert!(matches!(e, Error::Permanent(_)), "{e}");
    assert!(e.to_string().contains("set KRB5PRINCIPAL"), "{e}");

    // A nameservice the configuration does not define.
    let e = HdfsStore::new("hdfs://nosuchns/x", test_kerberos(), None)
        .err()
        .expect("an unknown nameservice");
    eprintln!("unknown nameservice: {e}");
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("dfs.nameservices"), "{e}");
}

// ---- Other services against real servers -------------------------------------------

/// `--storage minio` is S3 with MinIO's path-style bucket URL: the same SeaweedFS.
#[tokio::test]
async fn minio_store_conformance() {
    let Ok(bucket) = std::env::var("NECTAR_TEST_S3") else {
        eprintln!("SKIPPED minio_store_conformance: NECTAR_TEST_S3 is not set");
        return;
    };
    let c = StoreConfig {
        storage: "minio".into(),
        bucket,
        access_key: std::env::var("NECTAR_TEST_S3_ACCESS_KEY").ok(),
        secret_key: std::env::var("NECTAR_TEST_S3_SECRET_KEY").ok(),
        prefix: format!("nectar-minio-{:08x}/", rand::random::<u32>()),
        encryption: None,
    };
    let store = create_store(&c).unwrap();
    conformance(store.as_ref()).await;
}

/// Runs against the WebDAV server of `scripts/start-webdav.sh` (rclone).
#[tokio::test]
async fn webdav_store_conformance() {
    let Ok(url) = std::env::var("NECTAR_TEST_WEBDAV") else {
        eprintln!(
            "SKIPPED webdav_store_conformance: NECTAR_TEST_WEBDAV is not set (start a server \
             with scripts/start-webdav.sh)"
        );
        return;
    };
    let user = std::env::var("NECTAR_TEST_WEBDAV_USER").ok();
    let password = std::env::var("NECTAR_TEST_WEBDAV_PASSWORD").ok();
    let c = StoreConfig {
        storage: "webdav".into(),
        bucket: format!("{url}nectar-{:08x}/", rand::random::<u32>()),
        access_key: user,
        secret_key: password,
        prefix: "vol/".into(),
        encryption: None,
    };
    let store = create_store(&c).unwrap();
    check_store(store.as_ref()).await.unwrap();
    conformance(store.as_ref()).await;

    // A wrong password is refused, permanently, by the check `format` runs.
    let wrong = create_store(&StoreConfig {
        secret_key: Some("wrong".into()),
        ..c.clone()
    })
    .unwrap();
    let e = check_store(wrong.as_ref()).await.unwrap_err();
    eprintln!("wrong webdav password: {e}");
    assert!(matches!(e, Error::Permanent(_)), "{e}");
    assert!(e.to_string().contains("check the credentials"), "{e}");
    assert!(!e.to_string().contains("wrong"), "{e}");
}
