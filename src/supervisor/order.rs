//! The stop order of a config's jobs, as the machine drains them: a job stops after every
//! job that started after it (whose `when.source` is the job or its `check.<job>`). Jobs
//! that wait for each other form a cycle: pilot stops them together (see
//! `Machine::stop_ready_jobs`), but a config with one is most likely a mistake, so
//! `check-config` can report it with [`cycles`].

use crate::config::{Config, Trigger};
use crate::events::{Code, Source};

/// Post-stop style jobs (on `stopping`, `stopped` or `shutdown`) are never stopped by a
/// drain and so never wait for anything.
fn is_hook(trigger: &Trigger) -> bool {
    matches!(trigger, Trigger::Event { code: Code::Stopping | Code::Stopped | Code::Shutdown, .. })
}

/// Every set of jobs that wait for each other to stop, each as job names in config order
/// (strongly connected components of more than one job, or a job that depends on itself).
pub fn cycles(config: &Config) -> Vec<Vec<String>> {
    let jobs = &config.jobs;
    let n = jobs.len();
    // after[i]: the jobs that started after job i (and so must stop before it).
    let after: Vec<Vec<usize>> = jobs
        .iter()
        .map(|job| {
            let check = Source::check(&job.name);
            (0..n)
                .filter(|&k| match &jobs[k].trigger {
                    Trigger::Event { source, .. } if !is_hook(&jobs[k].trigger) => {
                        *source == job.name || check == *source
                    }
                    _ => false,
                })
                .collect()
        })
        .collect();
    // Reachability by repeated search: configs have tens of jobs, not thousands.
    let reach = |from: usize| {
        let mut seen = vec![false; n];
        let mut stack = after[from].clone();
        while let Some(k) = stack.pop() {
            if !std::mem::replace(&mut seen[k], true) {
                stack.extend(&after[k]);
            }
        }
        seen
    };
    let reaches: Vec<Vec<bool>> = (0..n).map(reach).collect();
    let mut done = vec![false; n];
    let mut out = Vec::new();
    for i in 0..n {
        if done[i] || !reaches[i][i] {
            continue;
        }
        let group: Vec<usize> = (0..n).filter(|&k| reaches[i][k] && reaches[k][i]).collect();
        for &k in &group {
            done[k] = true;
        }
        out.push(group.into_iter().map(|k| jobs[k].name.clone()).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode::Decoder;
    use crate::config::parse_json5;

    fn config(text: &str) -> Config {
        Config::decode(&parse_json5(text).unwrap(), &mut Decoder::default()).unwrap()
    }

    #[test]
    fn finds_a_cycle_also_through_a_health_check() {
        let c = config(
            r#"{ jobs: [
            { name: "a", exec: "a", when: { source: "b", once: "exitSuccess" } },
            { name: "b", exec: "b", when: { source: "check.a", once: "exitSuccess" }, health: { exec: "x", interval: 1, ttl: 2 } },
            { name: "c", exec: "c", when: { source: "a", once: "healthy" } },
            { name: "d", exec: "d", when: { source: "d", once: "exitFailed" } } ] }"#,
        );
        assert_eq!(cycles(&c), [vec!["a", "b"], vec!["d"]]);
    }

    #[test]
    fn ordinary_orders_and_hooks_are_no_cycle() {
        let c = config(
            r#"{ jobs: [
            { name: "db", exec: "db" },
            { name: "app", exec: "app", when: { source: "db", once: "healthy" } },
            { name: "pre", exec: "p", when: { source: "app", once: "stopping" } },
            { name: "post", exec: "p", when: { source: "app", once: "stopped" } } ] }"#,
        );
        assert!(cycles(&c).is_empty());
    }
}
