//! Lexical handling of layer paths: cleaning, splitting and display. Pure
//! functions over bytes, so they can be tested without a filesystem.

use crate::{FsError, Result};

/// Cleans a path from a tar header the way Go's `filepath.Clean` does for a
/// path taken relative to the layer root, returning it without a leading
/// slash (`""` means the root itself).
///
/// A rooted path (`/a/../../b`) cannot climb above `/`, so its excess `..`
/// are dropped, as for an absolute name in moby's `UnpackLayer`; an
/// unrooted one that climbs above the root (`a/../../b`) is refused.
/// NUL bytes are refused because no name on disk can hold them.
pub fn clean_path(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.contains(&0) {
        return Err(FsError::Nul {
            path: display_path(raw),
        });
    }
    let rooted = raw.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !rooted {
                    return Err(FsError::Escapes {
                        path: display_path(raw),
                    });
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Splits a cleaned path into its components (none for the root).
pub fn components(clean: &[u8]) -> impl Iterator<Item = &[u8]> {
    clean.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Joins a cleaned parent path and one name.
pub fn join_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Checks that `name` is a single directory entry name: not empty, not
/// `.` or `..`, and without `/` or NUL. Functions that take a parent handle
/// and a name call this first, because a name with a `/` would make the
/// kernel walk (and follow symlinks in) more than the one final component,
/// and `..` would leave the parent. `path` is only for the error.
pub fn check_name(name: &[u8], path: &[u8]) -> Result<()> {
    let reason = if name.is_empty() {
        "empty name"
    } else if name == b"." || name == b".." {
        "name is . or .."
    } else if name.contains(&b'/') {
        "name contains a slash"
    } else if name.contains(&0) {
        return Err(FsError::Nul {
            path: display_path(path),
        });
    } else {
        return Ok(());
    };
    Err(FsError::Invalid {
        path: display_path(path),
        reason: reason.into(),
    })
}

/// A path for messages: UTF-8 where it is, `\xNN` escapes where it is not.
pub fn display_path(p: &[u8]) -> String {
    p.utf8_chunks()
        .map(|c| {
            let mut s = c.valid().to_string();
            for b in c.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"a/b", b"a/b"),
            (b"./a//b/", b"a/b"),
            (b"/etc/passwd", b"etc/passwd"),
            (b"/../x", b"x"),
            (b"/a/../../b", b"b"),
            (b"a/../b", b"b"),
            (b"./", b""),
            (b".", b""),
            (b"a/./b/..", b"a"),
            (b"\xff\xfe/n", b"\xff\xfe/n"),
        ];
        for (raw, want) in ok {
            assert_eq!(clean_path(raw).unwrap(), *want, "{}", display_path(raw));
        }
        for bad in [&b"../x"[..], b"a/../../x", b"..", b"a/../.."] {
            assert!(
                matches!(clean_path(bad), Err(FsError::Escapes { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(clean_path(b"a\0b"), Err(FsError::Nul { .. })));
    }

    #[test]
    fn names() {
        for ok in [&b"a"[..], b"...", b".wh.x", b"\xff"] {
            check_name(ok, ok).unwrap();
        }
        for bad in [&b""[..], b".", b"..", b"a/b", b"/"] {
            assert!(
                matches!(check_name(bad, bad), Err(FsError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(check_name(b"a\0", b"a"), Err(FsError::Nul { .. })));
    }

    #[test]
    fn display_escapes_non_utf8() {
        assert_eq!(display_path(b"ok/\xff"), "ok/\\xff");
    }
}
