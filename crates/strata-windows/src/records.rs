//! The Windows PAX records of one entry (go-winio `backuptar`), typed.
//!
//! A layer keeps every record of every entry verbatim and in order — the
//! ones named here, the standard times, and any it does not know — so
//! nothing is lost; [`WinRecords`] is the typed view of the ones that mean
//! something on Windows, parsed strictly so that a malformed value is
//! refused at import with the entry named, as Windows would refuse it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::time::PaxTime;

/// `FILE_ATTRIBUTE_*` bits, decimal.
pub const FILEATTR: &str = "MSWINDOWS.fileattr";
/// The self-relative security descriptor, base64.
pub const RAWSD: &str = "MSWINDOWS.rawsd";
/// The security descriptor as SDDL (go-winio before 2016).
pub const SD: &str = "MSWINDOWS.sd";
/// Present (`"1"`) on junctions (mount-point reparse points).
pub const MOUNTPOINT: &str = "MSWINDOWS.mountpoint";
/// Prefix of extended attributes: `MSWINDOWS.xattr.<EA name>`, base64.
pub const XATTR_PREFIX: &str = "MSWINDOWS.xattr.";
/// The creation time, a PAX time.
pub const CREATIONTIME: &str = "LIBARCHIVE.creationtime";

/// Why a record's value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {key}: {reason}")]
pub struct RecordError {
    /// The record's key.
    pub key: String,
    /// What is wrong with its value.
    pub reason: String,
}

/// The typed view of an entry's Windows records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WinRecords {
    /// `MSWINDOWS.fileattr`.
    pub fileattr: Option<u32>,
    /// `MSWINDOWS.rawsd`, decoded.
    pub rawsd: Option<Vec<u8>>,
    /// `MSWINDOWS.sd` (legacy SDDL), as written.
    pub sddl: Option<String>,
    /// `MSWINDOWS.mountpoint` present: a junction.
    pub mountpoint: bool,
    /// Extended attributes (`MSWINDOWS.xattr.*`), in record order,
    /// decoded.
    pub eas: Vec<(String, Vec<u8>)>,
    /// `LIBARCHIVE.creationtime`.
    pub creation_time: Option<PaxTime>,
    /// `atime`, when a record carries it.
    pub atime: Option<PaxTime>,
    /// `mtime`, when a record carries it.
    pub mtime: Option<PaxTime>,
    /// `ctime` (the Windows ChangeTime), when a record carries it.
    pub ctime: Option<PaxTime>,
}

impl WinRecords {
    /// Parses the records of one entry (later records of the same key
    /// win, as in tar).
    pub fn parse(records: &[(Vec<u8>, Vec<u8>)]) -> Result<WinRecords, RecordError> {
        let mut r = WinRecords::default();
        for (k, v) in records {
            let Ok(key) = std::str::from_utf8(k) else {
                continue;
            };
            let bad = |reason: &str| RecordError {
                key: key.to_string(),
                reason: format!("{reason} (value {:?})", String::from_utf8_lossy(v)),
            };
            let text = || std::str::from_utf8(v).map_err(|_| bad("not UTF-8"));
            let time = || -> Result<Option<PaxTime>, RecordError> {
                let t = text()?;
                PaxTime::parse(t)
                    .map(Some)
                    .ok_or_else(|| bad("not a PAX time"))
            };
            let b64 = || BASE64.decode(v).map_err(|_| bad("not base64"));
            match key {
                FILEATTR => {
                    r.fileattr = Some(text()?.parse().map_err(|_| bad("not a decimal u32"))?)
                }
                RAWSD => r.rawsd = Some(b64()?),
                SD => r.sddl = Some(text()?.to_string()),
                MOUNTPOINT => r.mountpoint = true,
                CREATIONTIME => r.creation_time = time()?,
                "atime" if !v.is_empty() => r.atime = time()?,
                "mtime" if !v.is_empty() => r.mtime = time()?,
                "ctime" if !v.is_empty() => r.ctime = time()?,
                _ => {
                    if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                        if name.is_empty() || name.len() > 255 {
                            return Err(bad("EA name must be 1 to 255 bytes"));
                        }
                        let value = b64()?;
                        if value.len() > 65535 {
                            return Err(bad("EA value longer than 65535 bytes"));
                        }
                        match r.eas.iter_mut().find(|(n, _)| n == name) {
                            Some(slot) => slot.1 = value,
                            None => r.eas.push((name.to_string(), value)),
                        }
                    }
                }
            }
        }
        Ok(r)
    }

    /// The records these values stand for, in go-winio's key order
    /// (`LIBARCHIVE.*`, then `MSWINDOWS.*` sorted), without the standard
    /// times (the tar writer emits `mtime` itself; `atime`/`ctime` are
    /// added by the caller where wanted).
    pub fn to_records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(t) = &self.creation_time {
            out.push((CREATIONTIME.into(), t.raw.clone().into_bytes()));
        }
        if let Some(a) = self.fileattr {
            out.push((FILEATTR.into(), a.to_string().into_bytes()));
        }
        if self.mountpoint {
            out.push((MOUNTPOINT.into(), b"1".to_vec()));
        }
        if let Some(sd) = &self.rawsd {
            out.push((RAWSD.into(), BASE64.encode(sd).into_bytes()));
        }
        if let Some(sd) = &self.sddl {
            out.push((SD.into(), sd.clone().into_bytes()));
        }
        for (n, v) in &self.eas {
            out.push((
                format!("{XATTR_PREFIX}{n}").into_bytes(),
                BASE64.encode(v).into_bytes(),
            ));
        }
        out
    }
}

/// True for keys this crate (or the tar codec) gives a meaning to.
pub fn is_known_key(k: &[u8]) -> bool {
    let known: &[&[u8]] = &[
        FILEATTR.as_bytes(),
        RAWSD.as_bytes(),
        SD.as_bytes(),
        MOUNTPOINT.as_bytes(),
        CREATIONTIME.as_bytes(),
        b"atime",
        b"mtime",
        b"ctime",
        b"path",
        b"linkpath",
        b"size",
        b"uid",
        b"gid",
        b"uname",
        b"gname",
    ];
    known.contains(&k) || k.starts_with(XATTR_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn typed_view_and_back() {
        let recs = vec![
            rec(CREATIONTIME, "1700000000.1234567"),
            rec(FILEATTR, "32"),
            rec(
                RAWSD,
                "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==",
            ),
            rec("MSWINDOWS.xattr.$KERNEL.PURGE.X", "AQID"),
            rec("atime", "1700000001.5"),
            rec("VENDOR.unknown", "kept"),
        ];
        let w = WinRecords::parse(&recs).unwrap();
        assert_eq!(w.fileattr, Some(32));
        assert_eq!(w.rawsd.as_ref().map(Vec::len), Some(52));
        assert_eq!(w.eas, vec![("$KERNEL.PURGE.X".to_string(), vec![1, 2, 3])]);
        assert_eq!(w.atime.as_ref().map(|t| t.nanos), Some(500_000_000));
        let back = w.to_records();
        assert_eq!(back[0], recs[0]);
        assert_eq!(back[1], recs[1]);
        assert!(is_known_key(b"MSWINDOWS.xattr.a") && !is_known_key(b"VENDOR.unknown"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (k, v) in [
            (FILEATTR, "x"),
            (RAWSD, "!!"),
            (CREATIONTIME, "yesterday"),
            ("MSWINDOWS.xattr.", "AA=="),
        ] {
            let e = WinRecords::parse(&[rec(k, v)]).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
