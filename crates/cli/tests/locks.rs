//! flock and fcntl locks between two mounts of one volume: the mounts must contend like
//! two processes on one machine. Lock holders are separate processes (this test binary
//! run again in "holder" mode), because POSIX locks belong to processes and because a
//! holder must be killable.

mod common;

use common::*;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOLDER_ENV: &str = "NECTAR_LOCK_HOLDER";

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// flock(2) on `f`; Err(errno) on failure.
fn flock(f: &File, op: i32) -> Result<(), i32> {
    // SAFETY: flock on a descriptor we own.
    match unsafe { libc::flock(f.as_raw_fd(), op) } {
        0 => Ok(()),
        _ => Err(errno()),
    }
}

fn flock_struct(typ: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: libc::flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl(F_SETLK or F_SETLKW) over `[start, start+len)`.
fn setlk(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> Result<(), i32> {
    let fl = flock_struct(typ, start, len);
    // SAFETY: fcntl with a valid flock struct.
    match unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) } {
        0 => Ok(()),
        _ => Err(errno()),
    }
}

/// fcntl(F_GETLK): the blocking lock as (type, start, len, pid).
fn getlk(f: &File, typ: i32, start: i64, len: i64) -> (i32, i64, i64, i32) {
    let mut fl = flock_struct(typ, start, len);
    // SAFETY: fcntl with a valid flock struct.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) },
        0
    );
    (fl.l_type as i32, fl.l_start, fl.l_len, fl.l_pid)
}

/// A lock-holding process on one mount.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: BufReader<ChildStdout>,
}

impl Holder {
    /// Starts a holder doing `spec` (see `lock_holder_process`) and waits for its first
    /// report line.
    fn start(spec: &str) -> (Holder, String) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_holder_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        let mut h = Holder {
            child,
            stdin,
            lines,
        };
        let first = h.report();
        (h, first)
    }

    /// The next line starting with "REPORT ", without the prefix.
    fn report(&mut self) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.lines.read_line(&mut line).unwrap() > 0,
                "lock holder exited without a report"
            );
            // libtest may print "test lock_holder_process ... " on the same line.
            if let Some((_, r)) = line.trim_end().split_once("REPORT ") {
                return r.to_string();
            }
        }
    }

    fn tell(&mut self, what: &str) {
        writeln!(self.stdin, "{what}").unwrap();
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Not a test of its own: the body of a holder process (does nothing unless
/// NECTAR_LOCK_HOLDER is set). Specs: `flock-ex PATH`, `flock-sh PATH`,
/// `posix-wr PATH START LEN`, `posix-two-fds PATH START LEN` (locks through one
/// descriptor, closes another one on "close"), and `wait-alarm flock|posix PATH` (a
/// blocking request interrupted by a signal after 1 s; reports the errno and the time).
#[test]
fn lock_holder_process() {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let args: Vec<&str> = spec.split(' ').collect();
    let report = |s: &str| {
        println!("REPORT {s}");
        std::io::stdout().flush().unwrap();
    };
    let num = |i: usize| args[i].parse::<i64>().unwrap();
    let park = || loop {
        std::thread::sleep(Duration::from_secs(60));
    };
    match args[0] {
        "flock-ex" | "flock-sh" => {
            let f = open_rw(Path::new(args[1]));
            let op = if args[0] == "flock-ex" {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            flock(&f, op).unwrap();
            report("locked");
            park();
        }
        "posix-wr" => {
            let f = open_rw(Path::new(args[1]));
            setlk(&f, libc::F_SETLKW, libc::F_WRLCK, num(2), num(3)).unwrap();
            report("locked");
            park();
        }
        "posix-two-fds" => {
            let f = open_rw(Path::new(args[1]));
            let other = open_rw(Path::new(args[1]));
            setlk(&f, libc::F_SETLKW, libc::F_WRLCK, num(2), num(3)).unwrap();
            report("locked");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            drop(other);
            report("closed");
            park();
        }
        "wait-alarm" => {
            // SAFETY: installs a handler that does nothing, without SA_RESTART, so the
            // blocked call returns EINTR instead of being restarted.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_alarm as *const () as usize;
                sa.sa_flags = 0;
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
            }
            // The signal must hit this thread (the one that blocks), not whichever thread
            // of the test harness the kernel would pick for a process-wide alarm.
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() } as usize;
            // Opened first: an open that is slow over FUSE must not take the signal.
            let f = open_rw(Path::new(args[2]));
            // Every second until the call returns, so a signal that lands just before
            // the call blocks (a slow machine) is followed by one that interrupts it.
            let done = Arc::new(AtomicBool::new(false));
            let alarm = {
                let done = done.clone();
                std::thread::spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(1));
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    // SAFETY: the waiting thread outlives this thread: it sets `done` and
                    // joins it before it goes on.
                    unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGALRM) };
                })
            };
            let started = Instant::now();
            let res = if args[1] == "flock" {
                flock(&f, libc::LOCK_EX)
            } else {
                setlk(&f, libc::F_SETLKW, libc::F_WRLCK, 0, 0)
            };
            done.store(true, Ordering::SeqCst);
            alarm.join().unwrap();
            let errno = res.err().unwrap_or(0);
            report(&format!("{errno} {}", started.elapsed().as_millis()));
        }
        other => panic!("unknown holder spec {other}"),
    }
}

/// Runs `f` on a thread and returns how long it took from now, so a thread that starts
/// late still counts the time the caller waited.
fn timed(f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<Duration> {
    let t = Instant::now();
    std::thread::spawn(move || {
        f();
        t.elapsed()
    })
}

#[test]
fn flock_between_mounts() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    std::fs::write(a.path("f"), b"x").unwrap();
    let (fa, fb) = (a.path("f"), b.path("f"));

    // An exclusive flock through mount a blocks every flock through mount b.
    let (holder, r) = Holder::start(&format!("flock-ex {}", fa.display()));
    assert_eq!(r, "locked");
    let mine = open_rw(&fb);
    assert_eq!(
        flock(&mine, libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    assert_eq!(
        flock(&mine, libc::LOCK_SH | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );

    // A blocking flock waits until the holder dies, then gets the lock.
    let path = fb.clone();
    let waiter = timed(move || {
        let f = open_rw(&path);
        flock(&f, libc::LOCK_EX).unwrap();
        flock(&f, libc::LOCK_UN).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!waiter.is_finished(), "the waiter did not wait");
    holder.kill();
    let waited = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Shared locks coexist across mounts and keep exclusive ones out.
    let (holder, r) = Holder::start(&format!("flock-sh {}", fa.display()));
    assert_eq!(r, "locked");
    flock(&mine, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    let other = open_rw(&fb);
    assert_eq!(
        flock(&other, libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    drop(holder);
    drop(mine); // closing the last descriptor releases our shared lock
                // The kernel sends the release of a closed file asynchronously (FUSE_RELEASE with
                // FLOCK_UNLOCK), so the lock is free shortly after close returns, not at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Err(e) = flock(&other, libc::LOCK_EX | libc::LOCK_NB) {
        assert_eq!(e, libc::EWOULDBLOCK);
        assert!(Instant::now() < deadline, "flocks not released after close");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A blocked flock is interrupted by a signal (EINTR), not stuck.
    let (waiter, r) = Holder::start(&format!("wait-alarm flock {}", fa.display()));
    let (errno, ms) = r.split_once(' ').unwrap();
    assert_eq!(errno.parse::<i32>().unwrap(), libc::EINTR, "{r}");
    assert!(ms.parse::<u64>().unwrap() < 5000, "{r}");
    // Gone before the unmount: its open file would keep mount a busy.
    waiter.kill();
    drop(other);
    a.unmount();
    b.unmount();
}

#[test]
fn fcntl_locks_between_mounts() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    std::fs::write(a.path("f"), vec![0u8; 4096]).unwrap();
    let (fa, fb) = (a.path("f"), b.path("f"));

    let (holder, r) = Holder::start(&format!("posix-wr {} 0 100", fa.display()));
    assert_eq!(r, "locked");
    let mine = open_rw(&fb);
    // Overlapping ranges conflict, disjoint ones do not.
    assert_eq!(
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 50, 10),
        Err(libc::EAGAIN)
    );
    assert_eq!(
        setlk(&mine, libc::F_SETLK, libc::F_RDLCK, 99, 1),
        Err(libc::EAGAIN)
    );
    setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 100, 100).unwrap();
    // F_GETLK through the other mount names the holder, its range and its pid.
    assert_eq!(
        getlk(&mine, libc::F_RDLCK, 0, 10),
        (libc::F_WRLCK, 0, 100, holder.pid())
    );
    assert_eq!(getlk(&mine, libc::F_WRLCK, 200, 10).0, libc::F_UNLCK);

    // F_SETLKW waits for the holder to die.
    let path = fb.clone();
    let waiter = timed(move || {
        let f = open_rw(&path);
        setlk(&f, libc::F_SETLKW, libc::F_WRLCK, 0, 50).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!waiter.is_finished(), "F_SETLKW did not wait");
    holder.kill();
    let waited = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // The waiter's close dropped every lock of this process on the file (POSIX), the
    // range [100, 200) too. Take it again: it blocks a whole-file F_SETLKW of another
    // process until a signal interrupts that.
    assert_eq!(getlk(&mine, libc::F_WRLCK, 0, 0).0, libc::F_UNLCK);
    setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 100, 100).unwrap();
    let (waiter, r) = Holder::start(&format!("wait-alarm posix {}", fa.display()));
    let errno = r.split_once(' ').unwrap().0.parse::<i32>().unwrap();
    assert_eq!(errno, libc::EINTR, "{r}");
    waiter.kill();

    // Closing any descriptor of the file drops all of the process's locks (POSIX).
    setlk(&mine, libc::F_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    let (mut holder, r) = Holder::start(&format!("posix-two-fds {} 10 10", fa.display()));
    assert_eq!(r, "locked");
    assert_eq!(
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 0),
        Err(libc::EAGAIN)
    );
    holder.tell("close");
    assert_eq!(holder.report(), "closed");
    setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    holder.kill();
    drop(mine);
    a.unmount();
    b.unmount();
}

#[test]
fn locks_of_a_killed_client_are_released_when_its_session_expires() {
    require_fuse!();
    let vol = Volume::new(&[]);
    // Heartbeats of 1 s: a silent session is dead after 5 s, and is cleaned within 5 s.
    let mut a = vol.mount("a", &["--heartbeat", "1"]);
    let b = vol.mount("b", &["--heartbeat", "1"]);
    std::fs::write(a.path("f"), b"x").unwrap();
    let (flock_holder, r) = Holder::start(&format!("flock-ex {}", a.path("f").display()));
    assert_eq!(r, "locked");
    let (posix_holder, r) = Holder::start(&format!("posix-wr {} 0 100", a.path("f").display()));
    assert_eq!(r, "locked");

    // The client dies with its locks; its processes never get to release them.
    a.child.as_mut().unwrap().kill().unwrap();
    a.child.as_mut().unwrap().wait().unwrap();
    let mine = open_rw(&b.path("f"));
    assert_eq!(
        flock(&mine, libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK),
        "the dead client's flock went before its session expired"
    );
    assert_eq!(
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 10),
        Err(libc::EAGAIN)
    );
    // Blocking requests through the surviving mount succeed once b cleans the session.
    let started = Instant::now();
    flock(&mine, libc::LOCK_EX).unwrap();
    setlk(&mine, libc::F_SETLKW, libc::F_WRLCK, 0, 10).unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    eprintln!("dead client's locks released after {waited:?}");
    drop(mine);
    flock_holder.kill();
    posix_holder.kill();
    if is_mounted(&a.mp) {
        nectar_ok(&["umount", "--force", a.mp.to_str().unwrap()]);
    }
    drop(a);
    b.unmount();
}
