//! Command line of the `workload` test binary: parses `[OPTIONS...] MODE [ARGS]` into a `Config`,
//! and owns the help text and the duration, size and address syntax.
//!
//! Pure parsing: this module must never touch the OS (no IO, no signals, no processes).

use std::path::PathBuf;
use std::time::Duration;

/// The help text printed by `--help`.
pub const HELP: &str = "\
workload: a service that misbehaves on command (cloudlet's supervisor tests and benchmarks)

usage: workload [OPTIONS...] [MODE [ARGS] [MODE OPTIONS...]]

Options go before the mode (they may also follow it); mode options follow the mode.
Every option prints what it will do to stderr at start. All messages of workload itself go
to stderr; stdout only carries the output of --print and --print-bytes.

modes:
  sleep                         run until signalled (the default mode)
  exit CODE [--after DUR]       exit with CODE (0-255) after DUR (default 0)
  orphans N [--linger DUR] [--then-exit CODE]
                                fork a child that forks N grandchildren (they sleep DUR, default
                                100ms, then exit) and exits at once, orphaning them; reap it, print
                                `orphaned N pids: P1 P2 ...`, then sleep (or exit with CODE)
  forkbomb [--max N]            fork children that sleep until fork fails (or N were forked),
                                print the count and the fork error, then sleep
  hog [--step SIZE] [--every DUR]
                                allocate and touch SIZE (default 10Mi) every DUR (default 10ms),
                                without limit
  spin [--threads N]            burn CPU on N threads (default 1)
  serve --port P [--bind IP] [--ready-after DUR] [--path PATH] [--ua SUBSTRING]
        [--tls-cert FILE --tls-key FILE]
                                HTTP/1.1 on 127.0.0.1:P, or IP:P (only inside a test's own
                                network namespace) (0 picks a free port, printed as
                                `listening on ADDR`); 503 to every request until DUR has passed
                                (default 0); then 403 if --ua is set and the User-Agent does not
                                contain SUBSTRING, `pong` on /ping, `ok` on GET/HEAD of PATH
                                (default: any path), 404 on other paths. With --tls-cert and
                                --tls-key (both or neither): the same over HTTPS (TLS 1.2 or 1.3,
                                no plain HTTP) on the same port; --tls-cert is a PEM certificate
                                chain, leaf first, --tls-key its PEM private key (PKCS#8, SEC1 or
                                PKCS#1), both read once at start (a bad file: exit 1)
  daemon --pidfile PATH [-- CMD...]
                                double-fork a daemon in its own session (stdio on /dev/null, cwd /)
                                that writes its pid to PATH and sleeps (or execs CMD); print
                                `daemon pid P`, then sleep

options:
  --ignore-term                 ignore SIGTERM (each one is logged)
  --term-exit CODE              on SIGTERM, exit with CODE (default: die by the signal)
  --require HOST:PORT           before anything else, connect to HOST:PORT; if it fails, print
                                `dependency HOST:PORT not reachable` and exit 3 (repeatable)
  --pidfile PATH                write own pid to PATH at start (before the mode: `daemon --pidfile`
                                is the daemon's pid file)
  --notify SOCKET               send own pid (ASCII) to the unix datagram socket SOCKET at start
  --print N                     print N lines `line <i> pid <pid>` (0: forever), then run the mode
  --interval DUR                pause between --print lines (default 0)
  --stream stdout|stderr|both   where --print and --print-bytes write (default stdout)
  --print-bytes N               print one line of N bytes (plus the newline) before --print
  -h, --help                    print this help

DUR: Nms, Ns or Nm (or 0). SIZE: N, NKi, NMi, NGi (1024-based) or Nk, NM, NG (1000-based).
exit codes: CODE as asked, 1 on a runtime error, 2 on bad usage, 3 if a --require failed.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `--help`: print `HELP` and exit 0.
    Help,
    /// Run with this configuration.
    Run(Box<Config>),
}

/// Everything `workload` does, parsed and validated.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    /// What SIGTERM does.
    pub term: TermAction,
    /// `HOST:PORT`s that must accept a connection before anything else happens.
    pub requires: Vec<String>,
    /// Where to write the own pid at start.
    pub pidfile: Option<PathBuf>,
    /// A unix datagram socket to send the own pid to at start.
    pub notify: Option<PathBuf>,
    /// Numbered lines to print before the mode runs.
    pub print: Option<Print>,
    /// Length of the one long line to print before the mode runs.
    pub print_bytes: Option<usize>,
    /// Where `print` and `print_bytes` write.
    pub stream: Stream,
    /// The mode.
    pub mode: Mode,
}

/// What SIGTERM does to the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermAction {
    /// The default disposition: die by the signal.
    Die,
    /// Log it and keep running.
    Ignore,
    /// Exit with this code.
    Exit(u8),
}

/// `--print N --interval DUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print {
    /// How many lines; 0 means forever.
    pub count: u64,
    /// Pause between lines.
    pub interval: Duration,
}

/// Where printed lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Both, the same line on each.
    Both,
}

/// The mode: what the process does after the start-up options.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run until signalled.
    Sleep,
    /// Exit with `code` after `after`.
    Exit {
        /// The exit code.
        code: u8,
        /// The delay.
        after: Duration,
    },
    /// Orphan `count` grandchildren that live for `linger`.
    Orphans {
        /// How many grandchildren.
        count: u32,
        /// How long each grandchild lives.
        linger: Duration,
        /// Exit with this code once they are orphaned, instead of sleeping.
        then_exit: Option<u8>,
    },
    /// Fork until fork fails (or `max` children).
    Forkbomb {
        /// A cap, for running it by hand without a pids limit.
        max: Option<u64>,
    },
    /// Allocate and touch `step` bytes every `every`.
    Hog {
        /// Bytes per step.
        step: usize,
        /// Pause between steps.
        every: Duration,
    },
    /// Burn CPU on `threads` threads.
    Spin {
        /// How many threads.
        threads: usize,
    },
    /// Serve HTTP.
    Serve(Serve),
    /// Start a detached daemon.
    Daemon {
        /// Where the daemon writes its pid.
        pidfile: PathBuf,
        /// What the daemon execs; empty means it sleeps.
        command: Vec<String>,
    },
}

/// `serve` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    /// Port; 0 picks a free one.
    pub port: u16,
    /// The IPv4 address to listen on: 127.0.0.1 unless `--bind` (a test's own network
    /// namespace's address, for a node reached from another namespace).
    pub bind: std::net::Ipv4Addr,
    /// Every request gets 503 until this long after the listener is bound.
    pub ready_after: Duration,
    /// The one path answered with `ok`; `None` answers any path.
    pub path: Option<String>,
    /// A substring the User-Agent must contain, else 403.
    pub ua: Option<String>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<Tls>,
}

/// `serve --tls-cert FILE --tls-key FILE`: the files, not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Options that apply to any mode.
const GLOBAL_OPTIONS: &[&str] = &[
    "--ignore-term",
    "--term-exit",
    "--require",
    "--pidfile",
    "--notify",
    "--print",
    "--interval",
    "--stream",
    "--print-bytes",
];

/// Options that take no value.
const FLAGS: &[&str] = &["--ignore-term"];

/// The modes, their positional arguments and their own options.
const MODES: &[(&str, &[&str], &[&str])] = &[
    ("sleep", &[], &[]),
    ("exit", &["CODE"], &["--after"]),
    ("orphans", &["N"], &["--linger", "--then-exit"]),
    ("forkbomb", &[], &["--max"]),
    ("hog", &[], &["--step", "--every"]),
    ("spin", &[], &["--threads"]),
    (
        "serve",
        &[],
        &[
            "--port",
            "--bind",
            "--ready-after",
            "--path",
            "--ua",
            "--tls-cert",
            "--tls-key",
        ],
    ),
    ("daemon", &[], &["--pidfile"]),
];

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut global = Options::default();
    let mut local = Options::default();
    let mut mode: Option<(&str, &[&str], &[&str])> = None;
    let mut positionals = Vec::new();
    let mut command = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help);
        }
        if arg == "--" {
            if mode.is_some_and(|(name, _, _)| name == "daemon") {
                command.extend(args.by_ref());
                break;
            }
            return Err("`--` is only for `daemon --pidfile PATH -- CMD...`".into());
        }
        if arg.starts_with("--") {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let is_local = mode.is_some_and(|(_, _, options)| options.contains(&name.as_str()));
            let options = if is_local {
                &mut local
            } else if GLOBAL_OPTIONS.contains(&name.as_str()) {
                &mut global
            } else if let Some((owner, _, _)) = MODES.iter().find(|(_, _, o)| o.contains(&&*name)) {
                return Err(match mode {
                    Some((current, _, _)) => {
                        format!("{name} is an option of mode {owner}, not {current}")
                    }
                    None => format!("{name} is an option of mode {owner}: put it after the mode"),
                });
            } else {
                return Err(format!("unknown option {name}"));
            };
            let value = match (FLAGS.contains(&name.as_str()), inline) {
                (true, Some(_)) => return Err(format!("{name} takes no value")),
                (true, None) => String::new(),
                (false, inline) => match inline.or_else(|| args.next()) {
                    Some(value) => value,
                    None => return Err(format!("{name} needs a value")),
                },
            };
            options.push(name, value)?;
        } else if mode.is_none() {
            match MODES.iter().find(|(name, _, _)| *name == arg) {
                Some(found) => mode = Some(*found),
                None => return Err(format!("unknown mode {arg:?}")),
            }
        } else {
            positionals.push(arg);
        }
    }

    let (mode_name, wanted, _) = mode.unwrap_or(MODES[0]);
    if positionals.len() != wanted.len() {
        let usage = std::iter::once(mode_name)
            .chain(wanted.iter().copied())
            .collect::<Vec<_>>();
        return Err(format!(
            "mode {mode_name} takes {} argument(s), got {}: usage `{}`",
            wanted.len(),
            positionals.len(),
            usage.join(" ")
        ));
    }
    let mode = build_mode(mode_name, &positionals, &mut local, command)?;
    build_config(global, mode).map(|config| Parsed::Run(Box::new(config)))
}

/// Builds the mode from its name, positional arguments and options.
fn build_mode(
    name: &str,
    positionals: &[String],
    options: &mut Options,
    command: Vec<String>,
) -> Result<Mode, String> {
    let positional = |index: usize| {
        positionals
            .get(index)
            .map(String::as_str)
            .unwrap_or_default()
    };
    Ok(match name {
        "exit" => Mode::Exit {
            code: parse_code("exit CODE", positional(0))?,
            after: options.take("--after", parse_duration)?.unwrap_or_default(),
        },
        "orphans" => Mode::Orphans {
            count: parse_number("orphans N", positional(0))?,
            linger: options
                .take("--linger", parse_duration)?
                .unwrap_or(Duration::from_millis(100)),
            then_exit: options.take("--then-exit", |v| parse_code("", v))?,
        },
        "forkbomb" => Mode::Forkbomb {
            max: options.take("--max", |v| parse_number("", v))?,
        },
        "hog" => Mode::Hog {
            step: match options.take("--step", parse_size)? {
                Some(0) => return Err("--step: must be more than 0".into()),
                Some(step) => step,
                None => 10 << 20,
            },
            every: options
                .take("--every", parse_duration)?
                .unwrap_or(Duration::from_millis(10)),
        },
        "spin" => Mode::Spin {
            threads: match options.take("--threads", |v| parse_number("", v))? {
                Some(0) => return Err("--threads: must be at least 1".into()),
                Some(threads) => threads,
                None => 1,
            },
        },
        "serve" => Mode::Serve(Serve {
            port: match options.take("--port", |v| parse_number("", v))? {
                Some(port) => port,
                None => return Err("serve needs --port P".into()),
            },
            bind: options
                .take("--bind", |v| {
                    v.parse::<std::net::Ipv4Addr>()
                        .map_err(|_| format!("{v:?} is not an IPv4 address"))
                })?
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            ready_after: options
                .take("--ready-after", parse_duration)?
                .unwrap_or_default(),
            path: options.take("--path", |v| match v.starts_with('/') {
                true => Ok(v.to_owned()),
                false => Err(format!("{v:?} does not start with /")),
            })?,
            ua: options.take("--ua", |v| Ok(v.to_owned()))?,
            tls: match (
                options.take("--tls-cert", |v| Ok(PathBuf::from(v)))?,
                options.take("--tls-key", |v| Ok(PathBuf::from(v)))?,
            ) {
                (Some(cert), Some(key)) => Some(Tls { cert, key }),
                (None, None) => None,
                (Some(_), None) => return Err("--tls-cert needs --tls-key FILE".into()),
                (None, Some(_)) => return Err("--tls-key needs --tls-cert FILE".into()),
            },
        }),
        "daemon" => Mode::Daemon {
            pidfile: match options.take("--pidfile", |v| Ok(PathBuf::from(v)))? {
                Some(path) => path,
                None => return Err("daemon needs --pidfile PATH".into()),
            },
            command,
        },
        _ => Mode::Sleep,
    })
}

/// Builds the configuration from the global options and the mode.
fn build_config(mut options: Options, mode: Mode) -> Result<Config, String> {
    let ignore = options.take("--ignore-term", |_| Ok(()))?.is_some();
    let exit = options.take("--term-exit", |v| parse_code("", v))?;
    let term = match (ignore, exit) {
        (true, Some(_)) => return Err("--ignore-term and --term-exit exclude each other".into()),
        (true, None) => TermAction::Ignore,
        (false, Some(code)) => TermAction::Exit(code),
        (false, None) => TermAction::Die,
    };
    let requires = options.take_all("--require", |v| parse_host_port(v).map(|()| v.to_owned()))?;
    let pidfile = options.take("--pidfile", |v| Ok(PathBuf::from(v)))?;
    let notify = options.take("--notify", |v| Ok(PathBuf::from(v)))?;
    let count = options.take("--print", |v| parse_number("", v))?;
    let interval = options.take("--interval", parse_duration)?;
    let print = match (count, interval) {
        (Some(count), interval) => Some(Print {
            count,
            interval: interval.unwrap_or_default(),
        }),
        (None, Some(_)) => return Err("--interval: only with --print N".into()),
        (None, None) => None,
    };
    let print_bytes = options.take("--print-bytes", |v| parse_number("", v))?;
    let stream = options.take("--stream", parse_stream)?;
    if stream.is_some() && print.is_none() && print_bytes.is_none() {
        return Err("--stream: only with --print or --print-bytes".into());
    }
    let stream = stream.unwrap_or(Stream::Stdout);
    Ok(Config {
        term,
        requires,
        pidfile,
        notify,
        print,
        print_bytes,
        stream,
        mode,
    })
}

/// Options as given, name and raw value, in order.
#[derive(Debug, Default)]
struct Options(Vec<(String, String)>);

impl Options {
    /// Records an option; only `--require` may be given more than once.
    fn push(&mut self, name: String, value: String) -> Result<(), String> {
        if name != "--require" && self.0.iter().any(|(seen, _)| *seen == name) {
            return Err(format!("{name} given twice"));
        }
        self.0.push((name, value));
        Ok(())
    }

    /// Removes and parses the option `name`; errors name the option.
    fn take<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        Ok(self.take_all(name, parse)?.pop())
    }

    /// Removes and parses every occurrence of the option `name`; errors name the option.
    fn take_all<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let mut values = Vec::new();
        for (_, value) in self.0.iter().filter(|(seen, _)| seen == name) {
            values.push(parse(value).map_err(|e| format!("{name}: {e}"))?);
        }
        self.0.retain(|(seen, _)| seen != name);
        Ok(values)
    }
}

/// Parses `Nms`, `Ns`, `Nm` or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 200ms, 2s, 1m or 0)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// Parses a byte count: `N`, `NKi`/`NMi`/`NGi` (1024-based) or `Nk`/`NM`/`NG` (1000-based).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("invalid size {text:?} (expected e.g. 4096, 10Mi, 1G)");
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().map_err(|_| bad())?;
    let factor: usize = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// Parses an exit code, 0 to 255. `what` names the argument in the error, if it is positional.
fn parse_code(what: &str, text: &str) -> Result<u8, String> {
    let error = format!("invalid exit code {text:?} (expected 0 to 255)");
    text.parse().map_err(|_| prefix(what, error))
}

/// Parses a non-negative decimal number. `what` names the argument in the error, if positional.
fn parse_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    let error = format!("invalid number {text:?}");
    text.parse().map_err(|_| prefix(what, error))
}

/// Prefixes an error with the name of the positional argument, if any.
fn prefix(what: &str, error: String) -> String {
    if what.is_empty() {
        error
    } else {
        format!("{what}: {error}")
    }
}

/// Checks `HOST:PORT` (an IPv6 host in brackets); the host is resolved when it is used.
fn parse_host_port(text: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid address {text:?} ({why}; expected HOST:PORT)");
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>().map(drop).map_err(|_| bad("bad port"))
}

/// Parses `stdout`, `stderr` or `both`.
fn parse_stream(text: &str) -> Result<Stream, String> {
    match text {
        "stdout" => Ok(Stream::Stdout),
        "stderr" => Ok(Stream::Stderr),
        "both" => Ok(Stream::Both),
        _ => Err(format!(
            "invalid stream {text:?} (expected stdout, stderr or both)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Config, String> {
        match parse(line.split_whitespace().map(String::from))? {
            Parsed::Run(config) => Ok(*config),
            Parsed::Help => Err("help".into()),
        }
    }

    fn mode(line: &str) -> Mode {
        run(line).unwrap().mode
    }

    fn error(line: &str) -> String {
        run(line).unwrap_err()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "ms",
            "5",
            "1.5s",
            "-1s",
            "5h",
            "5 s",
            "s5",
            "18446744073709551615s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10Mi"), Ok(10 << 20));
        assert_eq!(parse_size("2Ki"), Ok(2048));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("3k"), Ok(3000));
        assert_eq!(parse_size("1M"), Ok(1_000_000));
        for bad in ["", "Mi", "10mi", "10 Mi", "1.5Mi", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn empty_command_line_sleeps_with_defaults() {
        let config = run("").unwrap();
        assert_eq!(
            config,
            Config {
                term: TermAction::Die,
                requires: vec![],
                pidfile: None,
                notify: None,
                print: None,
                print_bytes: None,
                stream: Stream::Stdout,
                mode: Mode::Sleep,
            }
        );
    }

    #[test]
    fn modes_with_arguments_and_defaults() {
        assert_eq!(
            mode("exit 3"),
            Mode::Exit {
                code: 3,
                after: Duration::ZERO
            }
        );
        assert_eq!(
            mode("exit 255 --after 200ms"),
            Mode::Exit {
                code: 255,
                after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            mode("orphans 3"),
            Mode::Orphans {
                count: 3,
                linger: Duration::from_millis(100),
                then_exit: None
            }
        );
        assert_eq!(
            mode("orphans 2 --linger=1s --then-exit 4"),
            Mode::Orphans {
                count: 2,
                linger: Duration::from_secs(1),
                then_exit: Some(4)
            }
        );
        assert_eq!(mode("forkbomb"), Mode::Forkbomb { max: None });
        assert_eq!(
            mode("hog"),
            Mode::Hog {
                step: 10 << 20,
                every: Duration::from_millis(10)
            }
        );
        assert_eq!(
            mode("hog --step 1Mi --every 0"),
            Mode::Hog {
                step: 1 << 20,
                every: Duration::ZERO
            }
        );
        assert_eq!(mode("spin --threads 2"), Mode::Spin { threads: 2 });
        assert_eq!(
            mode("serve --port 8080 --ready-after 2s --path /healthz --ua kube-probe"),
            Mode::Serve(Serve {
                port: 8080,
                bind: std::net::Ipv4Addr::LOCALHOST,
                ready_after: Duration::from_secs(2),
                path: Some("/healthz".into()),
                ua: Some("kube-probe".into()),
                tls: None,
            })
        );
        assert_eq!(
            mode("serve --port 0 --tls-key /k.pem --tls-cert=/c.pem"),
            Mode::Serve(Serve {
                port: 0,
                bind: std::net::Ipv4Addr::LOCALHOST,
                ready_after: Duration::ZERO,
                path: None,
                ua: None,
                tls: Some(Tls {
                    cert: "/c.pem".into(),
                    key: "/k.pem".into(),
                }),
            })
        );
        assert_eq!(
            mode("daemon --pidfile /tmp/d.pid -- sleep 100"),
            Mode::Daemon {
                pidfile: "/tmp/d.pid".into(),
                command: vec!["sleep".into(), "100".into()],
            }
        );
    }

    #[test]
    fn global_options_before_and_after_the_mode() {
        let config = run(
            "--ignore-term --require 127.0.0.1:1 --require [::1]:2 --notify /s --print 0 \
             --interval 10ms --stream both --print-bytes 70000 exit 1 --pidfile /p",
        )
        .unwrap();
        assert_eq!(config.term, TermAction::Ignore);
        assert_eq!(config.requires, ["127.0.0.1:1", "[::1]:2"]);
        assert_eq!(config.pidfile, Some("/p".into()));
        assert_eq!(config.notify, Some("/s".into()));
        assert_eq!(
            config.print,
            Some(Print {
                count: 0,
                interval: Duration::from_millis(10)
            })
        );
        assert_eq!(config.print_bytes, Some(70000));
        assert_eq!(config.stream, Stream::Both);
        assert_eq!(run("--term-exit 7").unwrap().term, TermAction::Exit(7));
    }

    #[test]
    fn daemon_pidfile_is_the_daemons_and_a_leading_one_is_own() {
        let config = run("--pidfile /own daemon --pidfile /daemon").unwrap();
        assert_eq!(config.pidfile, Some("/own".into()));
        assert_eq!(
            config.mode,
            Mode::Daemon {
                pidfile: "/daemon".into(),
                command: vec![]
            }
        );
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse(["exit".into(), "--help".into()]), Ok(Parsed::Help));
        assert_eq!(parse(["-h".into()]), Ok(Parsed::Help));
    }

    #[test]
    fn bad_usage_names_the_option() {
        let table = r#"
            exit                          => mode exit takes 1 argument(s), got 0: usage `exit CODE`
            exit 256                      => exit CODE: invalid exit code "256" (expected 0 to 255)
            exit 1 --after 5              => --after: invalid duration "5" (expected e.g. 200ms, 2s, 1m or 0)
            --after 1s exit 1             => --after is an option of mode exit: put it after the mode
            sleep --linger 1s             => --linger is an option of mode orphans, not sleep
            --bogus                       => unknown option --bogus
            dance                         => unknown mode "dance"
            sleep 5                       => mode sleep takes 0 argument(s), got 1: usage `sleep`
            --term-exit                   => --term-exit needs a value
            --ignore-term=1               => --ignore-term takes no value
            --ignore-term --term-exit 1   => --ignore-term and --term-exit exclude each other
            --print 1 --print 2           => --print given twice
            --interval 1s                 => --interval: only with --print N
            --stream both                 => --stream: only with --print or --print-bytes
            --print 1 --stream all        => --stream: invalid stream "all" (expected stdout, stderr or both)
            --require localhost           => --require: invalid address "localhost" (no port; expected HOST:PORT)
            --require :80                 => --require: invalid address ":80" (no host; expected HOST:PORT)
            serve                         => serve needs --port P
            serve --port 70000            => --port: invalid number "70000"
            serve --port 1 --path healthz => --path: "healthz" does not start with /
            serve --port 1 --tls-cert /c  => --tls-cert needs --tls-key FILE
            serve --port 1 --tls-key /k   => --tls-key needs --tls-cert FILE
            serve --port 1 --tls-cert     => --tls-cert needs a value
            --tls-cert /c serve --port 1  => --tls-cert is an option of mode serve: put it after the mode
            sleep --tls-key /k            => --tls-key is an option of mode serve, not sleep
            daemon                        => daemon needs --pidfile PATH
            sleep -- x                    => `--` is only for `daemon --pidfile PATH -- CMD...`
            hog --step 0                  => --step: must be more than 0
            spin --threads 0              => --threads: must be at least 1
            orphans -1                    => orphans N: invalid number "-1"
        "#;
        for row in table.lines().filter(|row| !row.trim().is_empty()) {
            let (line, want) = row.split_once(" => ").unwrap();
            assert_eq!(error(line), want.trim(), "for `{}`", line.trim());
        }
    }
}
