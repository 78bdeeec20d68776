//! Durations and counts as the file writes them ("500ms", "30m", "100k", or a bare integer),
//! their parsers, and `format_duration`, the one way xlb writes a duration back.

use std::time::Duration;

use serde::Deserialize;

/// A duration as written: integer seconds or a string such as "500ms", "2s", "30m", "1h", "1d".
/// Checked in the validation step, so that the error names the service and the field.
#[derive(Clone)]
pub(super) enum Dur {
    Secs(u64),
    Text(String),
}

/// A count as written: an integer or a string such as "100k" / "1m".
#[derive(Clone)]
pub(super) enum Size {
    Num(u64),
    Text(String),
}

/// `Deserialize` for an integer-or-string value, with an error that says what is expected
/// (serde's untagged enums only say "data did not match any variant").
macro_rules! int_or_text {
    ($ty:ident, $int:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        Ok($ty::$int(v))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        u64::try_from(v)
                            .map($ty::$int)
                            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::Text(v.to_owned()))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
int_or_text!(
    Dur,
    Secs,
    "a duration: whole seconds, or a string such as \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\""
);
int_or_text!(
    Size,
    Num,
    "a count: an integer, or a string such as \"100k\" or \"1m\""
);

impl Dur {
    /// The duration, or why the text is not one (for `Place::err`).
    pub(super) fn duration(&self) -> Result<Duration, String> {
        match self {
            Dur::Secs(s) => Ok(Duration::from_secs(*s)),
            Dur::Text(t) => parse_duration(t),
        }
    }
}

impl Size {
    /// The count: an integer, or a string with an optional `k` (1000) or `m` (1 000 000)
    /// suffix; else why it is not one (for `Place::err`).
    pub(super) fn count(&self) -> Result<u64, String> {
        match self {
            Size::Num(n) => Ok(*n),
            Size::Text(t) => {
                let t = t.trim();
                let (num, mult) = match t.char_indices().last() {
                    Some((i, 'k' | 'K')) => (&t[..i], 1_000),
                    Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
                    _ => (t, 1),
                };
                let bad = || format!("\"{t}\" is not a size; write a number, or e.g. \"100k\" or \"1m\"");
                num.trim_end()
                    .parse::<u64>()
                    .map_err(|_| bad())?
                    .checked_mul(mult)
                    .ok_or_else(bad)
            }
        }
    }
}

/// Parse a duration: an integer (seconds) with an optional unit `ms`, `s`, `m` (minutes),
/// `h` or `d`, e.g. "500ms", "2s", "30m", "1h", "1d", "7". "0s" is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration; write e.g. \"500ms\", \"2s\", \"30m\", \"1h\" or \"1d\"")
    })?;
    let ms_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => {
            return Err(format!(
                "\"{s}\" has an unknown unit \"{u}\"; use ms, s, m (minutes), h or d"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{s}\" is too long a duration"))
}

/// The shortest exact form `parse_duration` reads back: "30m", "2s", "1500ms", "0s".
/// A duration finer than whole milliseconds (a measured latency; no configured value is) is
/// shown in microseconds, "320us", which `parse_duration` does not read.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(86_400_000) && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(Size::Text("1m".into()).count().unwrap(), 1_000_000);
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_micros(320)), "320us");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(parse_duration("2 s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(
            parse_duration("").is_err() && parse_duration("1.5s").is_err() && parse_duration("-1s").is_err()
        );
        assert!(
            parse_duration("99999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
        for ms in [
            0, 1, 500, 1000, 90_000, 1_800_000, 3_600_000, 86_400_000, 86_401_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
        assert_eq!(Size::Text("100k".into()).count().unwrap(), 100_000);
        assert_eq!(Size::Text("42".into()).count().unwrap(), 42);
        assert!(
            Size::Text("k".into()).count().is_err()
                && Size::Text("99999999999999999m".into()).count().is_err()
        );
    }
}
