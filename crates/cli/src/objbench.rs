//! `nectar objbench`: checks and measures an object store the way a volume would use
//! it, before a volume is put on it.
//!
//! First the operations Nectar relies on, each with a pass or a failure that says what
//! went wrong: a put read back whole and by range, a missing object reported as
//! missing, head, listing in key order from a start key, and deletes (of a missing
//! object too). Then the speed, with `--threads` requests at once: blocks of
//! `--block-size` (what file data is made of) put and got, small objects (what small
//! files become) put, got, headed and deleted, and listing pages. Each line has a
//! verdict from the mean latency (good, fair or slow) with the thresholds it used.
//! Everything goes under a prefix of its own, removed at the end, also after a
//! failure.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use nectar_object::{create_store, ObjectStore, StoreConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ObjbenchArgs {
    /// Where the objects go: a directory for `file`, a bucket URL for `s3`.
    bucket: String,
    /// Object storage type: file or s3.
    #[arg(long, default_value = "file")]
    storage: String,
    /// Access key of the object storage.
    #[arg(long, env = "ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
    /// Secret key (prefer the SECRET_KEY environment variable).
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Size of a block, in KiB.
    #[arg(long, default_value_t = 4096)]
    block_size: usize,
    /// Blocks to put and get.
    #[arg(long, default_value_t = 64)]
    blocks: usize,
    /// Size of a small object, in KiB.
    #[arg(long, default_value_t = 128)]
    small_object_size: usize,
    /// Small objects to put, get, head and delete.
    #[arg(long, default_value_t = 200)]
    small_objects: usize,
    /// Requests at once.
    #[arg(short = 'p', long, default_value_t = 4)]
    threads: usize,
}

/// Mean latencies at or under which an operation is good, then fair; above, slow.
struct Thresholds {
    good: Duration,
    fair: Duration,
}

const BLOCK_LIMITS: Thresholds = Thresholds {
    good: Duration::from_millis(200),
    fair: Duration::from_millis(1000),
};
const SMALL_LIMITS: Thresholds = Thresholds {
    good: Duration::from_millis(20),
    fair: Duration::from_millis(100),
};

pub fn run(a: ObjbenchArgs) -> Result<()> {
    if a.threads == 0 || a.blocks == 0 || a.small_objects == 0 || a.block_size == 0 {
        bail!("--threads, --blocks, --small-objects and --block-size must be at least 1");
    }
    let prefix = format!("__nectar_objbench_{}/", std::process::id());
    let store = create_store(&StoreConfig {
        storage: a.storage.clone(),
        bucket: a.bucket.clone(),
        access_key: a.access_key.clone(),
        secret_key: a.secret_key.clone(),
        prefix: prefix.clone(),
        encryption: None,
    })?;
    let rt = crate::runtime()?;
    println!("object storage: {}", store.describe());
    let result = rt.block_on(async {
        let functional = check_operations(store.as_ref()).await;
        if functional {
            measure(&a, &store).await
        } else {
            bail!("the storage failed the checks above; fix them before measuring it")
        }
    });
    // Whatever happened, remove what was written.
    let left = rt.block_on(remove_all(store.as_ref()));
    if let Err(e) = left {
        eprintln!("nectar objbench: objects under {prefix} may be left: {e}");
    }
    result
}

/// The functional checks; prints a line each and returns whether all passed.
async fn check_operations(store: &dyn ObjectStore) -> bool {
    println!("\n{:<36} RESULT", "CHECK");
    let data = Bytes::from(
        (0..100_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let checks: Vec<(&str, Result<(), String>)> = vec![
        (
            "put an object",
            store
                .put("check/a", data.clone())
                .await
                .map_err(|e| e.to_string()),
        ),
        ("get it whole", {
            match store.get("check/a", None).await {
                Ok(b) if b == data => Ok(()),
                Ok(b) => Err(format!("got {} different bytes", b.len())),
                Err(e) => Err(e.to_string()),
            }
        }),
        ("get a range of it", {
            match store.get("check/a", Some(1000..1100)).await {
                Ok(b) if b[..] == data[1000..1100] => Ok(()),
                Ok(b) => Err(format!("got {} wrong bytes", b.len())),
                Err(e) => Err(e.to_string()),
            }
        }),
        ("get a missing object: not found", {
            match store.get("check/missing", None).await {
                Err(nectar_object::Error::NotFound(_)) => Ok(()),
                Ok(_) => Err("it returned data".into()),
                Err(e) => Err(format!("another error: {e}")),
            }
        }),
        ("head: size, and missing", {
            match (
                store.head("check/a").await,
                store.head("check/missing").await,
            ) {
                (Ok(Some(n)), Ok(None)) if n == data.len() as u64 => Ok(()),
                (a, b) => Err(format!("{a:?} / {b:?}")),
            }
        }),
        ("list in key order after a key", {
            let mut res = Ok(());
            for k in ["check/l/3", "check/l/1", "check/l/2"] {
                if let Err(e) = store.put(k, Bytes::from_static(b"x")).await {
                    res = Err(e.to_string());
                }
            }
            match (res, store.list("check/l/", Some("check/l/1"), 10).await) {
                (Ok(()), Ok(list)) => {
                    let keys: Vec<&str> = list.iter().map(|o| o.key.as_str()).collect();
                    if keys == ["check/l/2", "check/l/3"] {
                        Ok(())
                    } else {
                        Err(format!("listed {keys:?}"))
                    }
                }
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(e.to_string()),
            }
        }),
        ("delete, and delete a missing object", {
            let first = store.delete("check/a").await;
            let again = store.delete("check/a").await;
            match (first, again, store.head("check/a").await) {
                (Ok(()), Ok(()), Ok(None)) => Ok(()),
                (a, b, c) => Err(format!("{a:?} / {b:?} / head {c:?}")),
            }
        }),
    ];
    let mut all = true;
    for (name, res) in checks {
        match res {
            Ok(()) => println!("{name:<36} pass"),
            Err(e) => {
                all = false;
                println!("{name:<36} FAIL: {e}");
            }
        }
    }
    all
}

/// Runs `n` requests, `threads` at once; returns the wall time and the mean latency.
async fn timed<F, Fut>(n: usize, threads: usize, request: F) -> Result<(Duration, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = nectar_object::Result<()>>,
{
    let start = Instant::now();
    let latencies: Vec<nectar_object::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let req = request(i);
            async move {
                let t = Instant::now();
                req.await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(threads)
        .collect()
        .await;
    let mut total = Duration::ZERO;
    for l in latencies {
        total += l?;
    }
    Ok((start.elapsed(), total / n as u32))
}

fn verdict(mean: Duration, t: &Thresholds) -> String {
    let word = if mean <= t.good {
        "good"
    } else if mean <= t.fair {
        "fair"
    } else {
        "slow"
    };
    format!(
        "{word} (good <= {} ms, fair <= {} ms)",
        t.good.as_millis(),
        t.fair.as_millis()
    )
}

async fn measure(a: &ObjbenchArgs, store: &Arc<dyn ObjectStore>) -> Result<()> {
    let block = Bytes::from(vec![0x5au8; a.block_size << 10]);
    let small = Bytes::from(vec![0xa5u8; a.small_object_size << 10]);
    let t = a.threads;
    println!(
        "\n{:<28} {:>14} {:>12}  VERDICT ({t} at once)",
        "OPERATION", "SPEED", "MEAN"
    );
    let row = |name: String, speed: String, mean: Duration, limits: &Thresholds| {
        println!(
            "{name:<28} {speed:>14} {:>9.1} ms  {}",
            mean.as_secs_f64() * 1000.0,
            verdict(mean, limits)
        );
    };
    let mib = |n: usize, size: usize, wall: Duration| {
        format!(
            "{:.1} MiB/s",
            (n * size) as f64 / (1 << 20) as f64 / wall.as_secs_f64()
        )
    };
    let ops = |n: usize, wall: Duration| format!("{:.0} op/s", n as f64 / wall.as_secs_f64());
    let name = |what: &str, size: usize| format!("{what} {size} KiB objects");

    let (wall, mean) = timed(a.blocks, t, |i| {
        let (key, data) = (format!("block/{i}"), block.clone());
        async move { store.put(&key, data).await }
    })
    .await
    .context("putting blocks")?;
    row(
        name("put", a.block_size),
        mib(a.blocks, block.len(), wall),
        mean,
        &BLOCK_LIMITS,
    );
    let (wall, mean) = timed(a.blocks, t, |i| async move {
        store.get(&format!("block/{i}"), None).await.map(drop)
    })
    .await
    .context("getting blocks")?;
    row(
        name("get", a.block_size),
        mib(a.blocks, block.len(), wall),
        mean,
        &BLOCK_LIMITS,
    );

    let n = a.small_objects;
    let (wall, mean) = timed(n, t, |i| {
        let (key, data) = (format!("small/{i:06}"), small.clone());
        async move { store.put(&key, data).await }
    })
    .await
    .context("putting small objects")?;
    row(
        name("put", a.small_object_size),
        ops(n, wall),
        mean,
        &SMALL_LIMITS,
    );
    let (wall, mean) = timed(n, t, |i| async move {
        store.get(&format!("small/{i:06}"), None).await.map(drop)
    })
    .await
    .context("getting small objects")?;
    row(
        name("get", a.small_object_size),
        ops(n, wall),
        mean,
        &SMALL_LIMITS,
    );
    let (wall, mean) = timed(n, t, |i| async move {
        store.head(&format!("small/{i:06}")).await.map(drop)
    })
    .await
    .context("heading small objects")?;
    row("head objects".into(), ops(n, wall), mean, &SMALL_LIMITS);
    let pages = 10;
    let (wall, mean) = timed(pages, t, |_| async {
        store.list("small/", None, 1000).await.map(drop)
    })
    .await
    .context("listing")?;
    row(
        format!("list (pages of {n})"),
        ops(pages, wall),
        mean,
        &BLOCK_LIMITS,
    );
    let (wall, mean) = timed(n, t, |i| {
        let key = format!("small/{i:06}");
        async move { store.delete(&key).await }
    })
    .await
    .context("deleting small objects")?;
    row("delete objects".into(), ops(n, wall), mean, &SMALL_LIMITS);
    Ok(())
}

/// Deletes every object under the bench's prefix.
async fn remove_all(store: &dyn ObjectStore) -> nectar_object::Result<()> {
    loop {
        let page = store.list("", None, 1000).await?;
        if page.is_empty() {
            return Ok(());
        }
        for o in page {
            store.delete(&o.key).await?;
        }
    }
}
