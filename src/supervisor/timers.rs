//! The timer thread: one heap of deadlines. It sleeps until the earliest one (or forever
//! when there is none, so an idle pilot has no wakeups) and reports each as it falls due.

use super::machine::TimerKey;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

pub struct Timers {
    tx: Sender<(Instant, TimerKey)>,
}

impl Timers {
    pub fn start(fire: impl Fn(TimerKey) -> bool + Send + 'static) -> Timers {
        let (tx, rx) = channel::<(Instant, TimerKey)>();
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<(Instant, TimerKey)>> = BinaryHeap::new();
                loop {
                    let next = match heap.peek() {
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(Reverse((at, _))) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                    };
                    match next {
                        Ok(item) => heap.push(Reverse(item)),
                        Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    let now = Instant::now();
                    while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                        let Some(Reverse((_, key))) = heap.pop() else { break };
                        if !fire(key) {
                            return;
                        }
                    }
                }
            })
            .expect("spawn timer thread");
        Timers { tx }
    }

    /// Fire `key` after `after`. A duration too large to be a point in time (centuries)
    /// means never: the timer is dropped rather than overflowing `Instant + Duration`.
    pub fn set(&self, after: Duration, key: TimerKey) {
        if let Some(at) = Instant::now().checked_add(after) {
            let _ = self.tx.send((at, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::machine::TimerKey;

    /// 292 years is no point in time `Instant` can hold: such a timer never fires, and
    /// setting it neither panics nor stops the thread for the timers after it.
    #[test]
    fn a_huge_duration_means_never() {
        let (tx, rx) = channel();
        let timers = Timers::start(move |k| tx.send(k).is_ok());
        timers.set(Duration::MAX, TimerKey::Grace);
        timers.set(Duration::from_secs(u64::MAX / 2), TimerKey::Grace);
        timers.set(Duration::from_millis(10), TimerKey::GiveUp);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(TimerKey::GiveUp));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
