//! The stop order of a config's jobs, as the machine drains them: a job stops after every
//! job that started after it (whose `when.source` is the job or its `check.<job>`). Jobs
//! that wait for each other form a cycle: pilot stops them together (see
//! `Machine::stop_ready_jobs`), but a config with one is most likely a mistake, so
//! `check-config` can report it with [`cycles`].

use crate::config::{Config, Trigger};
use crate::events::{Code, Source};
use std::collections::HashMap;

/// Post-stop style jobs (on `stopping`, `stopped` or `shutdown`) are never stopped by a
/// drain and so never wait for anything.
fn is_hook(trigger: &Trigger) -> bool {
    matches!(trigger, Trigger::Event { code: Code::Stopping | Code::Stopped | Code::Shutdown, .. })
}

/// Every set of jobs that wait for each other to stop, each as job names in config order
/// (strongly connected components of more than one job, or a job that depends on itself).
/// Linear in the number of jobs (a job has one `when.source`): it runs on every reload.
pub fn cycles(config: &Config) -> Vec<Vec<String>> {
    let jobs = &config.jobs;
    let n = jobs.len();
    let index: HashMap<&str, usize> = jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
    // after[i]: the jobs that started after job i (and so must stop before it); before[k]
    // the reverse.
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, job) in jobs.iter().enumerate() {
        let Trigger::Event { source, .. } = &job.trigger else { continue };
        if is_hook(&job.trigger) {
            continue;
        }
        let source = Source::from(source.as_str());
        let on = index.get(source.as_str()).or_else(|| source.check_of().and_then(|j| index.get(j)));
        if let Some(&i) = on {
            after[i].push(k);
            before[k].push(i);
        }
    }
    // Kosaraju: finishing order on `after`, then components on `before` in reverse order.
    let mut finished = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((v, next)) = stack.pop() {
            if let Some(&w) = after[v].get(next) {
                stack.push((v, next + 1));
                if !std::mem::replace(&mut seen[w], true) {
                    stack.push((w, 0));
                }
            } else {
                finished.push(v);
            }
        }
    }
    let mut component = vec![usize::MAX; n];
    let mut out = Vec::new();
    for &root in finished.iter().rev() {
        if component[root] != usize::MAX {
            continue;
        }
        let mut members = vec![root];
        component[root] = root;
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            for &w in &before[v] {
                if component[w] == usize::MAX {
                    component[w] = root;
                    members.push(w);
                    stack.push(w);
                }
            }
        }
        if members.len() > 1 || after[root].contains(&root) {
            members.sort_unstable();
            out.push(members);
        }
    }
    out.sort();
    out.into_iter().map(|m| m.into_iter().map(|k| jobs[k].name.clone()).collect()).collect()
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
    fn ten_thousand_jobs_in_one_cycle_are_found_quickly() {
        let n = 10_000;
        let jobs: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{ name: "j{i}", exec: "x", when: {{ source: "j{}", once: "exitSuccess" }} }}"#, (i + 1) % n)
            })
            .collect();
        let c = config(&format!("{{ jobs: [{}] }}", jobs.join(",")));
        let found = cycles(&c);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n);
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
