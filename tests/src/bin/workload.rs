//! `workload`: a tiny service that misbehaves on command, run by cloudlet's supervisor tests and
//! benchmarks (exit codes, SIGTERM handling, orphans, fork bombs, memory and CPU hogs, HTTP
//! readiness, dependencies, daemons, log output). `workload --help` lists what it can do.
//!
//! This file owns start-up (options, SIGTERM, `--require`, `--pidfile`, `--notify`, `--print`)
//! and dispatches to the mode. It must never do anything it was not asked for on the command
//! line, and must never leave a zombie of its own (except for `forkbomb`'s children).

/// Writes one line to stderr, prefixed `workload: `. A write error is ignored: a broken log pipe
/// must not change what the workload does (`eprintln!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "workload: {}", format_args!($($arg)*));
    }};
}

#[path = "workload/args.rs"]
mod args;
#[path = "workload/burn.rs"]
mod burn;
#[path = "workload/procs.rs"]
mod procs;
#[path = "workload/serve.rs"]
mod serve;

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use std::{env, fs, io, thread};

use nix::sys::signal::{SigSet, Signal};

use crate::args::{Config, Mode, Parsed, Print, Stream, TermAction};

/// How long `--require` waits for each address to accept a connection.
const REQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect();
    let parsed = match args {
        Ok(args) => args::parse(args),
        Err(arg) => Err(format!("argument {arg:?} is not UTF-8")),
    };
    match parsed {
        Ok(Parsed::Help) => {
            let _ = io::stdout().write_all(args::HELP.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(config)) => match run(&config) {
            Ok(code) => code,
            Err(error) => {
                say!("{error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            say!("{error}\ntry `workload --help`");
            ExitCode::from(2)
        }
    }
}

/// Runs the start-up options in order, then the mode.
fn run(config: &Config) -> Result<ExitCode, String> {
    let pid = std::process::id();
    for line in announce(config, pid) {
        say!("{line}");
    }
    // Before any other thread exists, so that every thread inherits the blocked SIGTERM.
    handle_sigterm(config.term)?;
    for address in &config.requires {
        if let Err(error) = connect(address) {
            say!("dependency {address} not reachable: {error}");
            return Ok(ExitCode::from(3));
        }
    }
    if let Some(path) = &config.pidfile {
        write_pidfile(path, pid)?;
    }
    if let Some(socket) = &config.notify {
        let sent =
            UnixDatagram::unbound().and_then(|s| s.send_to(pid.to_string().as_bytes(), socket));
        if let Err(error) = sent {
            say!("--notify: sending to {}: {error}", socket.display());
        }
    }
    if let Some(length) = config.print_bytes {
        let mut line: Vec<u8> = (b'a'..=b'z').cycle().take(length).collect();
        line.push(b'\n');
        print_line(config.stream, &line)?;
    }
    if let Some(print) = config.print {
        print_lines(print, config.stream, pid)?;
    }
    match &config.mode {
        Mode::Sleep => sleep_forever(),
        Mode::Exit { code, after } => {
            thread::sleep(*after);
            Ok(ExitCode::from(*code))
        }
        Mode::Orphans {
            count,
            linger,
            then_exit,
        } => {
            let pids = procs::orphans(*count, *linger)?;
            let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
            say!("orphaned {} pids: {}", pids.len(), pids.join(" "));
            match then_exit {
                Some(code) => Ok(ExitCode::from(*code)),
                None => sleep_forever(),
            }
        }
        Mode::Forkbomb { max } => {
            let (forked, error) = procs::forkbomb(*max);
            match error {
                Some(error) => {
                    say!("forked {forked} children, then fork failed: {error}")
                }
                None => say!("forked {forked} children, reached --max"),
            }
            sleep_forever()
        }
        Mode::Hog { step, every } => burn::hog(*step, *every),
        Mode::Spin { threads } => burn::spin(*threads),
        Mode::Serve(options) => serve::serve(options).map(|never| match never {}),
        Mode::Daemon { pidfile, command } => {
            let daemon = procs::daemon(pidfile, command)?;
            say!("daemon pid {daemon}");
            sleep_forever()
        }
    }
}

/// One line per option, saying what it will do.
fn announce(config: &Config, pid: u32) -> Vec<String> {
    let mut lines = vec![format!("pid {pid}")];
    match config.term {
        TermAction::Die => {}
        TermAction::Ignore => {
            lines.push("--ignore-term: SIGTERM will be logged and ignored".into())
        }
        TermAction::Exit(code) => {
            lines.push(format!("--term-exit: on SIGTERM, exit with code {code}"))
        }
    }
    for address in &config.requires {
        lines.push(format!(
            "--require: exit 3 unless {address} accepts a connection"
        ));
    }
    if let Some(path) = &config.pidfile {
        lines.push(format!(
            "--pidfile: writing pid {pid} to {}",
            path.display()
        ));
    }
    if let Some(socket) = &config.notify {
        lines.push(format!(
            "--notify: sending pid {pid} to {}",
            socket.display()
        ));
    }
    let stream = match config.stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Both => "stdout and stderr",
    };
    if let Some(length) = config.print_bytes {
        lines.push(format!(
            "--print-bytes: printing a line of {length} bytes on {stream}"
        ));
    }
    if let Some(Print { count, interval }) = config.print {
        let count = if count == 0 {
            "endless".to_owned()
        } else {
            count.to_string()
        };
        lines.push(format!(
            "--print: printing {count} lines on {stream}, {interval:?} apart"
        ));
    }
    lines.push(match &config.mode {
        Mode::Sleep => "sleep: running until signalled".into(),
        Mode::Exit { code, after } => format!("exit: exiting with code {code} after {after:?}"),
        Mode::Orphans {
            count,
            linger,
            then_exit,
        } => format!(
            "orphans: orphaning {count} grandchildren that live {linger:?}, then {}",
            match then_exit {
                Some(code) => format!("exiting with code {code}"),
                None => "sleeping".into(),
            }
        ),
        Mode::Forkbomb { max: None } => {
            "forkbomb: forking sleeping children until fork fails".into()
        }
        Mode::Forkbomb { max: Some(max) } => {
            format!("forkbomb: forking sleeping children until fork fails or {max} were forked")
        }
        Mode::Hog { step, every } => {
            format!("hog: allocating and touching {step} bytes every {every:?} without limit")
        }
        Mode::Spin { threads } => format!("spin: burning CPU on {threads} thread(s)"),
        Mode::Serve(options) => format!(
            "serve: {} on {}:{}, 503 for {:?}, then `ok` on {}{}, `pong` on /ping",
            match &options.tls {
                Some(tls) => format!(
                    "HTTPS (certificate {}, key {})",
                    tls.cert.display(),
                    tls.key.display()
                ),
                None => "HTTP".into(),
            },
            options.bind,
            options.port,
            options.ready_after,
            options.path.as_deref().unwrap_or("any path"),
            match &options.ua {
                Some(ua) => format!(" (403 unless the User-Agent contains {ua:?})"),
                None => String::new(),
            }
        ),
        Mode::Daemon { pidfile, command } => format!(
            "daemon: starting a detached daemon that writes its pid to {} and {}",
            pidfile.display(),
            match command.is_empty() {
                true => "sleeps".into(),
                false => format!("runs {command:?}"),
            }
        ),
    });
    lines
}

/// Makes SIGTERM do what `action` says. For `Ignore` and `Exit`, SIGTERM is blocked in this
/// (still the only) thread, so in every later thread too, and a dedicated thread takes it with
/// sigwait: this needs no signal handler, so no `unsafe`. Children reset the mask (`procs`).
fn handle_sigterm(action: TermAction) -> Result<(), String> {
    if action == TermAction::Die {
        return Ok(());
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| format!("blocking SIGTERM: {e}"))?;
    let waiter = move || {
        loop {
            match set.wait() {
                Ok(_) => match action {
                    TermAction::Exit(code) => {
                        say!("SIGTERM received, exiting with code {code}");
                        exit_now(code.into());
                    }
                    _ => say!("SIGTERM received, ignoring it"),
                },
                Err(error) => say!("waiting for SIGTERM: {error}"),
            }
        }
    };
    thread::Builder::new()
        .name("sigterm".into())
        .spawn(waiter)
        .map(drop)
        .map_err(|e| format!("starting the SIGTERM thread: {e}"))
}

/// Connects to `HOST:PORT`, trying each address it resolves to.
fn connect(address: &str) -> io::Result<()> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, REQUIRE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Writes `pid` and a newline to `path` atomically (a temporary file renamed over it), so a
/// reader never sees a partial pid.
fn write_pidfile(path: &Path, pid: u32) -> Result<(), String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{pid}.tmp"));
    fs::write(&temporary, format!("{pid}\n"))
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(|e| format!("writing pid file {}: {e}", path.display()))
}

/// Prints `--print` lines: `line <i> pid <pid>`, from 1, `count` of them (0: forever).
fn print_lines(print: Print, stream: Stream, pid: u32) -> Result<(), String> {
    let mut number: u64 = 1;
    loop {
        print_line(stream, format!("line {number} pid {pid}\n").as_bytes())?;
        if number == print.count {
            return Ok(());
        }
        number += 1;
        thread::sleep(print.interval);
    }
}

/// Writes and flushes one line on the chosen stream(s).
fn print_line(stream: Stream, line: &[u8]) -> Result<(), String> {
    let write = |out: &mut dyn Write, name: &str| {
        out.write_all(line)
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to {name}: {e}"))
    };
    if matches!(stream, Stream::Stdout | Stream::Both) {
        write(&mut io::stdout().lock(), "stdout")?;
    }
    if matches!(stream, Stream::Stderr | Stream::Both) {
        write(&mut io::stderr().lock(), "stderr")?;
    }
    Ok(())
}

/// Runs until a signal ends the process.
fn sleep_forever() -> ! {
    loop {
        thread::park();
    }
}

/// Ends the process at once with `code`, from any thread or a forked child.
#[expect(
    clippy::exit,
    reason = "a SIGTERM thread and forked children have no main to return to"
)]
fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}
