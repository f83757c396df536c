//! pilot: the Autopilot pattern for Apptainer containers. One function per subcommand.

use clap::{CommandFactory, Parser, Subcommand, ValueHint};
use pilot::check::{self, Format};
use pilot::control::client;
use pilot::{config, htcondor, init, logging, supervisor};
use std::process::ExitCode;
use std::time::Duration;

/// A fixed arena run by dlmalloc, then musl's malloc: mallocng alone maps and unmaps pages
/// around nearly every burst of allocations, a quarter of a start's CPU (init/alloc.rs).
#[global_allocator]
static ALLOCATOR: init::alloc::Allocator = init::alloc::Allocator::new();

#[derive(Parser)]
#[command(
    name = "pilot",
    version,
    about = "Container init and ContainerPilot-compatible supervisor for Apptainer containers",
    after_help = "Examples:\n  pilot run -c /etc/pilot/pilot.json5 -- /payload.sh ARGS   run a payload with a config's jobs\n  \
                  pilot check-config -c /etc/pilot/pilot.json5 --strict     verify a config before shipping it\n  \
                  pilot status                                              what a running pilot supervises"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the container's init: supervise the config's jobs and/or CMD.
    ///
    /// With `[--] CMD ARGS...`, CMD is the main payload: when it exits, pilot stops every
    /// job and exits with its status (its code, or 128+signal). With no config at all,
    /// pilot is a minimal init for CMD: it reaps zombies and forwards signals.
    #[command(
        after_help = "Examples:\n  pilot run -c /etc/pilot/pilot.json5 -- /payload.sh ARGS   the config's jobs, then the payload\n  \
                            pilot run --grace 20s -- python3 job.py                   a minimal init for one payload"
    )]
    Run(RunArgs),
    /// Verify a config offline: parse, render, validate, and find every program on PATH.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    #[command(after_help = "Example:\n  pilot check-config -c /etc/pilot/pilot.json5 --env job.env --strict")]
    CheckConfig {
        /// Config file (else $PILOT_CONFIG, else $CONTAINERPILOT).
        #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        config: Option<String>,
        /// Extra environment for rendering (KEY=VALUE lines), as the container will have it.
        #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        env: Option<String>,
        /// Output format: text lines, or one JSON document for tools.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Treat warnings (such as a program missing from PATH) as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Print the config after template rendering (ContainerPilot's -template).
    #[command(after_help = "Example:\n  pilot template -c /etc/pilot/pilot.json5 --env job.env")]
    Template {
        /// Config file (else $PILOT_CONFIG, else $CONTAINERPILOT).
        #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        config: Option<String>,
        /// Extra environment for rendering (KEY=VALUE lines), as the container will have it.
        #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        env: Option<String>,
    },
    /// Print pilot's version.
    #[command(after_help = "Example:\n  pilot version")]
    Version,
    /// Ask a running pilot to re-read its config (an invalid one is refused; the old keeps running).
    #[command(after_help = "Example:\n  pilot reload --socket \"$_CONDOR_SCRATCH_DIR/pilot.sock\"")]
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Turn maintenance mode on or off: health checks pause, services are marked in Consul.
    #[command(after_help = "Example:\n  pilot maintenance enable")]
    Maintenance {
        #[arg(value_enum)]
        action: OnOff,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Set environment variables for the jobs a running pilot starts from now on.
    #[command(after_help = "Example:\n  pilot putenv SITE_NAME=CERN-PROD LOG_LEVEL=debug")]
    Putenv {
        /// NAME=VALUE pairs.
        #[arg(required = true, value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Set telemetry metrics of a running pilot (counters add, gauges set, others observe).
    #[command(after_help = "Example:\n  pilot putmetric app_jobs_done_total=2 app_queue_depth=7")]
    Putmetric {
        /// name=value pairs, names as exported (namespace_subsystem_name).
        #[arg(required = true, value_name = "NAME=VALUE")]
        metrics: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check that a pilot answers on its control socket.
    #[command(after_help = "Example:\n  pilot ping --socket /tmp/pilot-1a2b3c4d.sock")]
    Ping {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show a running pilot's jobs: state, pid, restarts, health, Consul registration.
    #[command(after_help = "Example:\n  pilot status --json")]
    Status {
        /// Print the JSON of GET /v3/status.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the completion script of a shell (bash, zsh or fish) for pilot's subcommands and options.
    #[command(after_help = "Examples:\n  \
                            pilot completions bash > /usr/share/bash-completion/completions/pilot\n  \
                            pilot completions zsh > /usr/share/zsh/vendor-completions/_pilot\n  \
                            pilot completions fish > /usr/share/fish/vendor_completions.d/pilot.fish")]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `pilot run`'s arguments, a struct of their own so that [`parse`] can match them against the
/// `run` subcommand alone.
#[derive(clap::Args)]
struct RunArgs {
    /// Config file (else $PILOT_CONFIG, else $CONTAINERPILOT).
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    config: Option<String>,
    /// Upper bound on the whole shutdown (stop jobs, pre/post-stop jobs, Consul
    /// deregistration, leftover processes), e.g. 30s: when it is over, everything left
    /// is SIGKILLed and pilot exits within about a second. Also bounds a reload's wait
    /// for the old jobs. Default: 30s, or inside an HTCondor job 90% of its vacate time
    /// (from the job and machine ads), so pilot is done before HTCondor's SIGKILL.
    #[arg(long, env = "PILOT_GRACE", value_parser = parse_duration)]
    grace: Option<Duration>,
    /// The main payload and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD",
        value_hint = ValueHint::CommandWithArguments
    )]
    cmd: Vec<String>,
}

/// The shells `pilot completions` writes for: those of the images pilot goes into. (clap_complete
/// also knows elvish and PowerShell; leaving them out keeps their generators out of the binary.)
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
struct SocketArg {
    /// The control socket (else $PILOT_SOCKET, else the running pilot's default socket).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    socket: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    Enable,
    Disable,
}

fn usage(e: &str) -> i32 {
    eprintln!("pilot: {e}");
    2
}

/// One request to a running pilot: its answer on stdout (or stderr on failure); exit 0 for
/// 2xx, 1 otherwise.
fn control(socket: SocketArg, method: &str, path: &str, body: Option<serde_json::Value>) -> i32 {
    match client::socket(socket.socket.as_deref()).and_then(|s| client::call(&s, method, path, body.as_ref())) {
        Ok((code, text)) if (200..300).contains(&code) => {
            print!("{text}");
            0
        }
        Ok((code, text)) => {
            eprint!("pilot: {code}: {text}");
            1
        }
        Err(e) => {
            eprintln!("pilot: {e}");
            1
        }
    }
}

fn status(socket: SocketArg, json: bool) -> i32 {
    let answer = client::socket(socket.socket.as_deref()).and_then(|s| client::call(&s, "GET", "/v3/status", None));
    match answer {
        Ok((200, text)) if json => {
            print!("{text}");
            0
        }
        Ok((200, text)) => match serde_json::from_str::<pilot::status::Status>(&text) {
            Ok(v) => {
                print!("{}", client::status_table(&v));
                0
            }
            Err(e) => usage(&format!("unexpected answer: {e}")) - 1,
        },
        Ok((code, text)) => {
            eprint!("pilot: {code}: {text}");
            1
        }
        Err(e) => {
            eprintln!("pilot: {e}");
            1
        }
    }
}

/// The completion script, generated from the same clap definition that parses the command line
/// (so it cannot drift from it), written in one piece: a closed pipe (`| head`) is an error
/// message and exit 1, never a panic halfway through the script.
fn completions(shell: Shell) -> i32 {
    use clap_complete::shells;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut cmd, "pilot", &mut script),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut cmd, "pilot", &mut script),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut cmd, "pilot", &mut script),
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pilot: writing the completion script: {e}");
            1
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s)
}

/// As the interpreter of an image's runscript (`#!/usr/local/bin/pilot run`, for images
/// without a shell), the kernel runs `pilot run /.singularity.d/runscript ARGS...`: drop the
/// script's path, leaving `pilot run ARGS...` as `exec pilot run "$@"` would give.
fn runscript_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_script = |a: &std::ffi::OsString| {
        let p = std::path::Path::new(a);
        p.ends_with(".singularity.d/runscript") || p.ends_with(".singularity.d/startscript")
    };
    if args.len() >= 3 && args[1] == "run" && is_script(&args[2]) {
        args.remove(2);
    }
    args
}

/// The command line. `pilot run ...` (every container's start) is first matched against a
/// command of the `run` subcommand alone: building the whole tree, with every subcommand's
/// arguments and help text, is most of what clap costs at start (docs/runtime-footprint.md,
/// "Start-up"). Anything that is not a plain success there (an error, `--help`) is parsed
/// again against the whole tree, so every message and exit status is the full parser's.
fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    use clap::{Args, FromArgMatches};
    if args.get(1).is_some_and(|a| a == "run") {
        let run = RunArgs::augment_args(clap::Command::new("run"));
        let matches = clap::Command::new("pilot").subcommand(run).try_get_matches_from(&args);
        if let Some(run) = matches.ok().and_then(|m| RunArgs::from_arg_matches(m.subcommand_matches("run")?).ok()) {
            return Cli { command: Command::Run(run) };
        }
    }
    Cli::parse_from(args)
}

fn main() -> ExitCode {
    let cli = parse(runscript_args(std::env::args_os().collect()));
    let code = match cli.command {
        Command::Run(RunArgs { config, grace, cmd }) => {
            // Before any thread exists: every thread inherits the blocked mask, and only
            // the signal thread ever receives a signal.
            let inherited = init::signals::block_all();
            let code = run(config.as_deref(), grace, cmd, inherited);
            // Bounded: a log reader that stopped reading must not keep pilot from exiting.
            logging::flush(logging::EXIT_FLUSH);
            code
        }
        Command::Reload { socket } => control(socket, "POST", "/v3/reload", None),
        Command::Maintenance { action, socket } => {
            let path = match action {
                OnOff::Enable => "/v3/maintenance/enable",
                OnOff::Disable => "/v3/maintenance/disable",
            };
            control(socket, "POST", path, None)
        }
        Command::Putenv { vars, socket } => match client::pairs(&vars, false) {
            Ok(body) => control(socket, "POST", "/v3/environ", Some(body)),
            Err(e) => usage(&e),
        },
        Command::Putmetric { metrics, socket } => match client::pairs(&metrics, true) {
            Ok(body) => control(socket, "POST", "/v3/metric", Some(body)),
            Err(e) => usage(&e),
        },
        Command::Ping { socket } => control(socket, "GET", "/v3/ping", None),
        Command::Status { json, socket } => status(socket, json),
        Command::CheckConfig { config, env, format, strict } => {
            check::check_config(config.as_deref(), env.as_deref(), format, strict)
        }
        Command::Template { config, env } => check::template(config.as_deref(), env.as_deref()),
        Command::Completions { shell } => completions(shell),
        Command::Version => {
            println!("pilot {}", env!("CARGO_PKG_VERSION"));
            0
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Without --grace: 30 s, or inside HTCondor 90% of the vacate time (at least 1 s less).
fn default_grace(vacate: Option<Duration>) -> Duration {
    match vacate {
        Some(v) => v.saturating_sub((v / 10).max(Duration::from_secs(1))),
        None => Duration::from_secs(30),
    }
}

fn run(
    config_flag: Option<&str>,
    grace: Option<Duration>,
    cmd: Vec<String>,
    inherited: init::signals::Inherited,
) -> i32 {
    if cmd.first().is_some_and(|c| c.is_empty()) {
        eprintln!("pilot: empty command");
        return 127;
    }
    let main = (!cmd.is_empty()).then_some(cmd);
    let path = config::locate(config_flag);
    // Inside an HTCondor job: the job and machine ads feed templates and Consul meta.
    let (ads, ad_problems) = htcondor::Ads::load(&|k| std::env::var(k).ok());
    let context =
        supervisor::Context { meta: ads.meta(), template_vars: ads.template_vars(), stop_signals: ads.stop_signals() };
    let grace = grace.unwrap_or_else(|| default_grace(ads.vacate_time()));
    let config = match path.clone() {
        Some(path) => {
            let loaded = config::load_with(
                path.clone(),
                &config::environment(&context.template_vars),
                Some(&pilot::consul::kv::fetch),
            );
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
    // The payload's job is called `main`: a config job of that name would be ambiguous.
    if let (Some(_), Some(file)) = (&main, &path)
        && let Err(e) = supervisor::machine::check_payload_name(&config)
    {
        eprintln!("pilot: {}: {e}", file.display());
        return 1;
    }
    if let Err(e) = logging::init(&config.logging) {
        eprintln!("pilot: {e}");
        return 1;
    }
    for p in ad_problems {
        log::warn!("HTCondor ad left out: {p}");
    }
    if let Some(v) = ads.vacate_time() {
        log::debug!("HTCondor vacate time {v:?}: shutdown grace {grace:?}");
    }
    supervisor::run(&config, path, &context, main, grace, inherited)
}
