//! Password hashing and verification (Argon2), run off the async threads: each costs tens of
//! milliseconds of CPU and 19 MiB of memory.
//!
//! Every computation passes one process-wide gate ([`ARGON2_SLOTS`] at once, one per core): a
//! burst of logins or invitation acceptances queues here instead of growing the process by
//! 19 MiB per request. A request that cannot get a slot within [`ARGON2_WAIT`] answers 503 with
//! `Retry-After` (`comet_argon2_refused_total`).

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use shared::{domain::Password, secrets};
use tokio::sync::Semaphore;

use crate::error::{ApiError, Result};

/// Argon2 computations allowed at once in this process: one per core.
pub static ARGON2_SLOTS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

/// How long a request waits for a slot before it is refused.
pub const ARGON2_WAIT: Duration = Duration::from_secs(2);

static GATE: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(*ARGON2_SLOTS));

/// Argon2 computations running now (for tests and the gauge).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The most computations seen running at once since the process started.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The most Argon2 computations this process has run at once.
pub fn peak_in_flight() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Runs `f` (Argon2 work) on the blocking pool once a slot is free.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let Ok(Ok(permit)) = tokio::time::timeout(ARGON2_WAIT, GATE.acquire()).await else {
        metrics::counter!("comet_argon2_refused_total").increment(1);
        return Err(ApiError::Busy {
            what: "password hashing",
            retry_after: 1,
        });
    };
    // the slot moves into the blocking task: a request dropped mid-hash (client gone) keeps
    // its slot until the computation really ends
    let res = tokio::task::spawn_blocking(move || {
        let running = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(running, Ordering::Relaxed);
        metrics::gauge!("comet_argon2_in_flight").set(running as f64);
        let out = f();
        let running = IN_FLIGHT.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("comet_argon2_in_flight").set(running as f64);
        drop(permit);
        out
    })
    .await;
    res.map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("blocking task failed")))
}

/// The hash to store for a new password.
pub async fn hash(password: Password) -> Result<String> {
    blocking(move || secrets::hash_password(password.as_ref()))
        .await?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("Failed to hash a password: {e}")))
}

/// Whether `password` matches `hash` (one Argon2 verification; pass the dummy hash when there
/// is no account, so that costs the same).
pub async fn verify(password: String, hash: String) -> Result<bool> {
    blocking(move || secrets::verify_password(&password, &hash)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_there_are_slots() {
        let n = *ARGON2_SLOTS * 3;
        let hashes = (0..n).map(|i| {
            let password = Password::parse(format!("password number {i}")).expect("a password");
            tokio::spawn(hash(password))
        });
        for h in futures::future::join_all(hashes).await {
            // with ARGON2_WAIT of 2 s, some may be refused as busy on a slow machine; none fail
            match h.expect("joined") {
                Ok(_) | Err(ApiError::Busy { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(peak_in_flight() >= 1);
        assert!(
            peak_in_flight() <= *ARGON2_SLOTS,
            "{} at once with {} slots",
            peak_in_flight(),
            *ARGON2_SLOTS
        );
    }
}
