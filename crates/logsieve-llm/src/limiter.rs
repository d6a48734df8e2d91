//! Owns the adaptive concurrency limit: how many calls the stage keeps in
//! flight. It starts at one and follows the server, the way AIMD limiters
//! (TCP's congestion window, Netflix's concurrency-limits) do:
//!
//! - **grow by one** after a success that came back in about the usual time
//!   (at most [`GROW_RATIO`] × the baseline latency) while the limit was in
//!   use, up to `max_concurrency`;
//! - **shrink by one** after a success far slower than usual (more than
//!   [`SHRINK_RATIO`] × the baseline: requests are queueing at the server);
//! - **halve** on an overload signal: a 429, a 503, a timeout, or a call that
//!   outlived `timeout_secs` on a server that still answers its health probe.
//!
//! The baseline is the fastest recent latency: a faster call lowers it at
//! once, slower ones raise it by [`BASELINE_DRIFT`] of the gap, so it follows
//! a server that really got slower without being inflated by one slow call.
//! Only calls started since the last decrease can cause another, so one burst
//! of timeouts halves the limit once, not once per call.
//!
//! Waiting callers queue in FIFO order on a [`Semaphore`]; shrinking leaves a
//! debt that permits pay off as they are returned, so calls in flight are
//! never interrupted.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

/// A success at most this many times the baseline may grow the limit.
pub const GROW_RATIO: f64 = 1.5;
/// A success more than this many times the baseline shrinks the limit by one.
pub const SHRINK_RATIO: f64 = 3.0;
/// Share of the gap by which a slower call raises the baseline.
pub const BASELINE_DRIFT: f64 = 0.02;

/// What the limiter has seen; part of the stage's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    /// The limit now.
    pub concurrency_limit: usize,
    /// The highest limit reached.
    pub concurrency_peak: usize,
    /// Times the limit was lowered (by one or halved).
    pub concurrency_decreases: u64,
}

#[derive(Debug)]
pub struct Limiter {
    semaphore: Semaphore,
    adaptive: bool,
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits to forget as they come back (the limit was lowered while they
    /// were out).
    debt: usize,
    in_flight: usize,
    /// Fastest recent latency, seconds.
    baseline: Option<f64>,
    /// Bumped on every decrease.
    epoch: u64,
    peak: usize,
    decreases: u64,
}

/// A slot to make one call in; returns itself to the limiter when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
    /// Calls in flight when this one started, this one included.
    in_flight: usize,
    epoch: u64,
}

/// How a call ended, as far as the limiter cares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// An answer, after this long.
    Success(Duration),
    /// The server is overloaded or queueing: 429, 503, a timeout, a long wait.
    Overload,
    /// Anything else (a 4xx, a malformed body, a dropped connection): says
    /// nothing about load.
    Neutral,
}

impl Limiter {
    /// `adaptive` false keeps the limit at `max` (a plain semaphore).
    pub fn new(max: usize, adaptive: bool) -> Self {
        let max = max.max(1);
        let start = if adaptive { 1 } else { max };
        Limiter {
            semaphore: Semaphore::new(start),
            adaptive,
            max,
            state: Mutex::new(State {
                limit: start,
                debt: 0,
                in_flight: 0,
                baseline: None,
                epoch: 0,
                peak: start,
                decreases: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot (first come, first served).
    pub async fn acquire(&self) -> Result<Permit<'_>, AcquireError> {
        let permit = self.semaphore.acquire().await?;
        let mut s = self.state();
        s.in_flight += 1;
        Ok(Permit {
            limiter: self,
            permit: Some(permit),
            in_flight: s.in_flight,
            epoch: s.epoch,
        })
    }

    pub fn stats(&self) -> LimiterStats {
        let s = self.state();
        LimiterStats {
            concurrency_limit: s.limit,
            concurrency_peak: s.peak,
            concurrency_decreases: s.decreases,
        }
    }

    /// Tells the limiter how the call made under `permit` went. The permit
    /// stays held until dropped (a retry's backoff is not spent holding it).
    pub fn record(&self, permit: &Permit<'_>, signal: Signal) {
        if !self.adaptive {
            return;
        }
        let mut s = self.state();
        match signal {
            Signal::Neutral => {}
            Signal::Overload => {
                if permit.epoch == s.epoch {
                    let target = (s.limit / 2).max(1);
                    self.lower(&mut s, target);
                }
            }
            Signal::Success(latency) => {
                let secs = latency.as_secs_f64();
                let baseline = match s.baseline {
                    Some(b) if secs >= b => b + (secs - b) * BASELINE_DRIFT,
                    _ => secs,
                };
                s.baseline = Some(baseline);
                let used = permit.in_flight >= s.limit;
                if secs <= baseline * GROW_RATIO && used && s.limit < self.max {
                    s.limit += 1;
                    s.peak = s.peak.max(s.limit);
                    if s.debt > 0 {
                        s.debt -= 1;
                    } else {
                        self.semaphore.add_permits(1);
                    }
                } else if secs > baseline * SHRINK_RATIO && permit.epoch == s.epoch {
                    let target = s.limit.saturating_sub(1).max(1);
                    self.lower(&mut s, target);
                }
            }
        }
    }

    fn lower(&self, s: &mut State, target: usize) {
        if target >= s.limit {
            return;
        }
        s.debt += s.limit - target;
        s.limit = target;
        s.epoch += 1;
        s.decreases += 1;
        // Take back what is idle now; the rest is paid as permits return.
        while s.debt > 0 {
            match self.semaphore.try_acquire() {
                Ok(p) => {
                    p.forget();
                    s.debt -= 1;
                }
                Err(_) => break,
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.limiter.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(p) = self.permit.take() {
            if s.debt > 0 {
                s.debt -= 1;
                p.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Signal {
        Signal::Success(Duration::from_millis(n))
    }

    #[tokio::test]
    async fn starts_at_one_and_grows_while_latency_holds() {
        let l = Limiter::new(4, true);
        assert_eq!(l.stats().concurrency_limit, 1);
        for expected in 2..=4 {
            // Every slot in use, so the limit is what holds calls back.
            let held = futures_join(&l, l.stats().concurrency_limit).await;
            l.record(held.last().unwrap(), ms(100));
            drop(held);
            assert_eq!(l.stats().concurrency_limit, expected);
        }
        let held = futures_join(&l, 4).await;
        l.record(held.last().unwrap(), ms(100));
        drop(held);
        assert_eq!(l.stats().concurrency_limit, 4, "capped at max");
    }

    #[tokio::test]
    async fn an_idle_limit_does_not_grow() {
        let l = Limiter::new(8, true);
        l.record(&l.acquire().await.unwrap(), ms(100));
        assert_eq!(l.stats().concurrency_limit, 2);
        // One call at a time under a limit of 2: nothing says more would help.
        for _ in 0..10 {
            l.record(&l.acquire().await.unwrap(), ms(100));
        }
        assert_eq!(l.stats().concurrency_limit, 2);
    }

    #[tokio::test]
    async fn slow_answers_hold_then_shrink_and_overload_halves_once_per_burst() {
        let l = Limiter::new(8, false);
        assert_eq!(l.stats().concurrency_limit, 8, "fixed when not adaptive");
        let l = Limiter::new(8, true);
        {
            let mut s = l.state();
            s.limit = 8;
            s.peak = 8;
        }
        l.semaphore.add_permits(7);
        let p = l.acquire().await.unwrap();
        l.record(&p, ms(100));
        drop(p);
        // Twice the baseline: queueing, but not badly; no growth, no shrink.
        let p = l.acquire().await.unwrap();
        l.record(&p, ms(200));
        drop(p);
        assert_eq!(l.stats().concurrency_limit, 8);
        let p = l.acquire().await.unwrap();
        l.record(&p, ms(1000));
        drop(p);
        assert_eq!(l.stats().concurrency_limit, 7);
        // Four calls time out together: one halving, not four.
        let burst: Vec<_> = futures_join(&l, 4).await;
        for p in &burst {
            l.record(p, Signal::Overload);
        }
        assert_eq!(l.stats().concurrency_limit, 3);
        assert_eq!(l.stats().concurrency_decreases, 2);
        drop(burst);
        // The debt was paid: exactly 3 slots can be held now.
        let held = futures_join(&l, 3).await;
        assert!(l.semaphore.try_acquire().is_err());
        drop(held);
        assert_eq!(l.semaphore.available_permits(), 3);
        // Neutral signals change nothing; the floor is 1.
        for _ in 0..5 {
            let p = l.acquire().await.unwrap();
            l.record(&p, Signal::Neutral);
            l.record(&p, Signal::Overload);
        }
        assert_eq!(l.stats().concurrency_limit, 1);
        assert_eq!(l.stats().concurrency_peak, 8);
    }

    async fn futures_join(l: &Limiter, n: usize) -> Vec<Permit<'_>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(l.acquire().await.unwrap());
        }
        v
    }
}
