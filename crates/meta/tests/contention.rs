//! Many writers in one directory: several clients (each its own `Meta` with a session,
//! as separate mounts are) create files in one directory at once, on SQLite and on each
//! server `NECTAR_TEST_META_URLS` names. Every file must be there, and the clients must not
//! serialise on the directory's attribute: attempts per create (a conflict makes a
//! transaction run again) are reported and bounded.

mod common;
use common::new_format;
use nectar_kv::counting::Counting;
use nectar_meta::kv::open_engine;
use nectar_meta::meta::MetaConfig;
use nectar_meta::*;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const FILES: usize = 300;

/// Runs the writers with the directory's mtime written on every try, then as a mount
/// does by default (skipped after conflicts), and reports both.
fn many_writers_in_one_directory(url: &str) {
    for skip in [Duration::ZERO, MetaConfig::default().skip_dir_mtime] {
        writers(url, skip);
    }
}

fn writers(url: &str, skip_dir_mtime: Duration) {
    let first = Meta::connect(url).unwrap();
    first.kv().reset().unwrap();
    first.format(new_format("busy"), false).unwrap();
    let dir = first
        .mknod(
            &Ctx::root(),
            ROOT_INODE,
            b"d",
            FileType::Directory,
            0o777,
            0,
            0,
            b"",
        )
        .unwrap()
        .0;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let engine = Counting::new(open_engine(url, &keys::LAYOUT).unwrap());
            let counts = engine.counts();
            let cfg = MetaConfig {
                skip_dir_mtime,
                ..Default::default()
            };
            let m = Meta::with_engine(Box::new(engine), url, cfg);
            m.load().unwrap();
            m.new_session(&SessionInfo::default()).unwrap();
            counts.take();
            (m, counts)
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, (m, _))| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..FILES {
                    let name = format!("c{c}-{i}");
                    m.mknod(
                        &Ctx::root(),
                        dir,
                        name.as_bytes(),
                        FileType::File,
                        0o644,
                        0,
                        0,
                        b"",
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let attempts: u64 = clients.iter().map(|(_, c)| c.take().attempts).sum();
    let creates = (CLIENTS * FILES) as u64;
    let per_create = attempts as f64 / creates as f64;
    eprintln!(
        "{}, skip-dir-mtime {skip_dir_mtime:?}: {CLIENTS} clients, {creates} creates in one \
         directory in {secs:.2} s ({:.0}/s), {per_create:.2} attempts per create",
        redact_url(url),
        creates as f64 / secs
    );
    // A conflict makes a create run again; writers colliding on one hot key would run
    // each create several times.
    assert!(per_create < 3.0, "{per_create:.2} attempts per create");
    for (m, _) in &clients {
        m.close_session().unwrap();
    }
    let listed = first
        .readdir(&Ctx::root(), dir, None, 100_000, false)
        .unwrap()
        .len();
    assert_eq!(listed as u64, creates);
    assert_eq!(first.counter("totalInodes").unwrap(), creates as i64 + 2);
}

#[test]
fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    many_writers_in_one_directory(&format!("sqlite3://{}/meta.db", d.path().display()));
}

/// The servers, each in a key space of its own.
macro_rules! on_servers {
    ($($engine:ident),*) => {
        $(#[test]
        fn $engine() {
            if let Some(url) = common::server_url(stringify!($engine), "contention") {
                many_writers_in_one_directory(&url);
            }
        })*
    };
}

on_servers!(redis, postgres, mysql, etcd, tikv);
