//! Entry names of Windows layer tars: what each names (an object under
//! `Files/`, `Hives/` or `UtilityVM/Files/`, an alternate data stream, a
//! tombstone) and whether Windows would accept it.
//!
//! The rules (windows-layer-format.md §8 (a) 3–6 and (c) 15): names are
//! relative and `/`-separated; the first component is `Files`, `Hives` or
//! `UtilityVM`, and under `UtilityVM` only `UtilityVM/Files[/...]`; no
//! component is `..` (nothing may escape its tree, ggcr #2355), and every
//! component is a name NTFS and Win32 accept: no control characters, none
//! of `< > : " | ? * \`, no trailing dot or space, not a reserved device
//! name (`CON`, `NUL`, `COM1`, ... with or without an extension). A `:` is
//! the stream separator: `file:stream` and `file:stream:$DATA` name a
//! stream of `file`. `.wh.<name>` is a tombstone (only under `Files/` and
//! `UtilityVM/Files/`), `.wh..wh..opq` an opaque marker.

/// The three trees a Windows layer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Top {
    /// `Files/`: the container's C:\ drive.
    Files,
    /// `Hives/`: registry hive deltas.
    Hives,
    /// `UtilityVM/`: the Hyper-V utility VM (`UtilityVM/Files/...`).
    UtilityVm,
}

/// What an entry name stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WinName {
    /// A file, directory or link at `path` (cleaned: no `.`, no empty
    /// components, no trailing slash).
    Object {
        /// The cleaned path.
        path: Vec<u8>,
        /// Its tree.
        top: Top,
    },
    /// An alternate data stream `stream` of the file `file`.
    Stream {
        /// The cleaned path of the whole name (`file:stream[:$DATA]`).
        path: Vec<u8>,
        /// The cleaned path of the file the stream belongs to.
        file: Vec<u8>,
        /// The stream's name (without `:$DATA`).
        stream: Vec<u8>,
    },
    /// A tombstone: `target` is deleted from the layers below.
    Tombstone {
        /// The cleaned path of the whiteout entry itself.
        path: Vec<u8>,
        /// The cleaned path it deletes.
        target: Vec<u8>,
        /// Its tree (`Files` or `UtilityVm`).
        top: Top,
    },
    /// `dir/.wh..wh..opq`: recorded, but without effect on Windows.
    Opaque {
        /// The cleaned path of the marker entry.
        path: Vec<u8>,
        /// The cleaned directory path.
        dir: Vec<u8>,
    },
}

impl WinName {
    /// The cleaned path of the entry itself.
    pub fn path(&self) -> &[u8] {
        match self {
            WinName::Object { path, .. }
            | WinName::Stream { path, .. }
            | WinName::Tombstone { path, .. }
            | WinName::Opaque { path, .. } => path,
        }
    }
}

/// `name` folded as NTFS compares names, so two names that fold alike
/// name one object: every character upper-cased by its one-character
/// mapping (NTFS's upcase table has no others, so `ß` stays `ß`), and
/// bytes that are not UTF-8 left as they are.
pub fn fold_case(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) if s.is_ascii() => s.to_ascii_uppercase().into_bytes(),
        Ok(s) => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                let mut up = c.to_uppercase();
                match (up.next(), up.next()) {
                    (Some(u), None) => out.push(u),
                    _ => out.push(c),
                }
            }
            out.into_bytes()
        }
        Err(_) => name.to_ascii_uppercase(),
    }
}

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NameError {
    /// What is wrong, in words that name the part concerned.
    pub reason: String,
}

fn err<T>(reason: impl Into<String>) -> Result<T, NameError> {
    Err(NameError {
        reason: reason.into(),
    })
}

/// The whiteout prefix.
const WH: &[u8] = b".wh.";
/// The opaque marker.
const OPQ: &[u8] = b".wh..wh..opq";
/// The suffix of a stream's full name.
const DATA_SUFFIX: &[u8] = b":$DATA";

/// Splits a raw name into components, dropping empty and `.` ones (a
/// trailing slash, `./` prefixes) and refusing what must never appear.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, NameError> {
    if raw.first() == Some(&b'/') {
        return err("absolute name (Windows layer names are relative)");
    }
    if raw.contains(&0) {
        return err("NUL in name");
    }
    if raw.contains(&b'\\') {
        return err("backslash in name (Windows layer names use '/')");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return err("'..' in name (nothing may leave its tree)"),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return err("empty name");
    }
    Ok(out)
}

/// Checks one path component against the Win32 rules; `':'` is refused
/// here (callers split streams off first).
pub fn check_component(c: &[u8]) -> Result<(), NameError> {
    let shown = String::from_utf8_lossy(c);
    if c.is_empty() {
        return err("empty name component");
    }
    if std::str::from_utf8(c).is_err() {
        return err(format!(
            "{shown:?} is not UTF-8 (Windows names are Unicode)"
        ));
    }
    if let Some(b) = c.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return err(format!("{shown:?} contains control character {b:#04x}"));
    }
    if let Some(b) = c.iter().find(|b| b"<>:\"|?*\\".contains(b)) {
        return err(format!(
            "{shown:?} contains {:?}, which Windows forbids in names",
            *b as char
        ));
    }
    if matches!(c.last(), Some(b'.' | b' ')) {
        return err(format!(
            "{shown:?} ends in a dot or space, which Windows strips"
        ));
    }
    let stem = c.split(|&b| b == b'.').next().unwrap_or(c);
    let stem = String::from_utf8_lossy(stem)
        .trim_end()
        .to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    if reserved {
        return err(format!("{shown:?} is a reserved Windows device name"));
    }
    Ok(())
}

/// The tree of a cleaned component list, enforcing the `UtilityVM` rule.
fn top_of(comps: &[&[u8]]) -> Result<Top, NameError> {
    match comps[0] {
        b"Files" => Ok(Top::Files),
        b"Hives" => Ok(Top::Hives),
        b"UtilityVM" => {
            if comps.len() > 1 && comps[1] != b"Files" {
                return err("under UtilityVM only UtilityVM/Files is allowed");
            }
            Ok(Top::UtilityVm)
        }
        other => err(format!(
            "top-level {:?} is not Files, Hives or UtilityVM",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Classifies and validates an entry name (the raw tar name).
pub fn classify(raw: &[u8]) -> Result<WinName, NameError> {
    let comps = components(raw)?;
    let top = top_of(&comps)?;
    let (last, dirs) = comps.split_last().unwrap_or((&comps[0], &[]));
    for c in dirs {
        check_component(c)?;
    }
    let path = comps.join(&b'/');
    let dir = dirs.join(&b'/');
    if last.starts_with(WH) {
        if dirs.is_empty() {
            return err("a whiteout needs a directory");
        }
        let deletable = match top {
            Top::Files => true,
            Top::UtilityVm => dirs.len() >= 2,
            Top::Hives => false,
        };
        if !deletable {
            return err(
                "invalid tombstone: only paths under Files/ or UtilityVM/Files/ can be deleted",
            );
        }
        if *last == OPQ {
            return Ok(WinName::Opaque { path, dir });
        }
        let name = &last[WH.len()..];
        if name.is_empty() {
            return err("whiteout with an empty name");
        }
        check_component(name)?;
        let mut target = dir.clone();
        target.push(b'/');
        target.extend_from_slice(name);
        return Ok(WinName::Tombstone { path, target, top });
    }
    if let Some(colon) = last.iter().position(|&b| b == b':') {
        let (file_name, rest) = (&last[..colon], &last[colon + 1..]);
        if top == Top::Hives {
            return err("streams are not allowed under Hives/");
        }
        if dirs.is_empty() || (top == Top::UtilityVm && dirs.len() < 2) {
            return err("a stream of a top-level directory");
        }
        check_component(file_name)?;
        let stream = if rest.len() >= DATA_SUFFIX.len()
            && rest[rest.len() - DATA_SUFFIX.len()..].eq_ignore_ascii_case(DATA_SUFFIX)
        {
            &rest[..rest.len() - DATA_SUFFIX.len()]
        } else {
            rest
        };
        if stream.is_empty() {
            return err("empty stream name");
        }
        if let Some(b) = stream.iter().find(|&&b| b < 0x20 || b"\\/:".contains(&b)) {
            return err(format!(
                "stream name {:?} contains {:?}",
                String::from_utf8_lossy(stream),
                *b as char
            ));
        }
        let mut file = dir.clone();
        file.push(b'/');
        file.extend_from_slice(file_name);
        return Ok(WinName::Stream {
            path,
            file,
            stream: stream.to_vec(),
        });
    }
    if comps.len() > 1 || top != Top::UtilityVm {
        check_component(last)?;
    }
    Ok(WinName::Object { path, top })
}

/// Resolves a hard-link entry's `Linkname` to the cleaned layer path it
/// names. Producers that forgot the `Files/` prefix on link targets
/// (ggcr) are accepted for entries under `Files/`. The target must be an
/// object under `Files/` or `UtilityVM/Files/`.
pub fn hard_link_target(entry: &WinName, raw: &[u8]) -> Result<Vec<u8>, NameError> {
    let comps = components(raw).map_err(|e| NameError {
        reason: format!("hard link target: {}", e.reason),
    })?;
    let prefixed;
    let comps: &[&[u8]] = match comps[0] {
        b"Files" | b"UtilityVM" | b"Hives" => &comps,
        _ if matches!(
            entry,
            WinName::Object {
                top: Top::Files,
                ..
            }
        ) =>
        {
            prefixed = [&[&b"Files"[..]][..], &comps].concat();
            &prefixed
        }
        _ => return err("hard link target is not under Files/ or UtilityVM/Files/"),
    };
    let joined = comps.join(&b'/');
    match classify(&joined) {
        Ok(WinName::Object {
            path,
            top: Top::Files,
        }) if comps.len() > 1 => Ok(path),
        Ok(WinName::Object {
            path,
            top: Top::UtilityVm,
        }) if comps.len() > 2 => Ok(path),
        Ok(_) => err("hard link target is not a file under Files/ or UtilityVM/Files/"),
        Err(e) => err(format!("hard link target: {}", e.reason)),
    }
}

/// The root of the tree a cleaned object path lives in, for resolving
/// links: `Files`, `UtilityVM/Files` or `Hives`.
pub fn tree_root(path: &[u8]) -> &[u8] {
    if path.starts_with(b"UtilityVM/Files/") || path == b"UtilityVM/Files" {
        b"UtilityVM/Files"
    } else if path.starts_with(b"Hives") {
        b"Hives"
    } else {
        b"Files"
    }
}

/// The target a Windows symlink or junction gets on Linux, so that its
/// tree (mounted as a view) can be browsed: `\` becomes `/`; a drive,
/// `\\?\`, `\??\` or rooted target becomes absolute from the tree's root
/// (C:\ is the view's `/`); a relative one stays relative unless it climbs
/// above the tree's root, where Windows stops at the root, so it is made
/// absolute the same way. `link` is the cleaned path of the link entry.
pub fn view_symlink_target(link: &[u8], raw: &[u8]) -> Vec<u8> {
    let t: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    let mut t: &[u8] = &t;
    for p in [&b"//?/"[..], b"/??/"] {
        if let Some(r) = t.strip_prefix(p) {
            t = r;
        }
    }
    let drive = t.len() >= 2 && t[0].is_ascii_alphabetic() && t[1] == b':';
    let absolute = drive || t.first() == Some(&b'/');
    let body: &[u8] = if drive { &t[2..] } else { t };
    let root = tree_root(link);
    // The link's directory, relative to its tree's root.
    let rel_dir: Vec<&[u8]> = link
        .strip_prefix(root)
        .unwrap_or(link)
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut parts: Vec<&[u8]> = if absolute {
        Vec::new()
    } else {
        rel_dir[..rel_dir.len().saturating_sub(1)].to_vec()
    };
    let mut climbed_out = false;
    for c in body.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    climbed_out = true;
                }
            }
            c => parts.push(c),
        }
    }
    if absolute || climbed_out {
        let mut out = b"/".to_vec();
        out.extend_from_slice(&parts.join(&b'/'));
        return out;
    }
    // Relative and inside the tree: keep it relative (as written, with '/').
    let rel: Vec<u8> = body.to_vec();
    if rel.is_empty() { b".".to_vec() } else { rel }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(p: &str) -> WinName {
        classify(p.as_bytes()).unwrap()
    }

    #[test]
    fn names_fold_as_ntfs_compares_them() {
        let same = |a: &str, b: &str| fold_case(a.as_bytes()) == fold_case(b.as_bytes());
        assert!(same("Files/Windows/System32", "FILES/windows/SYSTEM32"));
        assert!(same("Ünïcødé.TXT", "üNÏCØDÉ.txt"));
        assert!(same("Σίσυφος", "ΣΊΣΥΦΟΣ"));
        // one-character mappings only, as NTFS's upcase table
        assert!(!same("straße", "STRASSE"));
        assert!(!same("a.txt", "a.txt "));
        // bytes that are not UTF-8 fold as ASCII and keep the rest
        assert_eq!(fold_case(b"a\xff"), fold_case(b"A\xff"));
        assert_ne!(fold_case(b"a\xff"), fold_case(b"a\xfe"));
        assert_eq!(fold_case(b"a\xffb"), b"A\xffB");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            obj("Files/dir/"),
            WinName::Object {
                path: b"Files/dir".to_vec(),
                top: Top::Files
            }
        );
        assert!(matches!(
            obj("UtilityVM"),
            WinName::Object {
                top: Top::UtilityVm,
                ..
            }
        ));
        assert!(matches!(
            obj("Hives/Software_Delta"),
            WinName::Object {
                top: Top::Hives,
                ..
            }
        ));
        for (n, stream) in [
            ("Files/a.txt:Zone.Identifier", "Zone.Identifier"),
            ("Files/a.txt:s:$DATA", "s"),
        ] {
            match obj(n) {
                WinName::Stream {
                    file, stream: s, ..
                } => {
                    assert_eq!(file, b"Files/a.txt");
                    assert_eq!(s, stream.as_bytes());
                }
                o => panic!("{n}: {o:?}"),
            }
        }
        assert!(
            matches!(obj("Files/d/.wh.gone"), WinName::Tombstone { ref target, .. } if target == b"Files/d/gone")
        );
        assert!(
            matches!(obj("Files/d/.wh..wh..opq"), WinName::Opaque { ref dir, .. } if dir == b"Files/d")
        );
        assert!(matches!(
            obj("UtilityVM/Files/.wh.x"),
            WinName::Tombstone { .. }
        ));
    }

    #[test]
    fn refusals() {
        for bad in [
            "/Files/a",
            "Files/../Hives/x",
            "Files/a/../../x",
            "Other/x",
            "UtilityVM/Other",
            "Files/a<b",
            "Files/CON",
            "Files/nul.txt",
            "Files/com1",
            "Files/a.",
            "Files/a ",
            "Files/a\\b",
            "Files/a\u{1}",
            "Hives/.wh.x",
            "Files/.wh.",
            "Hives/a:s",
            "Files/a:",
            "Files/a::$DATA",
            "Files/a:b/c",
            ".wh.Files",
            "Files:s",
        ] {
            assert!(classify(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(classify(b"Files/com0").is_ok());
        assert!(classify(b"Files/console").is_ok());
    }

    #[test]
    fn link_targets() {
        let e = obj("Files/x");
        assert_eq!(
            hard_link_target(&e, b"Files/dir/a.txt").unwrap(),
            b"Files/dir/a.txt"
        );
        assert_eq!(
            hard_link_target(&e, b"dir/a.txt").unwrap(),
            b"Files/dir/a.txt"
        );
        assert_eq!(
            hard_link_target(&obj("UtilityVM/Files/x"), b"Files/a").unwrap(),
            b"Files/a"
        );
        for bad in ["Files/../Hives/x", "Hives/x", "Files", "../x"] {
            assert!(hard_link_target(&e, bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(hard_link_target(&obj("UtilityVM/Files/x"), b"a").is_err());
    }

    #[test]
    fn view_targets() {
        let v = |l: &str, t: &str| {
            String::from_utf8(view_symlink_target(l.as_bytes(), t.as_bytes())).unwrap()
        };
        assert_eq!(v("Files/dir/l", "..\\b.txt"), "../b.txt");
        assert_eq!(v("Files/dir/j", "C:\\x\\y"), "/x/y");
        assert_eq!(v("Files/dir/j", "\\??\\C:\\x"), "/x");
        assert_eq!(v("Files/l", "..\\..\\etc\\passwd"), "/etc/passwd");
        assert_eq!(v("UtilityVM/Files/a/l", "..\\b"), "../b");
        assert_eq!(v("Files/l", "\\Windows"), "/Windows");
    }
}
