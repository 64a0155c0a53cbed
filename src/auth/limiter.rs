//! Failed sign-ins per user name: after [`MAX_FAILURES`] in a row the name
//! is locked for [`LOCKOUT`], whatever password comes next. Bounded: the
//! oldest names are forgotten first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub const MAX_FAILURES: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(30);
/// Names remembered at most (an attacker may try many).
const MAX_NAMES: usize = 10_000;

#[derive(Default)]
pub struct Limiter {
    names: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Limiter {
    /// Seconds left of a lockout, if `user` is locked.
    pub fn locked(&self, user: &str) -> Option<u64> {
        let names = self.names.lock();
        let (n, last) = names.get(user)?;
        let left = LOCKOUT.checked_sub(last.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    pub fn failed(&self, user: &str) {
        let mut names = self.names.lock();
        if names.len() >= MAX_NAMES && !names.contains_key(user) {
            if let Some(oldest) = names
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| k.clone())
            {
                names.remove(&oldest);
            }
        }
        let e = names.entry(user.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= LOCKOUT {
            e.0 = 0; // an old streak is forgiven
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, user: &str) {
        self.names.lock().remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_streak_and_only_that_user() {
        let l = Limiter::default();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed("a");
        }
        assert!(l.locked("a").is_none());
        l.failed("a");
        assert!(l.locked("a").is_some());
        assert!(l.locked("b").is_none());
        l.succeeded("a");
        assert!(l.locked("a").is_none());
    }
}
