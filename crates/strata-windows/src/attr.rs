//! `FILE_ATTRIBUTE_*` bits, as `MSWINDOWS.fileattr` carries them (a decimal
//! u32), and their names for display.

/// Read-only.
pub const READONLY: u32 = 0x1;
/// Hidden.
pub const HIDDEN: u32 = 0x2;
/// Part of the operating system.
pub const SYSTEM: u32 = 0x4;
/// A directory.
pub const DIRECTORY: u32 = 0x10;
/// Marked for backup; what Linux-built layers give files.
pub const ARCHIVE: u32 = 0x20;
/// A file with no other attribute.
pub const NORMAL: u32 = 0x80;
/// A reparse point (symlink or junction).
pub const REPARSE_POINT: u32 = 0x400;

/// Every named bit.
const NAMES: &[(u32, &str)] = &[
    (READONLY, "READONLY"),
    (HIDDEN, "HIDDEN"),
    (SYSTEM, "SYSTEM"),
    (DIRECTORY, "DIRECTORY"),
    (ARCHIVE, "ARCHIVE"),
    (0x40, "DEVICE"),
    (NORMAL, "NORMAL"),
    (0x100, "TEMPORARY"),
    (0x200, "SPARSE_FILE"),
    (REPARSE_POINT, "REPARSE_POINT"),
    (0x800, "COMPRESSED"),
    (0x1000, "OFFLINE"),
    (0x2000, "NOT_CONTENT_INDEXED"),
    (0x4000, "ENCRYPTED"),
    (0x8000, "INTEGRITY_STREAM"),
    (0x10000, "VIRTUAL"),
    (0x20000, "NO_SCRUB_DATA"),
    (0x40000, "RECALL_ON_OPEN"),
    (0x80000, "PINNED"),
    (0x100000, "UNPINNED"),
    (0x400000, "RECALL_ON_DATA_ACCESS"),
];

/// The names of the bits set in `attr`, in bit order; unnamed bits as hex.
pub fn names(attr: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut known = 0;
    for (bit, name) in NAMES {
        if attr & bit != 0 {
            out.push((*name).to_string());
            known |= bit;
        }
    }
    if attr & !known != 0 {
        out.push(format!("{:#x}", attr & !known));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::names(0x410), ["DIRECTORY", "REPARSE_POINT"]);
        assert_eq!(super::names(0x20 | 0x8000_0000), ["ARCHIVE", "0x80000000"]);
        assert!(super::names(0).is_empty());
    }
}
