//! Connections used by the thread that runs the transaction: a blocking pool shared by
//! the engines whose clients would otherwise hand every round trip to another thread.
//!
//! Design. A transaction runs on the thread that asked for it, never on an async task
//! (see docs/ARCHITECTURE.md), so it should talk to the server itself: a round trip is
//! one write and one read on its own socket. A connection driven by an async runtime's
//! worker threads adds, to every round trip, a hand-off to the thread that drives the
//! socket and a wake-up back, which cost more client CPU than the rest of a create
//! (Redis and etcd both measured so). The pool keeps at most `max` connections; a
//! thread that finds none idle while the pool is full waits for one (up to
//! [`POOL_WAIT`]).
//!
//! A connection leaves the pool without a check (a ping per transaction would double
//! the round trips of a lookup). Instead, a connection a transaction damaged is
//! [`Conn::discard`]ed rather than returned, and one the server closed fails its next
//! request, after which the engine retries on fresh connections.

use parking_lot::{Condvar, Mutex};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

/// How long a transaction waits for a free connection.
pub(crate) const POOL_WAIT: Duration = Duration::from_secs(20);

/// Makes the connections of a [`Pool`].
pub(crate) trait Connect {
    type Conn;
    type Error;
    fn connect(&self) -> Result<Self::Conn, Self::Error>;
}

/// Why no connection was handed out.
#[derive(Debug)]
pub(crate) enum PoolError<E> {
    /// Every connection stayed busy for [`POOL_WAIT`].
    Timeout,
    /// The pool was closed (its server was left).
    Closed,
    /// A new connection failed.
    Connect(E),
}

struct State<T> {
    idle: Vec<T>,
    /// Connections handed out or idle.
    open: usize,
    closed: bool,
}

pub(crate) struct Pool<C: Connect> {
    connector: C,
    max: usize,
    state: Mutex<State<C::Conn>>,
    freed: Condvar,
}

impl<C: Connect> Pool<C> {
    pub fn new(connector: C, max: usize) -> Self {
        Pool {
            connector,
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                closed: false,
            }),
            freed: Condvar::new(),
        }
    }

    /// An idle connection, or a new one while the pool is not full.
    pub fn get(&self) -> Result<Conn<'_, C>, PoolError<C::Error>> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(PoolError::Closed);
            }
            if let Some(conn) = state.idle.pop() {
                return Ok(Conn {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connector.connect() {
                    Ok(conn) => Ok(Conn {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.release(None);
                        Err(PoolError::Connect(e))
                    }
                };
            }
            if self.freed.wait_until(&mut state, deadline).timed_out() {
                return Err(PoolError::Timeout);
            }
        }
    }

    /// Takes back a connection (`None`: one that was dropped).
    fn release(&self, conn: Option<C::Conn>) {
        let mut state = self.state.lock();
        match conn {
            Some(c) if !state.closed => state.idle.push(c),
            _ => state.open -= 1,
        }
        drop(state);
        self.freed.notify_one();
    }

    /// Drops the idle connections and refuses to hand out more; those in use are
    /// dropped when they come back.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.drop_idle();
    }

    /// Drops the idle connections (new ones are made as needed).
    pub fn drop_idle(&self) {
        let mut state = self.state.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        drop(state);
        // Outside the lock: dropping a connection may take a while.
        drop(idle);
        self.freed.notify_all();
    }
}

/// A connection taken from the pool; it goes back when dropped.
pub(crate) struct Conn<'p, C: Connect> {
    pool: &'p Pool<C>,
    conn: Option<C::Conn>,
}

impl<C: Connect> Conn<'_, C> {
    /// Drops the connection instead of returning it: it may be out of step (a late reply
    /// must never reach the next transaction) or dead.
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl<C: Connect> Deref for Conn<'_, C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl<C: Connect> DerefMut for Conn<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl<C: Connect> Drop for Conn<'_, C> {
    fn drop(&mut self) {
        self.pool.release(self.conn.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Numbered connections; refuses the `fail`-th.
    struct Counter {
        made: AtomicUsize,
        fail: usize,
    }

    impl Connect for Counter {
        type Conn = usize;
        type Error = &'static str;
        fn connect(&self) -> Result<usize, &'static str> {
            let n = self.made.fetch_add(1, Ordering::Relaxed);
            if n == self.fail {
                return Err("refused");
            }
            Ok(n)
        }
    }

    fn pool(max: usize, fail: usize) -> Pool<Counter> {
        Pool::new(
            Counter {
                made: AtomicUsize::new(0),
                fail,
            },
            max,
        )
    }

    #[test]
    fn connections_are_reused_discarded_and_bounded() {
        let p = pool(2, usize::MAX);
        let a = p.get().unwrap();
        assert_eq!(*a, 0);
        drop(a);
        let a = p.get().unwrap();
        assert_eq!(*a, 0, "an idle connection is reused");
        let b = p.get().unwrap();
        assert_eq!(*b, 1);
        a.discard();
        let c = p.get().unwrap();
        assert_eq!(*c, 2, "a discarded connection is replaced");
        // Full: a third caller waits until one comes back.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| *p.get().unwrap());
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
            assert_eq!(waiter.join().unwrap(), 1);
        });
        drop(c);
        p.drop_idle();
        assert_eq!(*p.get().unwrap(), 3, "idle connections were dropped");
        p.close();
        assert!(matches!(p.get(), Err(PoolError::Closed)));
    }

    #[test]
    fn a_failed_connect_frees_its_place() {
        let p = pool(1, 0);
        assert!(matches!(p.get(), Err(PoolError::Connect("refused"))));
        assert_eq!(*p.get().unwrap(), 1);
    }
}
