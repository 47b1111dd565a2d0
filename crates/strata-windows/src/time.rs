//! Times in Windows layer tars: the PAX time strings of
//! `LIBARCHIVE.creationtime`, `atime`, `mtime` and `ctime`, kept verbatim
//! and parsed, and FILETIME (100 ns ticks since 1601) for display.
//!
//! Producers differ: go-winio writes `sec[.frac]` with trailing zeros
//! trimmed (Go's `formatPAXTime`), buildah `%d.%09d` (padded, not
//! trimmed), the old go-winio fork `%d.%09d` too, and BuildKit
//! `%d.%d` — nanoseconds *without* zero padding, so its `.5` means 5 ns
//! but reads as 0.5 s. None of these can be told apart from the text
//! alone, so the raw string is what a layer keeps and exports; the parsed
//! value follows the PAX rule (a decimal fraction), which is right for
//! every producer but BuildKit and only off by under a second there.

use serde::{Deserialize, Serialize};

/// Seconds between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
const FILETIME_EPOCH_OFFSET: i64 = 11_644_473_600;

/// A PAX time: the text as the archive has it, and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaxTime {
    /// The record's value, verbatim.
    pub raw: String,
    /// Whole seconds since the Unix epoch (floor).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl PaxTime {
    /// Parses a PAX time record value: optional sign, decimal seconds,
    /// optional fraction (digits past the ninth are dropped). `None` when
    /// the text is not a time at all.
    pub fn parse(raw: &str) -> Option<PaxTime> {
        let (neg, digits) = match raw.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, raw.strip_prefix('+').unwrap_or(raw)),
        };
        let (s, frac) = match digits.split_once('.') {
            Some((s, f)) => (s, f),
            None => (digits, ""),
        };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: i64 = s.parse().ok()?;
        let mut nanos = 0u32;
        for i in 0..9 {
            nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
        }
        let (secs, nanos) = if !neg {
            (secs, nanos)
        } else if nanos == 0 {
            (-secs, 0)
        } else {
            (-secs - 1, 1_000_000_000 - nanos)
        };
        Some(PaxTime {
            raw: raw.to_string(),
            secs,
            nanos,
        })
    }

    /// A time from its value, formatted as Go's `formatPAXTime` does
    /// (what go-winio writes): seconds, then the fraction with trailing
    /// zeros trimmed, if any.
    pub fn from_value(secs: i64, nanos: u32) -> PaxTime {
        PaxTime {
            raw: format_pax_time(secs, nanos),
            secs,
            nanos,
        }
    }

    /// The time as a Windows FILETIME (100 ns ticks since 1601), or `None`
    /// before 1601.
    pub fn to_filetime(&self) -> Option<u64> {
        let s = self.secs.checked_add(FILETIME_EPOCH_OFFSET)?;
        let ticks = i128::from(s) * 10_000_000 + i128::from(self.nanos / 100);
        u64::try_from(ticks).ok()
    }

    /// The time from a FILETIME.
    pub fn from_filetime(ft: u64) -> PaxTime {
        let secs = (ft / 10_000_000) as i64 - FILETIME_EPOCH_OFFSET;
        let nanos = (ft % 10_000_000) as u32 * 100;
        PaxTime::from_value(secs, nanos)
    }

    /// RFC 3339 in UTC with nanoseconds, for display.
    pub fn to_rfc3339(&self) -> String {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.nanos
        )
    }
}

/// Go's `formatPAXTime`: `sec[.frac]`, fraction trimmed of trailing zeros.
pub fn format_pax_time(secs: i64, nanos: u32) -> String {
    let (sign, s, n) = if secs < 0 && nanos != 0 {
        ("-", -(secs + 1), 1_000_000_000 - nanos)
    } else if secs < 0 {
        ("-", -secs, 0)
    } else {
        ("", secs, nanos)
    };
    if n == 0 {
        return format!("{sign}{s}");
    }
    let frac = format!("{n:09}");
    format!("{sign}{s}.{}", frac.trim_end_matches('0'))
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_forms() {
        let go = PaxTime::parse("1700000000.1234567").unwrap();
        assert_eq!((go.secs, go.nanos), (1_700_000_000, 123_456_700));
        let padded = PaxTime::parse("1700000000.000000500").unwrap();
        assert_eq!(padded.nanos, 500);
        // BuildKit's unpadded 5 ns: parsed by the PAX rule, kept verbatim.
        let bk = PaxTime::parse("1700000000.5").unwrap();
        assert_eq!((bk.nanos, bk.raw.as_str()), (500_000_000, "1700000000.5"));
        assert_eq!(
            PaxTime::parse("-1.25").map(|t| (t.secs, t.nanos)),
            Some((-2, 750_000_000))
        );
        for bad in ["", "x", "1.x", ".5", "1e9"] {
            assert!(PaxTime::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn go_format_and_filetime() {
        assert_eq!(format_pax_time(1, 500_000_000), "1.5");
        assert_eq!(format_pax_time(1, 0), "1");
        assert_eq!(format_pax_time(-2, 750_000_000), "-1.25");
        let t = PaxTime::from_value(0, 100);
        assert_eq!(t.to_filetime(), Some(116_444_736_000_000_001));
        assert_eq!(PaxTime::from_filetime(116_444_736_000_000_001), t);
        assert_eq!(
            PaxTime::from_value(1_700_000_000, 5).to_rfc3339(),
            "2023-11-14T22:13:20.000000005Z"
        );
    }
}
