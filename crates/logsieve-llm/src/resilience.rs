//! Owns the policies that keep a flaky or rate-limited endpoint from losing
//! rows or stalling the pipeline: backoff with full jitter, `Retry-After`,
//! the per-minute call budget (a token bucket) and the circuit breaker.
//! Each is plain state behind a mutex, with the clock passed in, so the
//! decisions are tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

/// `Retry-After` as a wait: the delay-seconds form (`"120"`) or the
/// HTTP-date form (`"Wed, 21 Oct 2015 07:28:00 GMT"`, a wait until then,
/// zero if it has passed). Anything else, or more than a day, is ignored and
/// the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs.min(86_401.0)),
        Ok(_) => return None,
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    (wait <= Duration::from_secs(86_400)).then_some(wait)
}

/// What to do after failed attempt number `retry` (0 for the first retry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDelay {
    /// Wait this long, then try again.
    Wait(Duration),
    /// The server asked for a pause longer than `backoff_max`; give up now.
    TooLong(Duration),
}

/// Exponential backoff with full jitter: a uniform pick in
/// `0..=min(max, base * 2^retry)`. A server's `Retry-After` wins when it is
/// within `max`; beyond it the row is given up rather than stalled.
pub fn retry_delay(
    retry: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
    rng: &mut impl Rng,
) -> RetryDelay {
    if let Some(asked) = retry_after {
        return if asked <= max {
            RetryDelay::Wait(asked)
        } else {
            RetryDelay::TooLong(asked)
        };
    }
    let ceiling = base.saturating_mul(2u32.saturating_pow(retry.min(30))).min(max);
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    RetryDelay::Wait(Duration::from_nanos(rng.random_range(0..=nanos)))
}

/// The per-minute call budget: a token bucket holding up to
/// `calls_per_minute` tokens, refilled at `calls_per_minute / 60` per second.
/// A caller takes a token, or reserves the next one and waits for it.
#[derive(Debug)]
pub struct Budget {
    /// Tokens per second; `None` for no limit.
    rate: Option<f64>,
    capacity: f64,
    max_wait: Duration,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// May go negative: tokens already promised to waiting callers.
    tokens: f64,
    last: Instant,
}

impl Budget {
    pub fn new(calls_per_minute: u32, max_wait: Duration, now: Instant) -> Self {
        let capacity = f64::from(calls_per_minute);
        Budget {
            rate: (calls_per_minute > 0).then(|| capacity / 60.0),
            capacity,
            max_wait,
            state: Mutex::new(BucketState {
                tokens: capacity,
                last: now,
            }),
        }
    }

    /// Takes one call from the budget. `Ok(wait)`: the call may start after
    /// `wait` (zero when a token was there). `Err(wait)`: the wait would
    /// exceed `max_wait`, nothing was taken.
    pub fn reserve(&self, now: Instant) -> Result<Duration, Duration> {
        let Some(rate) = self.rate else {
            return Ok(Duration::ZERO);
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(self.capacity);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_secs_f64((1.0 - s.tokens) / rate);
        if wait > self.max_wait {
            return Err(wait);
        }
        s.tokens -= 1.0;
        Ok(wait)
    }
}

/// Circuit breaker over consecutive failed calls. Open: calls are refused
/// until the cool-down ends. After it, calls go through again ("half-open");
/// the failure count is kept, so the next failure re-opens at once and a
/// success closes it. No probe token to leak when a caller goes away.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// What the last failed call said, for the rows refused while open.
    last_failure: String,
}

/// A refused call: the breaker is open.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerOpen {
    pub failures: u32,
    pub remaining: Duration,
    pub last_failure: String,
}

impl Breaker {
    /// `threshold` 0 disables the breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// May a call start now?
    pub fn check(&self, now: Instant) -> Result<(), BreakerOpen> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.open_until {
            Some(until) if now < until => Err(BreakerOpen {
                failures: s.consecutive_failures,
                remaining: until - now,
                last_failure: s.last_failure.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub fn record_success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = BreakerState::default();
    }

    /// Counts a failed call and what it said; true when this failure opened
    /// the breaker.
    pub fn record_failure(&self, now: Instant, cause: &str) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.last_failure = cause.to_string();
        if self.threshold == 0 || s.consecutive_failures < self.threshold {
            return false;
        }
        let was_open = matches!(s.open_until, Some(until) if now < until);
        s.open_until = Some(now + self.cooldown);
        !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn retry_after_seconds_form() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("90000"), None);
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn retry_after_http_date_form() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let at = |v| parse_retry_after_at(v, now);
        assert_eq!(at("Wed, 21 Oct 2015 07:28:30 GMT"), Some(Duration::from_secs(30)));
        // A date already past means "now".
        assert_eq!(at("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        // More than a day ahead is not believed.
        assert_eq!(at("Fri, 23 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(at("Wed, 21 Oct 2015 25:00:00 GMT"), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for retry in 0..10 {
            let ceiling = (base * 2u32.pow(retry)).min(max);
            let mut seen = Vec::new();
            for _ in 0..50 {
                match retry_delay(retry, None, base, max, &mut rng) {
                    RetryDelay::Wait(d) => {
                        assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
                        seen.push(d);
                    }
                    other => panic!("{other:?}"),
                }
            }
            seen.dedup();
            assert!(seen.len() > 1, "jitter varies the wait");
        }
    }

    #[test]
    fn retry_after_wins_within_the_cap_and_gives_up_beyond_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let asked = Some(Duration::from_secs(3));
        assert_eq!(
            retry_delay(0, asked, base, max, &mut rng),
            RetryDelay::Wait(Duration::from_secs(3))
        );
        let asked = Some(Duration::from_secs(60));
        assert_eq!(
            retry_delay(0, asked, base, max, &mut rng),
            RetryDelay::TooLong(Duration::from_secs(60))
        );
    }

    #[test]
    fn budget_spends_refills_and_refuses_long_waits() {
        let t0 = Instant::now();
        let budget = Budget::new(60, Duration::from_secs(2), t0);
        for _ in 0..60 {
            assert_eq!(budget.reserve(t0), Ok(Duration::ZERO));
        }
        // Empty: the next token comes in 1 s, the one after in 2 s.
        assert_eq!(budget.reserve(t0), Ok(Duration::from_secs(1)));
        assert_eq!(budget.reserve(t0), Ok(Duration::from_secs(2)));
        assert!(budget.reserve(t0).is_err(), "3 s > max wait");
        // Three seconds later the two reservations are paid and one is free.
        assert_eq!(budget.reserve(t0 + Duration::from_secs(3)), Ok(Duration::ZERO));
        let unlimited = Budget::new(0, Duration::ZERO, t0);
        for _ in 0..1000 {
            assert_eq!(unlimited.reserve(t0), Ok(Duration::ZERO));
        }
    }

    #[test]
    fn breaker_opens_cools_down_and_closes() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(30);
        let b = Breaker::new(3, cool);
        assert!(!b.record_failure(t0, "HTTP 500"));
        assert!(!b.record_failure(t0, "HTTP 500"));
        assert!(b.check(t0).is_ok());
        assert!(b.record_failure(t0, "HTTP 500"), "third failure opens");
        let open = b.check(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!((open.failures, open.remaining), (3, Duration::from_secs(29)));
        assert_eq!(open.last_failure, "HTTP 500");
        // Half-open after the cool-down: one more failure re-opens.
        let t1 = t0 + cool;
        assert!(b.check(t1).is_ok());
        assert!(b.record_failure(t1, "HTTP 500"));
        assert!(b.check(t1).is_err());
        // A success closes it and resets the count.
        let t2 = t1 + cool;
        b.record_success();
        assert!(b.check(t2).is_ok());
        assert!(!b.record_failure(t2, "HTTP 500"));
        assert!(Breaker::new(0, cool).check(t0).is_ok());
    }
}
