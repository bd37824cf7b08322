//! Encrypted volumes (`--encrypt-rsa-key`, JuiceFS's format): files read back through a
//! mount while the bucket holds only ciphertext; a key behind a passphrase needs it; a
//! changed block fails its read (EIO), never returns wrong bytes; the key never shows
//! in `status` or a dump, and a volume loaded from such a dump mounts once `config`
//! puts the key back; the metadata backup in the bucket is encrypted and loads with
//! `load --encrypt-rsa-key`.
//!
//! Keys come from `openssl genrsa`, in the legacy PEM encryption JuiceFS writes
//! (`-traditional -aes256`) and in PKCS#8 (OpenSSL 3's default).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "correct horse";

fn rsa_key(dir: &Path, name: &str, traditional: bool) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("openssl");
    cmd.arg("genrsa");
    if traditional {
        cmd.arg("-traditional");
    }
    let out = cmd
        .args(["-aes256", "-passout", &format!("pass:{PASSPHRASE}"), "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .expect("openssl (scripts/install-deps.sh --test installs it)");
    assert!(out.status.success(), "{out:?}");
    path
}

fn with_passphrase(args: &[&str], pass: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("JFS_RSA_PASSPHRASE");
    match pass {
        Some(p) => cmd.env("NECTAR_RSA_PASSPHRASE", p),
        None => cmd.env_remove("NECTAR_RSA_PASSPHRASE"),
    };
    cmd.output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn blocks(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/chunks/"))
        .collect()
}

#[test]
fn an_encrypted_volume_reads_back_and_keeps_its_key_secret() {
    require_fuse!();
    // The mounts started below read the passphrase from this process's environment.
    std::env::set_var("NECTAR_RSA_PASSPHRASE", PASSPHRASE);
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key(dir.path(), "key.pem", true);
    let url = format!("sqlite3://{}/meta.db", dir.path().display());
    let bucket = dir.path().join("data");
    let format = |pass: Option<&str>| {
        with_passphrase(
            &[
                "format",
                &url,
                "secretvol",
                "--bucket",
                bucket.to_str().unwrap(),
                "--encrypt-rsa-key",
                key.to_str().unwrap(),
                "--encrypt-algo",
                "chacha20-rsa",
            ],
            pass,
        )
    };
    let out = format(None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("NECTAR_RSA_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    let out = format(Some("wrong"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("passphrase is wrong"),
        "{}",
        stderr(&out)
    );
    let out = format(Some(PASSPHRASE));
    assert!(out.status.success(), "{}", stderr(&out));

    let mut big = vec![0u8; 9 << 20];
    Pattern::new(3).fill(&mut big);
    let marker = b"nectar plain text marker ".repeat(100);
    let m = Mount::start(&url, &dir.path().join("mnt"), &["--backup-meta", "1s"]);
    fs::write(m.path("big"), &big).unwrap();
    fs::write(m.path("small"), &marker).unwrap();
    assert!(fs::read(m.path("big")).unwrap() == big);
    // A backup of the metadata lands in the bucket, encrypted too (one taken after the
    // writes: its mtime is later).
    let written = std::time::SystemTime::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let backup = loop {
        let meta_dir = bucket.join("secretvol/meta");
        let found = if meta_dir.exists() {
            files_under(&meta_dir)
        } else {
            Vec::new()
        };
        let after = found.into_iter().find(|p| {
            p.to_string_lossy().ends_with(".json.gz")
                && fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > written)
        });
        if let Some(p) = after {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no metadata backup in the bucket"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    m.unmount();

    // The bucket holds ciphertext: JuiceFS's header, no plain text anywhere.
    let stored = blocks(&bucket);
    assert!(stored.len() >= 4, "{stored:?}");
    for p in &stored {
        let b = fs::read(p).unwrap();
        assert_eq!(
            &b[..3],
            &[1, 0, 12],
            "{}: wrapped key of 256 bytes, 12-byte nonce",
            p.display()
        );
        assert!(
            !b.windows(25).any(|w| w == &marker[..25]),
            "{}",
            p.display()
        );
    }
    let small_block = stored
        .iter()
        .find(|p| fs::metadata(p).unwrap().len() == (marker.len() + 3 + 256 + 12 + 16) as u64)
        .expect("the small file's block, its size the plain size plus the overhead");
    // The key never shows.
    let status = String::from_utf8_lossy(&nectar_ok(&["status", &url]).stdout).into_owned();
    assert!(
        !status.contains("BEGIN") && status.contains("\"EncryptKey\": \"removed\""),
        "{status}"
    );

    // A wrong passphrase refuses the mount with a message saying so.
    let out = with_passphrase(
        &["mount", &url, dir.path().join("mnt").to_str().unwrap()],
        Some("nope"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("passphrase is wrong"),
        "{}",
        stderr(&out)
    );

    // A changed block fails its read; the other file still reads.
    let mut b = fs::read(small_block).unwrap();
    let at = b.len() - 30;
    b[at] ^= 0x55;
    fs::write(small_block, &b).unwrap();
    let m = Mount::start(&url, &dir.path().join("mnt2"), &[]);
    let err = fs::read(m.path("small")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(fs::read(m.path("big")).unwrap() == big);
    m.unmount();

    // A dump leaves the key out; the loaded volume mounts once the key is back.
    let dump = dir.path().join("dump.json");
    nectar_ok(&["dump", &url, dump.to_str().unwrap()]);
    let text = fs::read_to_string(&dump).unwrap();
    assert!(!text.contains("BEGIN") && text.contains("\"EncryptKey\":\"removed\""));
    let url2 = format!("sqlite3://{}/meta2.db", dir.path().display());
    nectar_ok(&["load", &url2, dump.to_str().unwrap()]);
    fs::create_dir_all(dir.path().join("mnt3")).unwrap();
    let out = nectar(&["mount", &url2, dir.path().join("mnt3").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nectar config META-URL --encrypt-rsa-key"),
        "{}",
        stderr(&out)
    );
    let other = rsa_key(dir.path(), "other.pem", false);
    let out = nectar(&[
        "config",
        &url2,
        "--encrypt-rsa-key",
        other.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "another key does not open the volume's objects"
    );
    nectar_ok(&["config", &url2, "--encrypt-rsa-key", key.to_str().unwrap()]);
    let m = Mount::start(&url2, &dir.path().join("mnt3"), &[]);
    assert!(fs::read(m.path("big")).unwrap() == big);
    m.unmount();

    // The encrypted backup: only `load --encrypt-rsa-key` reads it.
    let url3 = format!("sqlite3://{}/meta3.db", dir.path().display());
    let out = nectar(&["load", &url3, backup.to_str().unwrap()]);
    assert!(!out.status.success(), "an encrypted backup is not gzip");
    nectar_ok(&[
        "load",
        &url3,
        backup.to_str().unwrap(),
        "--encrypt-rsa-key",
        key.to_str().unwrap(),
        "--encrypt-algo",
        "chacha20-rsa",
    ]);
    nectar_ok(&["config", &url3, "--encrypt-rsa-key", key.to_str().unwrap()]);
    let m = Mount::start(&url3, &dir.path().join("mnt4"), &[]);
    assert!(fs::read(m.path("big")).unwrap() == big);
    m.unmount();
}
