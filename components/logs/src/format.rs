//! The record line format (see the crate docs): encoding a record into bytes and decoding a line
//! back, plus how `ctl logs` prints a record. It owns the byte layout; it must never change it in
//! a way that makes existing files unreadable, and decoding must never fail on any input.

use std::fmt;
use std::io::Write as _;

use jiff::Timestamp;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The service's standard output.
    Stdout,
    /// The service's standard error.
    Stderr,
    /// A line the shim wrote itself (started, exited, dropped lines, ...).
    Event,
}

impl Stream {
    /// The word used in the file: `stdout`, `stderr` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Event => "event",
        }
    }

    fn from_bytes(word: &[u8]) -> Option<Stream> {
        match word {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            b"event" => Some(Stream::Event),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends one record, newline included, to `buf`. `text` must not contain `\n`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    ts: Timestamp,
    stream: Stream,
    run: u64,
    partial: bool,
    text: &[u8],
) {
    let flag = if partial { 'P' } else { 'F' };
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{ts:.9} {stream} {run} {flag} ");
    buf.extend_from_slice(text);
    buf.push(b'\n');
}

/// One record read back from a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the writer stamped the line.
    pub ts: Timestamp,
    /// Where the line came from.
    pub stream: Stream,
    /// The run of the service process the line belongs to.
    pub run: u64,
    /// True when this is a part of a longer line that continues in the next record.
    pub partial: bool,
    /// The text, decoded as UTF-8 with invalid bytes replaced by U+FFFD.
    pub text: String,
}

/// How [`LogRecord::display`] prints a record. None of them prints a trailing newline: print one
/// after each record, except after a `partial` one if the pieces of a long line should be joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-27T03:18:33.123Z stdout hello` (millisecond time, stream, text); also what
    /// `Display` prints.
    #[default]
    Short,
    /// Only the text, as the service printed it.
    Raw,
    /// Every field, as stored: `2026-11-27T03:18:33.123456789Z stdout 3 F hello`.
    Full,
}

impl LogRecord {
    /// Something that prints this record in the given format.
    pub fn display(&self, format: LogFormat) -> impl fmt::Display + '_ {
        Shown {
            record: self,
            format,
        }
    }
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(LogFormat::Short).fmt(f)
    }
}

struct Shown<'a> {
    record: &'a LogRecord,
    format: LogFormat,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.record;
        match self.format {
            LogFormat::Short => write!(f, "{:.3} {} {}", r.ts, r.stream, r.text),
            LogFormat::Raw => f.write_str(&r.text),
            LogFormat::Full => {
                let flag = if r.partial { 'P' } else { 'F' };
                write!(f, "{:.9} {} {} {flag} {}", r.ts, r.stream, r.run, r.text)
            }
        }
    }
}

/// Turns lines into records. It remembers the last good record so that an unreadable line can be
/// returned in its place (see the crate docs) instead of being dropped.
#[derive(Debug)]
pub(crate) struct Decoder {
    last_ts: Timestamp,
    last_run: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            last_ts: Timestamp::UNIX_EPOCH,
            last_run: 0,
        }
    }
}

/// The prefix of the text of a record standing for a line that could not be parsed.
pub(crate) const UNREADABLE: &str = "unreadable log record: ";

impl Decoder {
    /// Decodes one line given without its `\n`. An empty line is no record (`None`).
    pub(crate) fn decode(&mut self, line: &[u8]) -> Option<LogRecord> {
        if line.is_empty() {
            return None;
        }
        let record = match parse(line) {
            Some((ts, stream, run, partial, text)) => LogRecord {
                ts,
                stream,
                run,
                partial,
                text: String::from_utf8_lossy(text).into_owned(),
            },
            None => LogRecord {
                ts: self.last_ts,
                stream: Stream::Event,
                run: self.last_run,
                partial: false,
                text: format!("{UNREADABLE}{}", String::from_utf8_lossy(line)),
            },
        };
        self.last_ts = record.ts;
        self.last_run = record.run;
        Some(record)
    }
}

fn parse(line: &[u8]) -> Option<(Timestamp, Stream, u64, bool, &[u8])> {
    let mut fields = line.splitn(5, |&b| b == b' ');
    let ts = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = Stream::from_bytes(fields.next()?)?;
    let run = fields.next()?;
    if run.is_empty() || !run.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let run = std::str::from_utf8(run).ok()?.parse().ok()?;
    let partial = match fields.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    // "... F" without the space before an empty text is accepted too.
    let text = fields.next().unwrap_or_default();
    Some((ts, stream, run, partial, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        "2026-11-27T03:18:33.123456789Z".parse().unwrap()
    }

    fn check(text: &[u8], partial: bool, expect: &[u8]) {
        let mut buf = Vec::new();
        encode(&mut buf, ts(), Stream::Stderr, 7, partial, text);
        assert_eq!(buf, expect);
        let record = Decoder::default().decode(&buf[..buf.len() - 1]).unwrap();
        let want = LogRecord {
            ts: ts(),
            stream: Stream::Stderr,
            run: 7,
            partial,
            text: String::from_utf8_lossy(text).into_owned(),
        };
        assert_eq!(record, want);
    }

    #[test]
    fn encodes_the_documented_layout_and_decodes_it_back() {
        check(
            b"hello world",
            false,
            b"2026-11-27T03:18:33.123456789Z stderr 7 F hello world\n",
        );
        check(b"", false, b"2026-11-27T03:18:33.123456789Z stderr 7 F \n");
        check(
            b"part",
            true,
            b"2026-11-27T03:18:33.123456789Z stderr 7 P part\n",
        );
        check(
            b"crlf\r",
            false,
            b"2026-11-27T03:18:33.123456789Z stderr 7 F crlf\r\n",
        );
        check(
            b"  lead",
            false,
            b"2026-11-27T03:18:33.123456789Z stderr 7 F   lead\n",
        );
        check(
            b"bad \xff\xfe",
            false,
            b"2026-11-27T03:18:33.123456789Z stderr 7 F bad \xff\xfe\n",
        );
    }

    #[test]
    fn whole_seconds_still_get_nine_digits() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            "2026-01-02T03:04:05Z".parse().unwrap(),
            Stream::Event,
            1,
            false,
            b"x",
        );
        assert_eq!(buf, b"2026-01-02T03:04:05.000000000Z event 1 F x\n");
    }

    #[test]
    fn unreadable_lines_become_events_of_the_record_before() {
        let mut d = Decoder::default();
        let good = d
            .decode(b"2026-11-27T03:18:33.123456789Z stdout 4 F ok")
            .unwrap();
        for bad in [
            &b"garbage"[..],
            b"2026-11-27T03:18:33Z stdout",
            b"2026-11-27T03:18:33Z stdout x F t",
            b"2026-11-27T03:18:33Z stdout -1 F t",
            b"2026-11-27T03:18:33Z stdin 1 F t",
            b"2026-11-27T03:18:33Z stdout 1 X t",
            b"not-a-time stdout 1 F t",
        ] {
            let r = d.decode(bad).unwrap();
            assert_eq!(
                (r.ts, r.run, r.stream, r.partial),
                (good.ts, 4, Stream::Event, false)
            );
            assert_eq!(
                r.text,
                format!("{UNREADABLE}{}", String::from_utf8_lossy(bad))
            );
        }
        assert_eq!(d.decode(b""), None);
        let r = d.decode(b"2026-11-27T03:18:33Z stdout 5 F").unwrap();
        assert_eq!((r.run, r.text.as_str()), (5, ""));
    }

    #[test]
    fn display_formats() {
        let r = LogRecord {
            ts: ts(),
            stream: Stream::Stdout,
            run: 3,
            partial: true,
            text: "hello".into(),
        };
        assert_eq!(r.to_string(), "2026-11-27T03:18:33.123Z stdout hello");
        assert_eq!(r.display(LogFormat::Raw).to_string(), "hello");
        assert_eq!(
            r.display(LogFormat::Full).to_string(),
            "2026-11-27T03:18:33.123456789Z stdout 3 P hello"
        );
    }
}
