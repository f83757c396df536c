//! pilot's command line as the real binary describes it: its subcommands and each one's flags,
//! read from `pilot --help` and `pilot SUB --help` (what a user sees, so what the man page and
//! the completions must agree with).

use super::{pilot, run_limited, text};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// One subcommand: its name, its flags (`-c`, `--config`, … without `-h`/`--help`, which
/// every command has) and the example lines of its help (`  pilot …` after "Example").
#[derive(Debug)]
pub struct Sub {
    pub name: String,
    pub flags: Vec<Flag>,
    pub examples: Vec<String>,
    /// Every value its options and arguments accept from a fixed list (`[possible values: …]`).
    pub values: BTreeSet<String>,
}

/// A flag's short and long spellings (`-c`, `--config`): either may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub short: Option<String>,
    pub long: Option<String>,
}

impl Flag {
    pub fn is(&self, spelling: &str) -> bool {
        self.short.as_deref() == Some(spelling) || self.long.as_deref() == Some(spelling)
    }

    pub fn name(&self) -> String {
        match (&self.short, &self.long) {
            (Some(s), Some(l)) => format!("{s}, {l}"),
            (Some(s), None) => s.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => String::new(),
        }
    }
}

/// `pilot ARGS --help`, which must succeed.
pub fn help(args: &[&str]) -> String {
    // Plain text whatever the caller's terminal settings say.
    let out = run_limited(
        Command::new(pilot()).args(args).arg("--help").env("NO_COLOR", "1").env_remove("CLICOLOR_FORCE"),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "pilot {args:?} --help: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The lines of a help section (`Commands:`, `Options:`), up to the next unindented line.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| l.trim_end() != title)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// The subcommand names of `pilot --help` (without clap's `help`).
pub fn subcommand_names() -> Vec<String> {
    let top = help(&[]);
    let names: Vec<String> = section(&top, "Commands:")
        .iter()
        // A command's line is indented by two; wrapped descriptions are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 10, "pilot --help lists its subcommands:\n{top}");
    names
}

/// The flags of one help text's `Options:` section.
pub fn flags(help: &str) -> Vec<Flag> {
    let mut flags = Vec::new();
    for line in section(help, "Options:") {
        let trimmed = line.trim_start();
        // An option's line is indented by at most 6 (`  -c, --config` / `      --grace`);
        // its description below by more.
        if !trimmed.starts_with('-') || line.len() - trimmed.len() > 6 {
            continue;
        }
        let mut flag = Flag { short: None, long: None };
        for word in trimmed.split_whitespace() {
            let word = word.trim_end_matches(',');
            let word = word.split(['=', '[', '<']).next().unwrap_or("");
            if let Some(long) = word.strip_prefix("--").filter(|l| !l.is_empty()) {
                flag.long = Some(format!("--{long}"));
            } else if word.len() == 2 && word.starts_with('-') {
                flag.short = Some(word.to_string());
            } else {
                break;
            }
        }
        if !flag.is("--help") && !flag.is("--version") {
            flags.push(flag);
        }
    }
    flags
}

/// The example command lines of a help text: lines `  pilot …` after `Example:`/`Examples:`,
/// without their trailing explanation (two or more spaces, then words).
pub fn examples(help: &str) -> Vec<String> {
    let mut lines = help.lines().skip_while(|l| !l.starts_with("Example"));
    lines.next();
    lines
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim_start().strip_prefix("pilot ").map(|rest| format!("pilot {rest}")))
        .map(|l| l.split("   ").next().unwrap_or_default().trim_end().to_string())
        .collect()
}

/// The fixed choices a help text lists (`[possible values: text, json]`), all together.
pub fn possible_values(help: &str) -> BTreeSet<String> {
    help.split("[possible values: ")
        .skip(1)
        .filter_map(|rest| rest.split(']').next())
        .flat_map(|list| list.split(", ").map(|v| v.trim().to_string()))
        .collect()
}

/// Every subcommand with its flags and examples.
pub fn subcommands() -> Vec<Sub> {
    subcommand_names()
        .into_iter()
        .map(|name| {
            let h = help(&[&name]);
            Sub { flags: flags(&h), examples: examples(&h), values: possible_values(&h), name }
        })
        .collect()
}

/// Flag spellings of a set, for messages.
pub fn spellings(flags: &[Flag]) -> BTreeSet<String> {
    flags.iter().map(Flag::name).collect()
}
