//! OCI/AUFS whiteout naming. A layer tar deletes a path of a lower layer
//! with an empty entry named `.wh.<name>` beside it, and hides a whole
//! lower directory with `<dir>/.wh..wh..opq`. Other `.wh..wh.*` names are
//! AUFS bookkeeping that importers skip. This module only names things;
//! applying them is the layer code's job.

/// Prefix of a whiteout entry's last component: `.wh.<removed name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// Prefix of AUFS metadata names, which are not whiteouts of a file.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// Last component of an opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a whiteout-named entry means. `dir` is the path of the directory
/// it is in, without trailing slash (empty for the root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `dir/.wh..wh..opq`: hide everything lower layers have in `dir`.
    Opaque {
        /// The directory made opaque.
        dir: &'a [u8],
    },
    /// `dir/.wh.name`: remove `dir/name` of lower layers.
    Remove {
        /// Directory containing the removed entry.
        dir: &'a [u8],
        /// Name of the removed entry (one component).
        name: &'a [u8],
    },
    /// Some other `.wh..wh.*` AUFS metadata entry (e.g. `.wh..wh.plnk`),
    /// which importers ignore.
    OtherMeta,
}

/// A whiteout name that cannot be honoured. Importers must reject the
/// layer rather than guess: `.wh.` alone names nothing, and `.wh..` /
/// `.wh...` would remove the directory itself or its parent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WhiteoutError {
    /// `.wh.` with nothing after it.
    #[error("whiteout {:?} names no file", String::from_utf8_lossy(.path))]
    EmptyName {
        /// The offending path.
        path: Vec<u8>,
    },
    /// `.wh..` or `.wh...`.
    #[error("whiteout {:?} names . or ..", String::from_utf8_lossy(.path))]
    DotName {
        /// The offending path.
        path: Vec<u8>,
    },
}

/// Splits a cleaned path into (directory, last component).
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

/// Classifies a cleaned path (components separated by single `/`, no
/// trailing slash): `Ok(None)` for an ordinary entry, `Ok(Some(_))` for a
/// whiteout or AUFS metadata, `Err` for a whiteout naming nothing, `.` or
/// `..`.
pub fn classify(clean_path: &[u8]) -> Result<Option<Whiteout<'_>>, WhiteoutError> {
    let (dir, base) = split_last(clean_path);
    if base == OPAQUE_MARKER.as_bytes() {
        return Ok(Some(Whiteout::Opaque { dir }));
    }
    if base.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Ok(Some(Whiteout::OtherMeta));
    }
    let Some(name) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(None);
    };
    match name {
        b"" => Err(WhiteoutError::EmptyName {
            path: clean_path.to_vec(),
        }),
        b"." | b".." => Err(WhiteoutError::DotName {
            path: clean_path.to_vec(),
        }),
        _ => Ok(Some(Whiteout::Remove { dir, name })),
    }
}

/// The whiteout entry path that removes `removed` (a cleaned path):
/// `dir/.wh.name`. Fails for a path whose last component is empty, `.` or
/// `..`, which cannot be whited out.
pub fn whiteout_path(removed: &[u8]) -> Result<Vec<u8>, WhiteoutError> {
    let (dir, base) = split_last(removed);
    let mut out = Vec::with_capacity(removed.len() + WHITEOUT_PREFIX.len());
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
    out.extend_from_slice(base);
    match base {
        b"" => Err(WhiteoutError::EmptyName { path: out }),
        b"." | b".." => Err(WhiteoutError::DotName { path: out }),
        _ => Ok(out),
    }
}

/// The opaque-marker entry path for directory `dir` (a cleaned path, empty
/// for the root).
pub fn opaque_marker_path(dir: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + OPAQUE_MARKER.len());
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(OPAQUE_MARKER.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_cases() {
        assert_eq!(classify(b"a/b"), Ok(None));
        assert_eq!(classify(b"a/.whx"), Ok(None));
        assert_eq!(classify(b".wh.x/y"), Ok(None));
        assert_eq!(
            classify(b"a/b/.wh.c"),
            Ok(Some(Whiteout::Remove {
                dir: b"a/b",
                name: b"c"
            }))
        );
        assert_eq!(
            classify(b".wh.top"),
            Ok(Some(Whiteout::Remove {
                dir: b"",
                name: b"top"
            }))
        );
        assert_eq!(
            classify(b"d/.wh..wh..opq"),
            Ok(Some(Whiteout::Opaque { dir: b"d" }))
        );
        assert_eq!(
            classify(b".wh..wh..opq"),
            Ok(Some(Whiteout::Opaque { dir: b"" }))
        );
        assert_eq!(classify(b"d/.wh..wh.plnk"), Ok(Some(Whiteout::OtherMeta)));
        // ".wh..opq" is an ordinary whiteout of a file named ".opq".
        assert_eq!(
            classify(b"d/.wh..opq"),
            Ok(Some(Whiteout::Remove {
                dir: b"d",
                name: b".opq"
            }))
        );
        assert!(matches!(
            classify(b"d/.wh."),
            Err(WhiteoutError::EmptyName { .. })
        ));
        assert!(matches!(
            classify(b"d/.wh.."),
            Err(WhiteoutError::DotName { .. })
        ));
        assert!(matches!(
            classify(b".wh..."),
            Err(WhiteoutError::DotName { .. })
        ));
    }

    #[test]
    fn build_paths() {
        assert_eq!(whiteout_path(b"a/b/c").as_deref(), Ok(&b"a/b/.wh.c"[..]));
        assert_eq!(whiteout_path(b"c").as_deref(), Ok(&b".wh.c"[..]));
        assert!(whiteout_path(b"").is_err());
        assert!(whiteout_path(b"a/..").is_err());
        assert_eq!(opaque_marker_path(b"x/y"), b"x/y/.wh..wh..opq");
        assert_eq!(opaque_marker_path(b""), b".wh..wh..opq");
        // What is built classifies back to what was meant.
        let p = whiteout_path(b"a/\xffname").expect("valid");
        assert_eq!(
            classify(&p),
            Ok(Some(Whiteout::Remove {
                dir: b"a",
                name: b"\xffname"
            }))
        );
    }
}
