//! One byte budget for every JSON answer the gateway builds at the same
//! time (`--http-result-limit` bounds one answer; this bounds them all:
//! four answers of the largest size). An answer reserves
//! budget in 64 KiB steps as its JSON grows and keeps it until its body is
//! handed to the connection; past the budget it waits up to two seconds
//! for others to finish, then is refused with 503 and `Retry-After`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservation step.
const UNIT: usize = 64 << 10;
/// How long an answer waits for budget before it is refused.
const WAIT: Duration = Duration::from_secs(2);

pub struct JsonBudget {
    sem: Arc<Semaphore>,
    units: usize,
    held: AtomicUsize,
    peak: AtomicUsize,
}

/// Budget one answer holds (returned when dropped).
pub struct Held {
    budget: Arc<JsonBudget>,
    permit: Option<OwnedSemaphorePermit>,
    units: usize,
}

/// The budget stayed exhausted for the whole wait.
#[derive(Debug)]
pub struct Busy {
    pub budget: usize,
}

impl JsonBudget {
    pub fn new(bytes: usize) -> Arc<JsonBudget> {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(JsonBudget {
            sem: Arc::new(Semaphore::new(units)),
            units,
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    pub fn bytes(&self) -> usize {
        self.units * UNIT
    }

    /// Bytes held now and the most held at once since start.
    pub fn usage(&self) -> (usize, usize) {
        (
            self.held.load(Ordering::SeqCst) * UNIT,
            self.peak.load(Ordering::SeqCst) * UNIT,
        )
    }

    /// An empty reservation.
    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: Arc::clone(self),
            permit: None,
            units: 0,
        }
    }
}

impl Held {
    /// Grows the reservation to cover `bytes` (waiting briefly for budget).
    pub async fn cover(&mut self, bytes: usize) -> Result<(), Busy> {
        let want = bytes.div_ceil(UNIT).max(1);
        if want <= self.units {
            return Ok(());
        }
        let b = &self.budget;
        let more = want - self.units;
        if more > b.units {
            return Err(Busy { budget: b.bytes() });
        }
        let acquire = Arc::clone(&b.sem).acquire_many_owned(more as u32);
        let permit = match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(p)) => p,
            _ => return Err(Busy { budget: b.bytes() }),
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        self.units = want;
        let now = b.held.fetch_add(more, Ordering::SeqCst) + more;
        b.peak.fetch_max(now, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.units, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_share_the_budget_and_wait_or_are_refused() {
        let b = JsonBudget::new(4 * UNIT);
        let mut a = b.hold();
        a.cover(3 * UNIT).await.unwrap();
        let mut c = b.hold();
        c.cover(UNIT).await.unwrap();
        assert_eq!(b.usage(), (4 * UNIT, 4 * UNIT));
        // Nothing left: waits, then is refused.
        let mut d = b.hold();
        assert!(d.cover(UNIT).await.is_err());
        // Budget comes back when an answer is done.
        drop(a);
        d.cover(2 * UNIT).await.unwrap();
        assert_eq!(b.usage().0, 3 * UNIT);
        assert!(
            b.hold().cover(5 * UNIT).await.is_err(),
            "larger than the whole budget"
        );
    }
}
