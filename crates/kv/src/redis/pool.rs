//! The engine's connections to the volume's master: blocking sockets, used by the
//! thread that runs the transaction.
//!
//! Design. A transaction runs on the thread that asked for it, never on an async task
//! (see docs/ARCHITECTURE.md), so it talks to Redis itself: a round trip is one write
//! and one read on its own socket. An async connection would add, to every round trip,
//! a hand-off to the runtime thread that drives the socket and a wake-up back, which
//! cost more client CPU than the rest of a create. A pool keeps at most `pool-size`
//! connections; a thread that finds none idle while the pool is full waits for one
//! (up to [`POOL_WAIT`]).
//!
//! A connection leaves the pool without a check (a PING per transaction would double
//! the round trips of a lookup). Instead, a connection a transaction damaged is
//! [`Conn::discard`]ed rather than returned, and one the server closed fails its next
//! command, after which the engine retries on fresh connections.

use parking_lot::{Condvar, Mutex};
use redis::{Client, Connection, ConnectionInfo, RedisResult};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

/// Deadline of establishing one connection (TCP, TLS, AUTH, SELECT).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one command or pipeline: long enough for a big `MULTI` on a busy server,
/// short enough that a hung server becomes a retried temporary error.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transaction waits for a free connection.
pub(super) const POOL_WAIT: Duration = Duration::from_secs(20);

/// Why no connection was handed out.
#[derive(Debug)]
pub(super) enum PoolError {
    /// Every connection stayed busy for [`POOL_WAIT`].
    Timeout,
    /// The pool was closed (its master was left).
    Closed,
    /// A new connection failed.
    Connect(redis::RedisError),
}

struct State {
    idle: Vec<Connection>,
    /// Connections handed out or idle.
    open: usize,
    closed: bool,
}

pub(super) struct Pool {
    client: Client,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl Pool {
    pub fn new(info: ConnectionInfo, max: usize) -> RedisResult<Pool> {
        Ok(Pool {
            client: Client::open(info)?,
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                closed: false,
            }),
            freed: Condvar::new(),
        })
    }

    /// An idle connection, or a new one while the pool is not full.
    pub fn get(&self) -> Result<Conn<'_>, PoolError> {
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
                return match self.connect() {
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

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        conn.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(conn)
    }

    /// Takes back a connection (`None`: one that was dropped).
    fn release(&self, conn: Option<Connection>) {
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
        state.open -= state.idle.len();
        state.idle.clear();
        drop(state);
        self.freed.notify_all();
    }
}

/// A connection taken from the pool; it goes back when dropped.
pub(super) struct Conn<'p> {
    pool: &'p Pool,
    conn: Option<Connection>,
}

impl Conn<'_> {
    /// Drops the connection instead of returning it: it may be out of step (a late reply
    /// must never reach the next transaction) or dead.
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.pool.release(self.conn.take());
    }
}
