//! The end of a shutdown: no process may outlive pilot ("no strays"). Once the jobs are
//! stopped, whatever is still below pilot (daemons that left their job's process group,
//! orphans reparented to pilot, also those reparented *during* this sweep because the
//! process that held them died) gets SIGTERM (and SIGCONT, in case it is stopped), then
//! SIGKILL after the stop timeout, and at the end of the grace at the latest. As PID 1,
//! `kill(-1, …)` reaches every process of the namespace at once, parents or not.
//!
//! The sweep ends when the kernel says pilot has no child left (`init::has_children`, not
//! the /proc lists, which can miss children), or shortly after the grace if a SIGKILLed
//! process does not go away (uninterruptible sleep): pilot must exit.
//!
//! [`Sweep`] decides; the driver looks at /proc, sends and waits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM then SIGCONT to this process.
    Term(i32),
    Kill(i32),
    /// PID 1 only: `kill(-1, SIGTERM)` then `kill(-1, SIGCONT)`.
    TermEveryone,
    /// PID 1 only: `kill(-1, SIGKILL)`.
    KillEveryone,
}

pub struct Sweep {
    /// When each current child was first seen (and sent SIGTERM).
    seen: HashMap<i32, Instant>,
    /// As PID 1: when everyone was sent SIGTERM.
    everyone: Option<Instant>,
    pid1: bool,
    stop_timeout: Duration,
    /// The end of the grace: from then on everything is SIGKILLed at once (None: never).
    deadline: Option<Instant>,
}

/// `since + after <= now`, without overflow (an enormous duration never elapses).
fn elapsed(since: Instant, after: Duration, now: Instant) -> bool {
    since.checked_add(after).is_some_and(|t| t <= now)
}

impl Sweep {
    pub fn new(pid1: bool, stop_timeout: Duration, deadline: Option<Instant>) -> Sweep {
        Sweep { seen: HashMap::new(), everyone: None, pid1, stop_timeout, deadline }
    }

    /// What to send now, given the current children.
    pub fn step(&mut self, now: Instant, children: &[i32]) -> Vec<Action> {
        let late = self.deadline.is_some_and(|d| now >= d);
        let mut out = Vec::new();
        if self.pid1 {
            match self.everyone {
                None if !late => {
                    self.everyone = Some(now);
                    out.push(Action::TermEveryone);
                }
                None => out.push(Action::KillEveryone),
                Some(t) if late || elapsed(t, self.stop_timeout, now) => out.push(Action::KillEveryone),
                Some(_) => {}
            }
        }
        // A pid that is gone may come back as another process: forget it.
        self.seen.retain(|pid, _| children.contains(pid));
        for &pid in children {
            match self.seen.get(&pid) {
                None => {
                    self.seen.insert(pid, now);
                    out.push(if late { Action::Kill(pid) } else { Action::Term(pid) });
                }
                Some(&t) if late || elapsed(t, self.stop_timeout, now) => out.push(Action::Kill(pid)),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOP: Duration = Duration::from_secs(5);

    #[test]
    fn each_child_gets_term_then_kill_after_the_stop_timeout() {
        let t0 = Instant::now();
        let mut s = Sweep::new(false, STOP, Some(t0 + Duration::from_secs(60)));
        assert_eq!(s.step(t0, &[10]), [Action::Term(10)]);
        assert_eq!(s.step(t0 + Duration::from_secs(1), &[10]), []);
        assert_eq!(s.step(t0 + STOP, &[10]), [Action::Kill(10)]);
    }

    /// An orphan reparented to pilot after the first look (its parent just died) still
    /// gets SIGTERM and its own stop timeout, not an instant SIGKILL or nothing at all.
    #[test]
    fn late_orphans_get_term_too() {
        let t0 = Instant::now();
        let mut s = Sweep::new(false, STOP, Some(t0 + Duration::from_secs(60)));
        s.step(t0, &[10]);
        let t1 = t0 + STOP;
        assert_eq!(s.step(t1, &[10]), [Action::Kill(10)]);
        let t2 = t1 + Duration::from_millis(20);
        assert_eq!(s.step(t2, &[11]), [Action::Term(11)], "the grandchild, reparented after its parent died");
        assert_eq!(s.step(t2 + STOP, &[11]), [Action::Kill(11)]);
    }

    #[test]
    fn after_the_grace_everything_is_killed_at_once() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(2);
        let mut s = Sweep::new(false, STOP, Some(deadline));
        assert_eq!(s.step(t0, &[10]), [Action::Term(10)]);
        assert_eq!(s.step(deadline, &[10, 12]), [Action::Kill(10), Action::Kill(12)]);
    }

    #[test]
    fn as_pid1_everyone_is_signalled() {
        let t0 = Instant::now();
        let mut s = Sweep::new(true, STOP, Some(t0 + Duration::from_secs(60)));
        assert_eq!(s.step(t0, &[]), [Action::TermEveryone]);
        assert_eq!(s.step(t0 + Duration::from_secs(1), &[]), []);
        assert_eq!(s.step(t0 + STOP, &[]), [Action::KillEveryone]);
    }

    #[test]
    fn a_huge_stop_timeout_does_not_overflow() {
        let t0 = Instant::now();
        let mut s = Sweep::new(true, Duration::MAX, None);
        assert_eq!(s.step(t0, &[10]), [Action::TermEveryone, Action::Term(10)]);
        assert_eq!(s.step(t0 + Duration::from_secs(3600), &[10]), []);
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let t0 = Instant::now();
        let mut s = Sweep::new(false, STOP, None);
        s.step(t0, &[10]);
        s.step(t0 + Duration::from_secs(1), &[]);
        assert_eq!(s.step(t0 + STOP, &[10]), [Action::Term(10)]);
    }
}
