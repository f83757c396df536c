//! The man page is part of the interface: it must lint clean, and its SYNOPSIS must list
//! exactly the subcommands and flags the binary has (read from `pilot --help` and each
//! `pilot SUB --help`), so the two cannot drift. Every subcommand's `--help` ends with an
//! example that uses only that subcommand's flags.

mod common;
use common::cli::{self, Sub};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/pilot.1");

#[test]
fn man_page_lints_clean() {
    let out = Command::new("mandoc")
        .args(["-Tlint", "-Wwarning", PAGE])
        .output()
        .expect("this test needs `mandoc`: run scripts/setup-test-deps.sh (Debian package mandoc)");
    let lint = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && lint.trim().is_empty(), "mandoc -Tlint:\n{lint}");
}

/// One subcommand in the man page's SYNOPSIS: its flags and the fixed values it shows.
#[derive(Debug, Default)]
struct Synopsis {
    flags: BTreeSet<String>,
    values: BTreeSet<String>,
}

/// The man page's SYNOPSIS: each subcommand with the flags and values its lines list. A
/// synopsis entry starts at `.Nm`; its first `.Cm` line names the subcommand(s) (`.Cm reload |
/// ping`); every `Fl x` on its lines is a flag (`Fl c` is `-c`, `Fl -grace` is `--grace`; `Fl -`
/// alone is the `--` before CMD), and the words after any other `Cm` are fixed values
/// (`.Cm enable | disable`, `Fl -format Cm text | json`).
fn synopsis(page: &str) -> BTreeMap<String, Synopsis> {
    let mut subs: BTreeMap<String, Synopsis> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut named = false;
    let lines = page.lines().skip_while(|l| *l != ".Sh SYNOPSIS").skip(1).take_while(|l| !l.starts_with(".Sh "));
    for line in lines {
        if line == ".Nm" {
            current.clear();
            named = false;
            continue;
        }
        if !named && let Some(names) = line.strip_prefix(".Cm ") {
            current = names.split('|').map(|n| n.trim().to_string()).collect();
            for n in &current {
                subs.entry(n.clone()).or_default();
            }
            named = true;
            continue;
        }
        let words: Vec<&str> = line.trim_start_matches('.').split_whitespace().collect();
        for pair in words.windows(2).filter(|w| w[0] == "Fl" && w[1] != "-") {
            for n in &current {
                subs.entry(n.clone()).or_default().flags.insert(format!("-{}", pair[1]));
            }
        }
        // A macro is a capitalised word of two or three letters (Ar, Fl, Op, Ns …).
        let is_macro = |w: &str| w.len() <= 3 && w.starts_with(|c: char| c.is_ascii_uppercase());
        for (i, _) in words.iter().enumerate().filter(|(_, w)| **w == "Cm") {
            let values = words[i + 1..].iter().take_while(|w| !is_macro(w)).filter(|w| **w != "|");
            for v in values {
                for n in &current {
                    subs.entry(n.clone()).or_default().values.insert(v.to_string());
                }
            }
        }
    }
    subs
}

/// Everything on which the man page and the CLI disagree, one line each.
fn drift(page: &str, cli: &[Sub]) -> Vec<String> {
    let man = synopsis(page);
    let mut problems = Vec::new();
    for sub in cli {
        let Some(documented) = man.get(&sub.name) else {
            problems.push(format!("`pilot {}` is missing from the man page's SYNOPSIS", sub.name));
            continue;
        };
        if documented.values != sub.values {
            problems.push(format!(
                "`pilot {}` accepts the values {:?}, the man page's SYNOPSIS shows {:?}",
                sub.name, sub.values, documented.values
            ));
        }
        let documented = &documented.flags;
        for flag in &sub.flags {
            if !documented.iter().any(|d| flag.is(d)) {
                problems.push(format!("`pilot {} {}` is missing from the man page's SYNOPSIS", sub.name, flag.name()));
            }
        }
        for d in documented {
            if !sub.flags.iter().any(|f| f.is(d)) {
                problems
                    .push(format!("the man page's SYNOPSIS has `pilot {} {d}`, which pilot does not have", sub.name));
            }
        }
        // Described, not only listed: `.Cm NAME` or `.Ss pilot NAME` outside the SYNOPSIS.
        let body: String = page.lines().skip_while(|l| *l != ".Sh DESCRIPTION").map(|l| format!("{l}\n")).collect();
        if !body.contains(&format!("Cm {}", sub.name)) && !body.contains(&format!(".Ss pilot {}\n", sub.name)) {
            problems.push(format!("the man page lists `pilot {}` but describes it nowhere", sub.name));
        }
    }
    for name in man.keys() {
        if !cli.iter().any(|s| &s.name == name) {
            problems.push(format!("the man page's SYNOPSIS has `pilot {name}`, which pilot does not have"));
        }
    }
    problems
}

#[test]
fn man_page_and_cli_have_the_same_subcommands_and_flags() {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let cli = cli::subcommands();
    let man = synopsis(&page);
    assert!(
        man.len() >= 10 && man["run"].flags.contains("--grace") && man["maintenance"].values.contains("enable"),
        "the SYNOPSIS parser reads the page: {man:?}"
    );
    let problems = drift(&page, &cli);
    assert!(problems.is_empty(), "man/pilot.1 and the CLI disagree:\n{}", problems.join("\n"));
}

/// The check itself catches each kind of drift (so the test above can fail).
#[test]
fn drift_is_caught_in_either_direction() {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let cli = cli::subcommands();
    let strict_gone = page.replace(".Op Fl -strict\n", "");
    assert_ne!(strict_gone, page);
    assert!(drift(&strict_gone, &cli).iter().any(|p| p.contains("check-config --strict")), "a flag the page lacks");
    let bogus_flag = page.replace(".Op Fl -json\n", ".Op Fl -json\n.Op Fl -bogus\n");
    assert!(drift(&bogus_flag, &cli).iter().any(|p| p.contains("status --bogus")), "a flag pilot lacks");
    let no_template = page.replace(".Cm template\n", ".Cm templates\n");
    let problems = drift(&no_template, &cli);
    assert!(problems.iter().any(|p| p.contains("`pilot template` is missing")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("`pilot templates`, which pilot does not have")), "{problems:?}");
    let mut more = cli::subcommands();
    more.push(Sub { name: "frobnicate".into(), flags: Vec::new(), examples: Vec::new(), values: Default::default() });
    let yaml = page.replace(".Op Fl -format Cm text | json\n", ".Op Fl -format Cm text | json | yaml\n");
    assert_ne!(yaml, page);
    assert!(drift(&yaml, &cli).iter().any(|p| p.contains("check-config` accepts the values")), "a value pilot lacks");
    assert!(
        drift(&page, &more).iter().any(|p| p.contains("`pilot frobnicate` is missing")),
        "a subcommand the page lacks"
    );
}

#[test]
fn every_subcommand_help_has_an_example_using_its_own_flags() {
    for sub in cli::subcommands() {
        assert!(!sub.examples.is_empty(), "`pilot {} --help` has no example", sub.name);
        for example in &sub.examples {
            let words: Vec<&str> = example.split_whitespace().collect();
            assert_eq!(words.get(1), Some(&sub.name.as_str()), "`pilot {} --help`: example `{example}`", sub.name);
            for word in words.iter().take_while(|w| **w != "--").filter(|w| w.starts_with('-')) {
                let flag = word.split('=').next().unwrap();
                assert!(
                    sub.flags.iter().any(|f| f.is(flag)),
                    "`pilot {} --help`: example `{example}` uses {flag}, which is not one of {:?}",
                    sub.name,
                    cli::spellings(&sub.flags)
                );
            }
        }
    }
    let top = cli::examples(&cli::help(&[]));
    let names = cli::subcommand_names();
    assert!(!top.is_empty(), "`pilot --help` has examples");
    for example in top {
        let sub = example.split_whitespace().nth(1).unwrap_or_default().to_string();
        assert!(names.contains(&sub), "`pilot --help`: example `{example}` names no subcommand");
    }
}
