//! Lending the memory budget to long statements.
//!
//! Every open node file is its own DuckDB instance with its own
//! `memory_limit` (ARCHITECTURE.md, "Memory", says why not one instance),
//! and an even split gives one large sort or join on one replica 1/8 of the
//! budget per open month. Every [`TICK`] the lender looks at what runs: a
//! file that has had statements running for [`LONG`] or more borrows the
//! budget that idle files do not use. Idle files shrink to a floor (a
//! quarter of the even share, so their cached pages are evicted), files
//! running short statements keep the even share, and the long ones split
//! the rest in proportion to the statements each runs. Limits are lowered before others are raised, and a file DuckDB
//! cannot shrink (its memory is pinned) keeps its limit while the others
//! get only what is left: the sum of the limits stays within the budget.
//! `--max-temp-size` is lent in the same proportion.

use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::node::{Node, MIN_LIMIT};

/// How long a statement starting on a shrunk file waits for the lender.
const WAKE_WAIT: Duration = Duration::from_millis(50);

/// Requests for a look now (a statement starting on a file the lender
/// shrank: DuckDB sizes an aggregate by the limit at its start, so it must
/// not start at the floor), and the passes done.
struct Wake {
    state: Mutex<(u64, u64)>,
    cv: Condvar,
}

static WAKE: LazyLock<Wake> = LazyLock::new(|| Wake {
    state: Mutex::new((0, 0)),
    cv: Condvar::new(),
});

/// Asks the lender for a pass and waits (briefly) until it has made one.
pub fn wake_and_wait() {
    let w = &*WAKE;
    let Ok(mut st) = w.state.lock() else { return };
    st.0 += 1;
    let want = st.0;
    w.cv.notify_all();
    let deadline = Instant::now() + WAKE_WAIT;
    while st.1 < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match w.cv.wait_timeout(st, left) {
            Ok((g, _)) => st = g,
            Err(_) => return,
        }
    }
}

/// The lender's sleep: until `TICK` passes or a pass is requested. Returns
/// the request it serves.
pub fn sleep() -> u64 {
    let w = &*WAKE;
    let Ok(st) = w.state.lock() else {
        std::thread::sleep(TICK);
        return 0;
    };
    let seen = st.1;
    match w.cv.wait_timeout_while(st, TICK, |s| s.0 <= seen) {
        Ok((g, _)) => g.0,
        Err(_) => 0,
    }
}

/// Tells the waiting statements that the pass serving `request` is done.
pub fn done(request: u64) {
    let w = &*WAKE;
    if let Ok(mut st) = w.state.lock() {
        st.1 = st.1.max(request);
        w.cv.notify_all();
    }
}

/// How often the lender looks.
pub const TICK: Duration = Duration::from_millis(100);
/// How long a file must have been busy to borrow.
pub const LONG: Duration = Duration::from_millis(200);

/// What a file is doing, for the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Idle,
    Short,
    /// Statements have run for [`LONG`]; how many run now (each gets a share
    /// of what is lent: two sorts on one replica need twice one's memory).
    Long(u64),
}

/// Target limits for files under `loads`, given `slots` files' worth of
/// budget (open files plus replica slots that may open: their even share
/// stays reserved) and the `budget`.
pub fn targets(loads: &[Load], slots: u64, budget: u64) -> Vec<u64> {
    let slots = slots.max(loads.len() as u64).max(1);
    let even = budget / slots;
    let long: u64 = loads
        .iter()
        .map(|l| match l {
            Load::Long(n) => (*n).max(1),
            _ => 0,
        })
        .sum();
    if long == 0 {
        return vec![even; loads.len()];
    }
    let floor = (even / 4).max(MIN_LIMIT.min(even));
    let idle = loads.iter().filter(|l| **l == Load::Idle).count() as u64;
    let short = loads.iter().filter(|l| **l == Load::Short).count() as u64;
    let unopened = slots - loads.len() as u64;
    let reserved = floor * idle + even * (short + unopened);
    let lent = budget.saturating_sub(reserved) / long;
    loads
        .iter()
        .map(|l| match l {
            Load::Idle => floor,
            Load::Short => even,
            Load::Long(n) => (lent * (*n).max(1)).max(even),
        })
        .collect()
}

/// Applies `targets` to `nodes`: first every limit that goes down (a file
/// DuckDB cannot shrink keeps its limit), then the raises, each only as far
/// as the budget still allows.
pub fn apply(nodes: &[Arc<Node>], targets: &[u64], budget: u64, temp_budget: u64) {
    let temp_of = |m: u64| -> u64 {
        if temp_budget == 0 {
            0
        } else {
            (u128::from(temp_budget) * u128::from(m) / u128::from(budget.max(1))) as u64
        }
    };
    // Within a MiB counts as unchanged (DuckDB's unit here).
    let differs = |a: u64, b: u64| a.abs_diff(b) >= (1 << 20);
    for (node, &t) in nodes.iter().zip(targets) {
        let (current, _) = node.limits();
        if t < current && differs(t, current) {
            if let Err(e) = node.try_set_limits(t, temp_of(t)) {
                tracing::debug!(error = %e, "a file could not shrink; it keeps its limit");
            }
        }
    }
    let mut room = budget.saturating_sub(nodes.iter().map(|n| n.limits().0).sum());
    for (node, &t) in nodes.iter().zip(targets) {
        let (current, _) = node.limits();
        if t > current && differs(t, current) {
            let new = t.min(current + room);
            if differs(new, current) && node.try_set_limits(new, temp_of(new)).is_ok() {
                room -= new - current;
            }
        }
    }
}

/// What `node` is doing now.
pub fn load_of(node: &Node) -> Load {
    match node.busy_for() {
        None => Load::Idle,
        Some(d) if d >= LONG => Load::Long(node.running() as u64),
        Some(_) => Load::Short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn an_even_split_until_something_runs_long() {
        let t = targets(
            &[Load::Idle, Load::Short, Load::Idle, Load::Idle],
            4,
            400 * MB,
        );
        assert_eq!(t, vec![100 * MB; 4]);
    }

    #[test]
    fn a_long_statement_borrows_what_idle_files_leave() {
        // 96 files (12 months of 8), one long statement.
        let mut loads = vec![Load::Idle; 96];
        loads[5] = Load::Long(1);
        let budget = 3072 * MB;
        let t = targets(&loads, 96, budget);
        let even = budget / 96;
        assert_eq!(t[0], (even / 4).max(MIN_LIMIT));
        assert!(t[5] > budget / 2, "the long one gets most: {}", t[5] / MB);
        assert!(t.iter().sum::<u64>() <= budget);
    }

    #[test]
    fn short_statements_keep_their_share_and_long_ones_split() {
        let loads = [Load::Long(1), Load::Short, Load::Long(1), Load::Idle];
        let t = targets(&loads, 8, 800 * MB);
        assert_eq!(t[1], 100 * MB);
        assert_eq!(t[0], t[2]);
        // Four unopened slots keep their even share.
        assert!(t.iter().sum::<u64>() + 4 * 100 * MB <= 800 * MB);
        assert!(t[0] > 100 * MB);
    }

    #[test]
    fn a_file_running_two_long_statements_gets_two_shares() {
        let loads = [Load::Long(2), Load::Long(1), Load::Idle, Load::Idle];
        let t = targets(&loads, 4, 1200 * MB);
        assert_eq!(t[0], 2 * t[1], "{} vs {}", t[0] / MB, t[1] / MB);
        assert!(t.iter().sum::<u64>() <= 1200 * MB);
    }
}
