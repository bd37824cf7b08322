//! POSIX ACLs through a real mount, driven by Debian's `setfacl`/`getfacl`: one session
//! of ACL operations must read the same on Nectar as on a local file system, reach a
//! second mount of the volume, survive a remount, and be refused on a volume formatted
//! without `--enable-acl`.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Returns early (saying why) when the ACL tools are missing; in CI they must be there.
macro_rules! require_acl_tools {
    () => {
        if let Some(tool) = ["setfacl", "getfacl", "getfattr", "setpriv"]
            .into_iter()
            .find(|t| Command::new(t).arg("--version").output().is_err())
        {
            let why = format!("{tool} is not installed (apt-get install acl attr util-linux)");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but {why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap()
}

fn getfacl(path: &Path) -> String {
    let out = run("getfacl", &["-n", "-p", path.to_str().unwrap()]);
    assert!(out.status.success(), "getfacl {path:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn setfacl(args: &[&str]) {
    let out = run("setfacl", args);
    assert!(out.status.success(), "setfacl {args:?}: {out:?}");
}

fn transcript(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/acl-transcript.sh");
    let out = Command::new("bash").arg(script).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A directory of a local file system with ACLs (tmpfs, as Debian's kernel builds it),
/// if this machine has one.
fn local_acl_dir() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir_in("/dev/shm").ok()?;
    let probe = dir.path().join("probe");
    fs::write(&probe, b"").ok()?;
    let ok = run("setfacl", &["-m", "u:1:r", probe.to_str()?])
        .status
        .success();
    fs::remove_file(&probe).ok()?;
    // The transcript runs as other users in here.
    run("chmod", &["755", dir.path().to_str()?]);
    ok.then_some(dir)
}

#[test]
fn acl_session_reads_as_on_a_local_file_system() {
    require_fuse!();
    require_acl_tools!();
    let vol = Volume::new(&["--enable-acl"]);
    let m = vol.mount("mnt", &[]);
    fs::set_permissions(&m.mp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ours = transcript(&m.mp);
    // What must hold whatever the reference says.
    for want in [
        "user:1234:rw-\ngroup::r--\nmask::rw-\n",
        "1234 writes",
        "1234 denied after chmod",
        // Inherited, masked by the mode asked for (0666), the umask (022) ignored.
        "# file: d/x\n# owner: 0\n# group: 0\nuser::rw-\nuser:1234:rwx\t#effective:rw-\n",
        "d/y -rw-rw-r--",
        "d/z drwxrwxr-x",
        // No default ACL: the umask (077) applies.
        "plain -rw-------",
        "plaindir drwx------",
        "Only directories can have default ACLs",
        "f: Operation not permitted",
        "\ng/in\n",
        "stat: cannot statx 'g/in': Permission denied",
    ] {
        assert!(
            ours.contains(want),
            "the ACL session on Nectar lacks {want:?}:\n{ours}\n{}",
            m.log_text()
        );
    }
    match local_acl_dir() {
        Some(local) => {
            let reference = transcript(local.path());
            assert_eq!(
                ours, reference,
                "the ACL session differs between Nectar (left) and tmpfs (right)"
            );
        }
        None => eprintln!(
            "no local file system with ACLs in /dev/shm: compared with the expected lines only"
        ),
    }
    m.unmount();
}

/// Waits until `f` holds, for at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn acls_reach_another_mount_and_survive_a_remount() {
    require_fuse!();
    require_acl_tools!();
    let vol = Volume::new(&["--enable-acl"]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    for m in [&a, &b] {
        fs::set_permissions(&m.mp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    fs::write(a.path("secret"), b"for 1234 only\n").unwrap();
    fs::set_permissions(
        a.path("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    setfacl(&["-m", "u:1234:r", a.path("secret").to_str().unwrap()]);
    let on_b = b.path("secret");
    let read_on_b = |uid| as_user(uid, &format!("cat {}", on_b.display()));
    let out = read_on_b(1234);
    assert!(
        out.status.success() && out.stdout == b"for 1234 only\n",
        "the named user cannot read through the other mount: {out:?}"
    );
    assert!(!read_on_b(1235).status.success(), "a stranger reads");
    assert!(getfacl(&on_b).contains("user:1234:r--"));

    // Removed on one mount: the other stops granting once its caches expire.
    setfacl(&["-b", a.path("secret").to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(10), || !read_on_b(1234)
            .status
            .success()),
        "the other mount still grants a removed ACL after 10 s"
    );

    // A default ACL set through one mount governs what the other creates.
    fs::create_dir(a.path("team")).unwrap();
    setfacl(&["-d", "-m", "g:4321:rwx", a.path("team").to_str().unwrap()]);
    fs::write(b.path("team/report"), b"r").unwrap();
    let acl = getfacl(&b.path("team/report"));
    assert!(acl.contains("group:4321:rwx\t#effective:rw-"), "{acl}");

    a.unmount();
    b.unmount();
    let again = vol.mount("again", &[]);
    let acl = getfacl(&again.path("team/report"));
    assert!(
        acl.contains("group:4321:rwx\t#effective:rw-"),
        "after a remount: {acl}"
    );
    let acl = getfacl(&again.path("team"));
    assert!(
        acl.contains("default:group:4321:rwx"),
        "after a remount: {acl}"
    );
    again.unmount();
}

#[test]
fn a_volume_without_acls_refuses_them_until_enabled() {
    require_fuse!();
    require_acl_tools!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    fs::write(m.path("f"), b"").unwrap();
    let f = m.path("f");
    let out = run("setfacl", &["-m", "u:1234:r", f.to_str().unwrap()]);
    assert!(!out.status.success(), "setfacl succeeded without ACLs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not supported"),
        "{out:?}"
    );
    // getfacl still shows the mode as an ACL, as on any file system.
    assert!(getfacl(&f).contains("user::rw-"));
    m.unmount();

    let bucket = vol.path("data");
    let update = |extra: &[&str]| {
        let mut args = vec![
            "format",
            &vol.meta_url,
            "testvol",
            "--bucket",
            bucket.to_str().unwrap(),
            "--force",
        ];
        args.extend_from_slice(extra);
        String::from_utf8(nectar_ok(&args).stderr).unwrap()
    };
    assert!(update(&["--enable-acl"]).contains("\"EnableACL\": true"));
    // Once on, ACLs stay on: attributes already refer to rules.
    assert!(update(&[]).contains("\"EnableACL\": true"));
    let m = vol.mount("mnt", &[]);
    setfacl(&["-m", "u:1234:r", m.path("f").to_str().unwrap()]);
    assert!(getfacl(&m.path("f")).contains("user:1234:r--"));
    m.unmount();
}
