//! The etcd change feed: a watch on the volume's prefix. etcd reports every committed
//! key to its watchers in revision order, so commits announce nothing themselves; the
//! follower keeps the announced kinds of keys and skips the revisions of this client's
//! own commits. A watch event can arrive before the commit that caused it has returned
//! its revision, so before reading an event the follower waits until the commits begun
//! so far have ended (at most a second; a wrong guess costs an invalidation, never a
//! stale read).
//!
//! A watch stream can end or stall: a quiet second is followed by a progress request,
//! which etcd answers at once on a healthy stream; no answer within
//! [`PING_TIMEOUT`] counts as a break. The gRPC channel's keep-alive finds dead
//! connections too.

use super::{map_err, EtcdEngine, CONNECT_TIMEOUT};
use crate::feed::{
    follow_with_retries, FeedEvent, FeedFollower, IdleTicks, Stop, PING_TIMEOUT, QUIET,
};
use crate::{Error, Result};
use etcd_client::WatchOptions;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Revisions of this client's recent commits kept to recognise them in the watch.
const OWN_REVISIONS: usize = 4096;

/// How long the feed waits for this client's commits in flight to say their revision.
const OWN_COMMIT_WAIT: Duration = Duration::from_secs(1);

/// This client's commits: the revisions of the recent ones, and those in flight (each
/// with a ticket), so that the feed can tell an event of its own that arrives before
/// its commit returned.
#[derive(Default)]
pub(super) struct OwnRevisions(parking_lot::Mutex<Own>);

#[derive(Default)]
struct Own {
    revisions: VecDeque<i64>,
    in_flight: BTreeSet<u64>,
    next_ticket: u64,
}

/// A commit in flight; [`OwnRevisions::end`] ends it.
pub(super) struct Ticket(u64);

impl OwnRevisions {
    pub(super) fn begin(&self) -> Ticket {
        let mut own = self.0.lock();
        own.next_ticket += 1;
        let t = own.next_ticket;
        own.in_flight.insert(t);
        Ticket(t)
    }

    /// Ends a commit; `revision` is its revision if it was applied.
    pub(super) fn end(&self, ticket: Ticket, revision: Option<i64>) {
        let mut own = self.0.lock();
        own.in_flight.remove(&ticket.0);
        if let Some(rev) = revision {
            if own.revisions.len() == OWN_REVISIONS {
                own.revisions.pop_front();
            }
            own.revisions.push_back(rev);
        }
    }

    /// Waits (briefly) until every commit begun so far has ended, so that its revision
    /// is known.
    async fn settle(&self) {
        let upto = self.0.lock().next_ticket;
        let start = Instant::now();
        while start.elapsed() < OWN_COMMIT_WAIT
            && self.0.lock().in_flight.first().is_some_and(|t| *t <= upto)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn contains(&self, rev: i64) -> bool {
        self.0.lock().revisions.contains(&rev)
    }
}

impl EtcdEngine {
    pub(super) fn follow(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::engine("etcd: the engine is shut down", false))?;
        follow_with_retries(follower, |f| rt.block_on(self.follow_once(f)))
    }

    /// One watch stream, from creating it until it breaks or the follower stops.
    async fn follow_once(&self, follower: &mut FeedFollower<'_>) -> Result<Stop> {
        let mut wc = self.client.watch_client();
        let opts = WatchOptions::new().with_prefix();
        let created = async {
            let mut stream = wc.watch(self.prefix.clone(), Some(opts)).await?;
            // The first answer says the watch exists; from then on no commit is missed.
            match stream.message().await? {
                Some(r) if r.created() => Ok(stream),
                _ => Err(etcd_client::Error::WatchError(
                    "etcd did not create the watch".into(),
                )),
            }
        };
        let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, created).await {
            Ok(r) => r.map_err(|e| map_err(e, &self.hosts).context("change feed"))?,
            Err(_) => {
                return Err(Error::engine(
                    format!(
                        "change feed: etcd at {} did not create a watch within {CONNECT_TIMEOUT:?}",
                        self.hosts
                    ),
                    true,
                ))
            }
        };
        if !follower(FeedEvent::Live) {
            return Ok(Stop::Asked);
        }
        let announced = self.announced.get().copied();
        let mut idle = IdleTicks::new();
        let mut asked_progress: Option<Instant> = None;
        loop {
            let wait = asked_progress.map_or(QUIET, |at| PING_TIMEOUT.saturating_sub(at.elapsed()));
            match tokio::time::timeout(wait, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    asked_progress = None;
                    if resp.canceled() {
                        return Ok(Stop::Broken(format!(
                            "etcd at {} cancelled the watch: {}",
                            self.hosts,
                            resp.cancel_reason()
                        )));
                    }
                    if !resp.events().is_empty() {
                        self.own.settle().await;
                    }
                    let keys: Vec<Vec<u8>> = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv())
                        .filter(|kv| !self.own.contains(kv.mod_revision()))
                        .filter_map(|kv| kv.key().strip_prefix(self.prefix.as_slice()))
                        .filter(|k| announced.is_none_or(|a| a(k)))
                        .map(<[u8]>::to_vec)
                        .collect();
                    if !keys.is_empty() && !follower(FeedEvent::Changed(&keys)) {
                        return Ok(Stop::Asked);
                    }
                }
                Ok(Ok(None)) => {
                    return Ok(Stop::Broken(format!(
                        "etcd at {} closed the watch",
                        self.hosts
                    )))
                }
                Ok(Err(e)) => return Ok(Stop::Broken(map_err(e, &self.hosts).to_string())),
                Err(_) if asked_progress.is_some() => {
                    return Ok(Stop::Broken(format!(
                        "etcd at {} did not answer a progress request within {PING_TIMEOUT:?}",
                        self.hosts
                    )))
                }
                Err(_) => {
                    if let Err(e) = stream.request_progress().await {
                        return Ok(Stop::Broken(map_err(e, &self.hosts).to_string()));
                    }
                    asked_progress = Some(Instant::now());
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
    use super::super::tests::test_engine;
    use crate::feed::FeedEvent;
    use crate::{KvEngine, KvTxn};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn the_watch_reports_other_clients_commits_not_our_own() {
        let Some(writer) = test_engine("feed") else {
            eprintln!("skipped: NECTAR_TEST_ETCD_URL is not set");
            return;
        };
        let follower = test_engine("feed").unwrap();
        for e in [&writer, &follower] {
            assert!(e.announce_changes(|k| k.starts_with(b"A")));
        }
        let follower = std::sync::Arc::new(follower);
        let (tx, rx) = mpsc::channel();
        let f = follower.clone();
        std::thread::spawn(move || {
            f.follow_changes(&mut |e| match e {
                FeedEvent::Idle => true,
                FeedEvent::Changed(keys) => tx.send(format!("{keys:?}")).is_ok(),
                other => tx.send(format!("{other:?}")).is_ok(),
            })
        });
        let next = || rx.recv_timeout(Duration::from_secs(10)).expect("an event");
        assert_eq!(next(), "Live");
        // The follower's own commit is not reported; the writer's is, without the keys
        // that are not announced.
        follower
            .attempt(&mut |tx: &mut dyn KvTxn| tx.set(b"A0", b"mine"), false)
            .unwrap();
        writer
            .attempt(
                &mut |tx: &mut dyn KvTxn| {
                    tx.set(b"A1", b"x")?;
                    tx.set(b"B1", b"y")
                },
                false,
            )
            .unwrap();
        assert_eq!(next(), format!("{:?}", [b"A1".to_vec()]));
        writer
            .attempt(&mut |tx: &mut dyn KvTxn| tx.delete(b"A0"), false)
            .unwrap();
        assert_eq!(next(), format!("{:?}", [b"A0".to_vec()]));
        writer.reset().unwrap();
    }
}
