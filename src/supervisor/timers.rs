//! The timers: one heap of deadlines, owned by the supervisor thread, whose wait ends at the
//! earliest one (or never when there is none, so an idle pilot has no wakeups). No thread
//! of their own: a check's interval or a stop's kill fires in the thread that acts on it.
//!
//! A deadline that carries a run generation (a run's `timeout`, a check's `timeout`, a
//! stop's kill, a run's "ran well") is moot once a newer generation of the same kind is set
//! for the same job: the machine ignores it anyway. Such deadlines are not kept: a job that
//! runs every millisecond with `timeout: "24h"` would otherwise leave one heap entry per run
//! for a day (tens of MB an hour, for ever with a longer timeout).

use super::machine::{JobId, TimerKey};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// A generation-carrying key's kind and job, and its generation.
fn generation(key: &TimerKey) -> Option<((u8, JobId), u64)> {
    match *key {
        TimerKey::ExecTimeout(id, g) => Some(((0, id), g)),
        TimerKey::CheckTimeout(id, g) => Some(((1, id), g)),
        TimerKey::StopKill(id, g) => Some(((2, id), g)),
        TimerKey::RanWell(id, g) => Some(((3, id), g)),
        _ => None,
    }
}

/// The deadlines, and for each generation-carrying kind and job the newest generation set
/// and not yet fired: an entry of another generation is moot.
#[derive(Default)]
pub struct Heap {
    entries: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    newest: HashMap<(u8, JobId), u64>,
    /// The heap's length after its last compaction.
    compacted: usize,
}

impl Heap {
    /// Fire `key` after `after`. A duration too large to be a point in time (centuries)
    /// means never: the timer is dropped rather than overflowing `Instant + Duration`.
    pub fn set(&mut self, after: Duration, key: TimerKey) {
        if let Some(at) = Instant::now().checked_add(after) {
            self.push(at, key);
        }
    }

    /// The earliest deadline, if any (possibly of a moot entry: the wait then ends early
    /// and finds nothing due, once).
    pub fn next(&self) -> Option<Instant> {
        self.entries.peek().map(|Reverse((at, _))| *at)
    }

    fn live(&self, key: &TimerKey) -> bool {
        generation(key).is_none_or(|(slot, g)| self.newest.get(&slot) == Some(&g))
    }

    fn push(&mut self, at: Instant, key: TimerKey) {
        if let Some((slot, g)) = generation(&key) {
            let newest = self.newest.entry(slot).or_insert(g);
            if g < *newest {
                return;
            }
            *newest = g;
        }
        self.entries.push(Reverse((at, key)));
        // Moot entries still sit in the heap until they fall due; drop them once they are
        // half of it (amortised: the heap at least doubled since the last time).
        if self.entries.len() > 64 && self.entries.len() > 2 * self.compacted {
            let entries = std::mem::take(&mut self.entries).into_vec();
            let kept: Vec<_> = entries.into_iter().filter(|Reverse((_, k))| self.live(k)).collect();
            self.entries = BinaryHeap::from(kept);
            self.entries.shrink_to_fit();
            self.compacted = self.entries.len();
        }
    }

    /// The next key due at `now` that is not moot (a fired generation is forgotten, so
    /// another entry of it, set twice, fires once: the earlier deadline wins).
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        while self.entries.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Reverse((_, key)) = self.entries.pop()?;
            if !self.live(&key) {
                continue;
            }
            if let Some((slot, _)) = generation(&key) {
                self.newest.remove(&slot);
            }
            return Some(key);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::machine::TimerKey;

    /// 292 years is no point in time `Instant` can hold: such a timer never fires, and
    /// setting it neither panics nor loses the timers after it.
    #[test]
    fn a_huge_duration_means_never() {
        let mut heap = Heap::default();
        heap.set(Duration::MAX, TimerKey::Grace);
        heap.set(Duration::from_secs(u64::MAX / 2), TimerKey::Grace);
        heap.set(Duration::from_millis(10), TimerKey::GiveUp);
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(heap.pop_due(later), Some(TimerKey::GiveUp));
        assert_eq!(heap.pop_due(later), None);
        assert_eq!(heap.next(), None);
    }

    /// A job run every millisecond with a long timeout sets one deadline per run; only the
    /// newest can matter, so the heap stays small, and a moot deadline never fires.
    #[test]
    fn superseded_generations_are_dropped() {
        let id = JobId { generation: 0, slot: 0 };
        let mut heap = Heap::default();
        let start = Instant::now();
        for g in 1..=100_000 {
            heap.push(start + Duration::from_secs(86_400), TimerKey::ExecTimeout(id, g));
            heap.push(start, TimerKey::Interval(id));
            while heap.pop_due(start).is_some() {}
        }
        assert!(heap.entries.len() < 200, "{} entries kept", heap.entries.len());
        heap.push(start, TimerKey::CheckTimeout(id, 1));
        heap.push(start, TimerKey::CheckTimeout(id, 2));
        heap.push(start, TimerKey::StopKill(id, 7));
        heap.push(start, TimerKey::StopKill(id, 7));
        let later = start + Duration::from_secs(86_401);
        let mut fired = Vec::new();
        while let Some(k) = heap.pop_due(later) {
            fired.push(k);
        }
        fired.sort();
        assert_eq!(
            fired,
            vec![TimerKey::ExecTimeout(id, 100_000), TimerKey::CheckTimeout(id, 2), TimerKey::StopKill(id, 7)]
        );
    }
}
