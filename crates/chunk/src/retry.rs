//! Retrying temporary object-store failures: the one retry layer of the data path.
//!
//! Object stores throttle and time out; such errors are marked temporary by the object
//! crate and are retried here with exponential backoff (50 ms doubling to at most 10 s,
//! plus random jitter so clients that failed together do not retry together), up to
//! `io_retries` times: with the default 10 a request is given up about 45 s after its
//! first failure (50 ms + 100 ms + ... + 6.4 s, then 10 s twice, plus jitter and the
//! attempts' own time). Each attempt may take at most the operation's timeout
//! (`--get-timeout`, `--put-timeout`; other requests take the longer of the two); one
//! that takes longer is abandoned and counts as a temporary failure, so a store that
//! stops answering cannot hang a reader or a writer. Permanent errors (denied, not
//! found, bad request) are returned at once: waiting would only delay the user's error.
//! A cancel flag lets an aborted slice writer stop retrying uploads nobody wants any
//! more. The stores below retry nothing themselves, so the budget above is the whole
//! budget.

use crate::{Error, Result};
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const BASE: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(10);

/// The wait before retry number `attempt` (0-based).
pub(crate) fn backoff(attempt: usize) -> Duration {
    let exp = BASE.saturating_mul(1u32 << attempt.min(16)).min(MAX);
    let jitter_ms = rand::thread_rng().gen_range(0..=exp.as_millis() as u64 / 4);
    exp + Duration::from_millis(jitter_ms)
}

/// How many times, and how long each attempt may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub retries: usize,
    pub timeout: Duration,
}

/// Runs `op` until it succeeds, fails permanently, has been retried `policy.retries`
/// times, or `cancel` is set. `what` and `key` only go into log lines.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    key: &str,
    policy: Policy,
    cancel: Option<(&AtomicBool, u64)>,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = nectar_object::Result<T>>,
{
    let mut attempt = 0;
    loop {
        if let Some((flag, id)) = cancel {
            if flag.load(Ordering::Acquire) {
                return Err(Error::Aborted(id));
            }
        }
        let result = match tokio::time::timeout(policy.timeout, op()).await {
            Ok(r) => r,
            Err(_) => Err(nectar_object::Error::Temporary(format!(
                "{what} {key} took longer than {:?}",
                policy.timeout
            ))),
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_temporary() && attempt < policy.retries => {
                let wait = backoff(attempt);
                attempt += 1;
                tracing::debug!(
                    "{what} {key} failed ({e}); retry {attempt}/{} in {wait:?}",
                    policy.retries
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn policy(retries: usize) -> Policy {
        Policy {
            retries,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= BASE && backoff(0) <= BASE * 2);
        assert!(backoff(3) >= BASE * 8);
        assert!(backoff(60) <= MAX + MAX / 4);
    }

    #[tokio::test]
    async fn temporary_errors_are_retried_permanent_ones_are_not() {
        let calls = AtomicUsize::new(0);
        let r = retry("get", "k", policy(5), None, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(nectar_object::Error::Temporary("slow down".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = retry("put", "k", policy(5), None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(nectar_object::Error::Permanent("denied".into()))
        })
        .await;
        assert!(!r.unwrap_err().is_temporary());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = retry("put", "k", policy(2), None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(nectar_object::Error::Temporary("503".into()))
        })
        .await;
        assert!(r.unwrap_err().is_temporary());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_is_a_temporary_failure() {
        let calls = AtomicUsize::new(0);
        let p = Policy {
            retries: 2,
            timeout: Duration::from_secs(1),
        };
        // The first attempt hangs; the second answers.
        let r = retry("get", "k", p, None, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(3)
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A store that never answers is given up after the budget, as temporary.
        let r: Result<()> = retry("get", "k", p, None, std::future::pending).await;
        let e = r.unwrap_err();
        assert!(
            e.is_temporary() && e.to_string().contains("longer than 1s"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn cancel_stops_retrying() {
        let flag = AtomicBool::new(true);
        let r: Result<()> =
            retry("put", "k", policy(5), Some((&flag, 9)), || async { Ok(()) }).await;
        assert!(matches!(r, Err(Error::Aborted(9))));
    }
}
