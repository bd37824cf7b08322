//! The Redis change feed: commits `PUBLISH` their announcement inside their own
//! `MULTI`/`EXEC` (so a change is never committed unannounced), and a follower holds one
//! subscribed connection to the volume's master, outside the pool.
//!
//! Redis delivers a message to the subscribers connected when it is published, and to
//! no one later: a follower whose connection drops has missed whatever was published
//! meanwhile, so it reports [`FeedEvent::Lost`] at once and `Live` only once subscribed
//! again. A connection that silently stops delivering (a partition, a frozen server) is
//! found by a `PING` after each quiet second, which must be answered within
//! [`PING_TIMEOUT`]. After a failover the follower subscribes on the new master: the
//! engine's pool finds it, and the follower asks the pool.

use super::{map_err, RedisEngine};
use crate::feed::{
    deliver, follow_with_retries, FeedEvent, FeedFollower, IdleTicks, Stop, PING_TIMEOUT, QUIET,
};
use crate::{Error, Result};
use futures::StreamExt;

/// The channel of a volume: Redis channels are shared by all databases of a server, so
/// the name holds the database and the key prefix.
pub(super) fn channel(db: i64, prefix: &[u8]) -> Vec<u8> {
    [format!("nectar-changes:{db}:").as_bytes(), prefix].concat()
}

impl RedisEngine {
    /// Follows the volume's channel until `follower` says stop (see `crate::feed`).
    pub(super) fn follow(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        follow_with_retries(follower, |f| self.block_on(self.follow_once(f)))
    }

    /// One subscribed connection, from connecting until it breaks or the follower stops.
    async fn follow_once(&self, follower: &mut FeedFollower<'_>) -> Result<Stop> {
        let cur = self.current()?;
        let client = redis::Client::open(cur.info.clone()).map_err(|e| map_err(&e, &cur.addr))?;
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(super::CONNECT_TIMEOUT, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                if super::damage(&e) == super::Damage::Topology {
                    self.forget(&cur);
                }
                return Err(map_err(&e, &cur.addr).context("change feed"));
            }
            Err(_) => {
                return Err(Error::engine(
                    format!(
                        "change feed: no answer from Redis at {} within {:?}",
                        cur.addr,
                        super::CONNECT_TIMEOUT
                    ),
                    true,
                ))
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !follower(FeedEvent::Live) {
            return Ok(Stop::Asked);
        }
        let mut idle = IdleTicks::new();
        loop {
            match tokio::time::timeout(QUIET, stream.next()).await {
                Ok(Some(msg)) => {
                    if !deliver(msg.get_payload_bytes(), self.origin, follower) {
                        return Ok(Stop::Asked);
                    }
                }
                Ok(None) => {
                    return Ok(Stop::Broken(format!(
                        "the connection to Redis at {} closed",
                        cur.addr
                    )))
                }
                Err(_) => {
                    let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>());
                    match ping.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return Ok(Stop::Broken(format!(
                                "Redis at {} did not answer a ping: {e}",
                                cur.addr
                            )))
                        }
                        Err(_) => {
                            return Ok(Stop::Broken(format!(
                                "Redis at {} did not answer a ping within {PING_TIMEOUT:?}",
                                cur.addr
                            )))
                        }
                    }
                }
            }
            if !idle.tick(follower) {
                return Ok(Stop::Asked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, server, with_db};
    use crate::feed::heard::Heard;
    use crate::{KvEngine, KvTxn};
    use redis::ConnectionLike;

    #[test]
    fn commits_announce_their_keys_to_other_clients_and_a_cut_is_reported() {
        let Some(url) = server() else { return };
        let url = with_db(&url, "9?prefix=feedtest");
        let writer = open(&url).unwrap();
        assert!(writer.announce_changes(|k| k.starts_with(b"A")));
        let heard = Heard::follow(std::sync::Arc::new(open(&url).unwrap()));
        assert_eq!(heard.next(), "live");
        writer
            .attempt(
                &mut |tx: &mut dyn KvTxn| {
                    tx.set(b"A1", b"x")?;
                    tx.set(b"B1", b"not announced")?;
                    tx.delete(b"A2")
                },
                false,
            )
            .unwrap();
        assert_eq!(heard.next(), "changed A1,A2");
        // A commit that changes no announced key publishes nothing (else the next
        // event would not be the cut).
        writer
            .attempt(&mut |tx: &mut dyn KvTxn| tx.set(b"B2", b"y"), false)
            .unwrap();
        // Cut the follower's connection: it says so, then comes back.
        let killed = redis::Client::open(url.split('?').next().unwrap())
            .unwrap()
            .get_connection()
            .unwrap()
            .req_command(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
            .unwrap();
        assert!(
            matches!(killed, redis::Value::Int(n) if n >= 1),
            "{killed:?}"
        );
        assert_eq!(heard.next(), "lost");
        assert_eq!(heard.next(), "live");
        writer
            .attempt(&mut |tx: &mut dyn KvTxn| tx.set(b"A3", b"z"), false)
            .unwrap();
        assert_eq!(heard.next(), "changed A3");
        writer.reset().unwrap();
    }
}
