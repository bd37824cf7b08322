//! The engine's connections to the volume's master: blocking sockets from the shared
//! [`crate::pool`], used by the thread that runs the transaction.

use crate::pool::Connect;
use redis::{Client, Connection, ConnectionInfo, RedisError, RedisResult};
use std::time::Duration;

pub(super) use crate::pool::POOL_WAIT;

/// Deadline of establishing one connection (TCP, TLS, AUTH, SELECT).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one command or pipeline: long enough for a big `MULTI` on a busy server,
/// short enough that a hung server becomes a retried temporary error.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type Pool = crate::pool::Pool<Connector>;
pub(super) type PoolError = crate::pool::PoolError<RedisError>;

/// Opens blocking connections to one server.
pub(super) struct Connector(Client);

impl Connect for Connector {
    type Conn = Connection;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.0.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        conn.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(conn)
    }
}

/// A pool of at most `max` connections to the server of `info`.
pub(super) fn new(info: ConnectionInfo, max: usize) -> RedisResult<Pool> {
    Ok(Pool::new(Connector(Client::open(info)?), max))
}
