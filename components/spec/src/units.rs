//! Value types with units: [`Duration`], [`Quantity`] (bytes) and [`CpuQuantity`] (millicores).
//!
//! Each keeps the text it was written as, so re-serialising gives the same YAML, and exposes the
//! parsed value. This module only parses strings and numbers; it never reads files and knows
//! nothing about where in a manifest a value sits (callers add the field path).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SpecError;

const DURATION_EXPECTED: &str = "expected a number with a unit (ms, s, m, h), e.g. 30s";
const QUANTITY_EXPECTED: &str =
    "expected bytes with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 64Mi";
const CPU_EXPECTED: &str = "expected cores (e.g. 0.5, 2) or millicores (e.g. 100m)";

/// The longest duration cloudlet reads anywhere (manifests, the cluster YAML, the network file,
/// flags): ten years. Fields with a tighter meaning have their own maximum in validation; this one
/// guarantees that a deadline computed from any of them (`Instant::now() + d`, a timestamp plus
/// `d`) can never overflow and panic.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(87_600 * 3600);

/// Parses a duration such as `100ms`, `30s`, `5m`, `1h` or `1m30s` (a unit is required), at most
/// [`MAX_DURATION`].
///
/// This is the parser behind [`Duration`]; the CLI uses it for flags like `--since 5m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, SpecError> {
    duration_from_str(text).map_err(SpecError::InvalidValue)
}

/// How a value was written in the manifest, so that it serialises back the same way.
#[derive(Clone, Debug, PartialEq)]
enum Written {
    Text(String),
    Int(u64),
    Float(f64),
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Written::Text(text) => f.write_str(text),
            Written::Int(n) => write!(f, "{n}"),
            Written::Float(x) => write!(f, "{x}"),
        }
    }
}

impl Serialize for Written {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Written::Text(text) => serializer.serialize_str(text),
            Written::Int(n) => serializer.serialize_u64(*n),
            Written::Float(x) => serializer.serialize_f64(*x),
        }
    }
}

/// Reads a string or a number and runs `parse` on its text; the error message names the value.
struct WrittenVisitor<T> {
    /// What the value is, for messages: "duration", "quantity", "cpu".
    what: &'static str,
    /// Whether bare numbers are acceptable at all (durations need a unit).
    numbers: bool,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> WrittenVisitor<T> {
    fn number<E: de::Error>(&self, written: Written) -> Result<(Written, T), E> {
        let text = written.to_string();
        if !self.numbers {
            return Err(E::custom(format!(
                "invalid {} {text}: {DURATION_EXPECTED}",
                self.what
            )));
        }
        let value = (self.parse)(&text).map_err(E::custom)?;
        Ok((written, value))
    }
}

impl<'de, T> Visitor<'de> for WrittenVisitor<T> {
    type Value = (Written, T);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {}", self.what)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let value = (self.parse)(text).map_err(E::custom)?;
        Ok((Written::Text(text.to_owned()), value))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        self.number(Written::Int(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        match u64::try_from(n) {
            Ok(n) => self.number(Written::Int(n)),
            // Negative: let the text parser produce the usual message.
            Err(_) => self.visit_str(&n.to_string()),
        }
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Self::Value, E> {
        self.number(Written::Float(x))
    }
}

/// A span of time written with units (`100ms`, `30s`, `5m`, `1h`, `1m30s`, `1.5s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

impl Duration {
    /// Parses `text`; the error message is the one shown to users (without a field path).
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let value = parse_duration(text)?;
        Ok(Self {
            text: text.to_owned(),
            value,
        })
    }

    /// The parsed value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (written, value) = deserializer.deserialize_any(WrittenVisitor {
            what: "duration",
            numbers: false,
            parse: duration_from_str,
        })?;
        Ok(Self {
            text: written.to_string(),
            value,
        })
    }
}

/// An amount of bytes, Kubernetes style: `1048576`, `64Mi`, `1.5Gi`, `500M`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    written: Written,
    bytes: u64,
}

impl Quantity {
    /// Parses `text`; the error message is the one shown to users (without a field path).
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let bytes = bytes_from_str(text).map_err(SpecError::InvalidValue)?;
        Ok(Self {
            written: Written::Text(text.to_owned()),
            bytes,
        })
    }

    /// The number of bytes (fractions of a byte are rounded up).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.written.fmt(f)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (written, bytes) = deserializer.deserialize_any(WrittenVisitor {
            what: "quantity",
            numbers: true,
            parse: bytes_from_str,
        })?;
        Ok(Self { written, bytes })
    }
}

/// An amount of CPU: `100m` (millicores), `0.5` or `2` (cores); always more than zero.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuQuantity {
    written: Written,
    millis: u64,
}

impl CpuQuantity {
    /// Parses `text`; the error message is the one shown to users (without a field path).
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let millis = millicores_from_str(text).map_err(SpecError::InvalidValue)?;
        Ok(Self {
            written: Written::Text(text.to_owned()),
            millis,
        })
    }

    /// The amount in millicores (1000 = one core).
    pub fn millicores(&self) -> u64 {
        self.millis
    }
}

impl fmt::Display for CpuQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.written.fmt(f)
    }
}

impl Serialize for CpuQuantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CpuQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (written, millis) = deserializer.deserialize_any(WrittenVisitor {
            what: "cpu",
            numbers: true,
            parse: millicores_from_str,
        })?;
        Ok(Self { written, millis })
    }
}

/// A non-negative decimal number split into its digits: `1.25` is `mantissa 125, scale 2`.
struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    /// Reads `digits[.digits]` from the start of `text`; returns the number and the rest.
    fn split(text: &str) -> Option<(Decimal, &str)> {
        let end = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, rest) = text.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() || (number.contains('.') && frac.is_empty()) {
            return None;
        }
        let mut mantissa: u128 = 0;
        for c in int.bytes().chain(frac.bytes()) {
            let digit = u128::from(c.checked_sub(b'0')?);
            if digit > 9 {
                return None;
            }
            mantissa = mantissa.checked_mul(10)?.checked_add(digit)?;
        }
        let scale = u32::try_from(frac.len()).ok()?;
        Some((Decimal { mantissa, scale }, rest))
    }

    /// `self * unit`, rounded up, or `None` on overflow.
    fn times_ceil(&self, unit: u128) -> Option<u128> {
        let divisor = 10u128.checked_pow(self.scale)?;
        Some(self.mantissa.checked_mul(unit)?.div_ceil(divisor))
    }

    /// `self * unit` when it is a whole number, or `None` (overflow or a remainder).
    fn times_exact(&self, unit: u128) -> Option<u128> {
        let divisor = 10u128.checked_pow(self.scale)?;
        let product = self.mantissa.checked_mul(unit)?;
        (product % divisor == 0).then(|| product / divisor)
    }
}

fn duration_from_str(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration {text:?}: {DURATION_EXPECTED}");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, after) = Decimal::split(rest).ok_or_else(invalid)?;
        let (unit, after) = [
            ("ms", 1_000_000u128),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ]
        .into_iter()
        .find_map(|(suffix, unit)| after.strip_prefix(suffix).map(|after| (unit, after)))
        .ok_or_else(invalid)?;
        let part = number
            .times_ceil(unit)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = after;
    }
    if nanos > MAX_DURATION.as_nanos() {
        return Err(format!(
            "invalid duration {text:?}: too large (at most 87600h, ten years)"
        ));
    }
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("invalid duration {text:?}: too large"))?;
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| invalid())?;
    Ok(std::time::Duration::new(secs, subsec))
}

fn bytes_from_str(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid quantity {text:?}: {QUANTITY_EXPECTED}");
    let (number, suffix) = Decimal::split(text).ok_or_else(invalid)?;
    let unit: u128 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(invalid()),
    };
    number
        .times_ceil(unit)
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| format!("invalid quantity {text:?}: too large"))
}

fn millicores_from_str(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid cpu {text:?}: {CPU_EXPECTED}");
    let (number, suffix) = Decimal::split(text).ok_or_else(invalid)?;
    let unit = match suffix {
        "" => 1000,
        "m" => 1,
        _ => return Err(invalid()),
    };
    let millis = number.times_exact(unit).ok_or_else(|| {
        format!("invalid cpu {text:?}: the smallest unit is 1m (a thousandth of a core)")
    })?;
    match u64::try_from(millis) {
        Ok(0) => Err(format!("invalid cpu {text:?}: must be more than 0")),
        Ok(millis) => Ok(millis),
        Err(_) => Err(format!("invalid cpu {text:?}: too large")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("100ms", StdDuration::from_millis(100)),
            ("30s", StdDuration::from_secs(30)),
            ("5m", StdDuration::from_secs(300)),
            ("1h", StdDuration::from_secs(3600)),
            ("1m30s", StdDuration::from_secs(90)),
            ("1h0m1s", StdDuration::from_secs(3601)),
            ("1.5s", StdDuration::from_millis(1500)),
            ("0s", StdDuration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
        for text in [
            "", "30", "30x", "s", "1.s", ".5s", "-1s", "1 s", "250us", "1d", "5m3",
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "invalid duration {text:?}: expected a number with a unit (ms, s, m, h), e.g. 30s"
                )
            );
        }
        assert!(
            parse_duration("99999999999999999999999999999h")
                .unwrap_err()
                .to_string()
                .ends_with("too large")
        );
        // Ten years is the most: a deadline computed from any duration cannot overflow.
        assert_eq!(parse_duration("87600h").unwrap(), MAX_DURATION);
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
        for text in ["87600h1ms", "2600000000000000h", "5256001m"] {
            assert_eq!(
                parse_duration(text).unwrap_err().to_string(),
                format!("invalid duration {text:?}: too large (at most 87600h, ten years)")
            );
        }
    }

    #[test]
    fn quantities() {
        let ok = [
            ("0", 0),
            ("1048576", 1_048_576),
            ("4Ki", 4096),
            ("64Mi", 64 << 20),
            ("1.5Gi", 3 << 29),
            ("1Ti", 1 << 40),
            ("1k", 1000),
            ("1K", 1000),
            ("500M", 500_000_000),
            ("2G", 2_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1.0001", 2),
        ];
        for (text, want) in ok {
            assert_eq!(Quantity::parse(text).unwrap().bytes(), want, "{text}");
        }
        for text in ["", "12Zi", "1.5.5Gi", "Mi", "-1", "64mi", "64 Mi", "100m"] {
            let err = Quantity::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid quantity {text:?}: expected bytes")),
                "{err}"
            );
        }
        assert!(
            Quantity::parse("99999999999Ti")
                .unwrap_err()
                .to_string()
                .ends_with("too large")
        );
    }

    #[test]
    fn cpus() {
        let ok = [
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("1.25", 1250),
            ("0.001", 1),
        ];
        for (text, want) in ok {
            assert_eq!(
                CpuQuantity::parse(text).unwrap().millicores(),
                want,
                "{text}"
            );
        }
        let bad = [
            ("", "expected cores"),
            ("abc", "expected cores"),
            ("1x", "expected cores"),
            ("0", "must be more than 0"),
            ("0m", "must be more than 0"),
            ("0.0005", "smallest unit is 1m"),
            ("0.5m", "smallest unit is 1m"),
        ];
        for (text, want) in bad {
            let err = CpuQuantity::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid cpu {text:?}: ")), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    /// YAML numbers are accepted for quantities and cpus, and keep their form when written back.
    #[test]
    fn numbers_round_trip() {
        let q: Quantity = serde_json::from_str("1048576").unwrap();
        assert_eq!(q.bytes(), 1_048_576);
        assert_eq!(serde_json::to_string(&q).unwrap(), "1048576");
        let cpu: CpuQuantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(cpu.millicores(), 500);
        assert_eq!(serde_json::to_string(&cpu).unwrap(), "0.5");
        let cpu: CpuQuantity = serde_json::from_str("\"250m\"").unwrap();
        assert_eq!(serde_json::to_string(&cpu).unwrap(), "\"250m\"");
        let err = serde_json::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid duration 30: expected a number with a unit"),
            "{err}"
        );
        let err = serde_json::from_str::<Quantity>("-5")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid quantity \"-5\""), "{err}");
    }
}
