//! Storage options (`--storage-opt key=value`) as Docker passes them.
//! Parsing is pure so it is tested table-style without a filesystem.

use std::collections::BTreeMap;

use crate::DriverError;

/// Options for creating a layer, as Docker's `CreateOpts`.
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    /// SELinux mount label; accepted and passed through, unused by vfs.
    pub mount_label: String,
    /// Driver-specific storage options (keys are case-insensitive).
    pub storage_opt: BTreeMap<String, String>,
}

/// What a driver understood from `storage_opt`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageOpts {
    /// Size limit for a read-write layer, in bytes.
    pub size: Option<u64>,
}

/// Parses `opts`, refusing unknown keys and bad values with an error that
/// names the option and the layer.
pub fn parse_storage_opts(
    id: &str,
    opts: &BTreeMap<String, String>,
) -> Result<StorageOpts, DriverError> {
    let mut out = StorageOpts::default();
    for (key, value) in opts {
        match key.to_ascii_lowercase().as_str() {
            "size" => {
                let bytes = parse_size(value).map_err(|reason| DriverError::InvalidOption {
                    id: id.to_string(),
                    option: format!("{key}={value}"),
                    reason,
                })?;
                out.size = Some(bytes);
            }
            _ => {
                return Err(DriverError::InvalidOption {
                    id: id.to_string(),
                    option: format!("{key}={value}"),
                    reason: "unknown storage option".into(),
                });
            }
        }
    }
    Ok(out)
}

/// The size limit `opts` asks for on a new layer of `kind`, for a driver
/// that limits read-write layers only: one on a read-only layer is refused.
pub(crate) fn rw_size_limit(
    id: &crate::LayerId,
    kind: crate::LayerKind,
    opts: &CreateOpts,
) -> Result<Option<u64>, DriverError> {
    let size = parse_storage_opts(id.as_str(), &opts.storage_opt)?.size;
    if size.is_some() && kind == crate::LayerKind::Ro {
        return Err(DriverError::InvalidOption {
            id: id.to_string(),
            option: "size".into(),
            reason: "a size limit is only for read-write layers".into(),
        });
    }
    Ok(size)
}

/// Parses a size like Docker's `units.RAMInBytes`: a decimal number with
/// an optional unit `b`, `k`, `m`, `g`, `t`, `p` (each optionally followed
/// by `b` or `ib`), case-insensitive, all binary (1k = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 512m, 20G)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(format!("{s:?} has an unknown unit")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        for (s, n) in [
            ("0", 0),
            ("512", 512),
            ("1k", 1024),
            ("1KB", 1024),
            ("1KiB", 1024),
            ("20G", 20 << 30),
            ("512m", 512 << 20),
            ("50M", 50 << 20),
            ("1.5k", 1536),
            ("2t", 2 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for bad in ["", "x", "10x", "-1", "1e400", "k"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_refused_by_name() {
        let mut m = BTreeMap::new();
        m.insert("SIZE".to_string(), "10m".to_string());
        assert_eq!(parse_storage_opts("l", &m).unwrap().size, Some(10 << 20));
        m.insert("foo".to_string(), "1".to_string());
        let e = parse_storage_opts("l", &m).unwrap_err().to_string();
        assert!(e.contains("foo=1") && e.contains("unknown"), "{e}");
    }
}
