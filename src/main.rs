//! pilot: the Autopilot pattern for Apptainer containers. One function per subcommand.

use clap::{Parser, Subcommand};
use pilot::check::{self, Format};
use pilot::{config, init, logging, supervisor};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pilot", version, about = "Container init and ContainerPilot-compatible supervisor for Apptainer containers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the container's init: supervise the config's jobs and/or CMD.
    ///
    /// With `-- CMD ARGS...`, CMD is the main payload: when it exits, pilot stops every
    /// job and exits with its status (its code, or 128+signal). With no config at all,
    /// pilot is a minimal init for CMD: it reaps zombies and forwards signals.
    Run {
        /// Config file (else $PILOT_CONFIG, else $CONTAINERPILOT).
        #[arg(short, long, value_name = "FILE")]
        config: Option<String>,
        /// Upper bound on the whole shutdown (stop jobs, run post-stop jobs), e.g. 30s.
        /// Keep it below HTCondor's vacate time.
        #[arg(long, env = "PILOT_GRACE", default_value = "30s", value_parser = parse_duration)]
        grace: Duration,
        /// The main payload and its arguments.
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Verify a config offline: parse, render, validate, and find every program on PATH.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    CheckConfig {
        #[arg(short, long, value_name = "FILE")]
        config: Option<String>,
        /// Extra environment for rendering (KEY=VALUE lines), as the container will have it.
        #[arg(long, value_name = "FILE")]
        env: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Treat warnings (such as a program missing from PATH) as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Print the config after template rendering (ContainerPilot's -template).
    Template {
        #[arg(short, long, value_name = "FILE")]
        config: Option<String>,
        #[arg(long, value_name = "FILE")]
        env: Option<String>,
    },
    /// Print pilot's version.
    Version,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s)
}

fn main() -> ExitCode {
    // First thing, before any thread exists: every thread inherits the blocked mask, and
    // only the signal thread ever receives a signal.
    let inherited = init::signals::block_all();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config, grace, cmd } => run(config.as_deref(), grace, cmd, inherited),
        Command::CheckConfig { config, env, format, strict } => check::check_config(config.as_deref(), env.as_deref(), format, strict),
        Command::Template { config, env } => check::template(config.as_deref(), env.as_deref()),
        Command::Version => {
            println!("pilot {}", env!("CARGO_PKG_VERSION"));
            0
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn run(config_flag: Option<&str>, grace: Duration, cmd: Vec<String>, inherited: init::signals::Inherited) -> i32 {
    let main = (!cmd.is_empty()).then_some(cmd);
    let config = match config::locate(config_flag) {
        Some(path) => {
            let loaded = config::load_with(path, &config::environment(&[]), Some(&pilot::consul::kv::fetch));
            for d in &loaded.diags {
                eprintln!("pilot: {d}");
            }
            match (loaded.is_valid(), loaded.config) {
                (true, Some(c)) => c,
                _ => return 1,
            }
        }
        None if main.is_some() => config::Config::embedded_default(),
        None => {
            eprintln!("pilot: nothing to run: give a config with -c FILE (or $PILOT_CONFIG), or a command after --");
            return 2;
        }
    };
    if let Err(e) = logging::init(&config.logging) {
        eprintln!("pilot: {e}");
        return 1;
    }
    supervisor::run(&config, main, grace, inherited)
}
