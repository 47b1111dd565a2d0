//! The Windows container layer format, without a filesystem.
//!
//! Windows layers are tars whose names start with `Files/` (the
//! container's C:\), `Hives/` (registry deltas) and `UtilityVM/Files/`
//! (the Hyper-V utility VM), with Windows metadata in PAX records (go-winio
//! `backuptar`). This crate knows that format and nothing about where
//! layers are stored: the typed view of the records ([`WinRecords`]), the
//! name rules ([`classify`]), PAX and FILETIME times with the producers'
//! quirks ([`PaxTime`]), security descriptors in binary and SDDL, both
//! ways ([`SecurityDescriptor`]), attribute names ([`attr`]), the
//! per-layer index that keeps every record of an imported layer
//! ([`LayerIndex`]), and the writer of new Windows layer tars
//! ([`LayerBuilder`]). The `windowsfilter` driver and the
//! `strata windows-layer` commands are built on it. See
//! ../shared/docs/windows-layer-format.md for the format and its sources.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attr;
mod builder;
mod index;
mod names;
mod records;
pub mod sd;
mod time;

pub use builder::{
    BuildError, BuildOptions, DEFAULT_DIR_SDDL, DEFAULT_FILE_SDDL, EntryMeta, LayerBuilder,
    windows_link_text,
};
pub use index::{
    INDEX_FILE, INDEX_VERSION, IndexEntry, IndexError, IndexLine, IndexWriter, Kind, LayerIndex,
    Record, Role,
};
pub use names::{
    NameError, Top, WinName, check_component, classify, fold_case, hard_link_target, tree_root,
    view_symlink_target,
};
pub use records::{
    CREATIONTIME, FILEATTR, MOUNTPOINT, RAWSD, RecordError, SD, WinRecords, XATTR_PREFIX,
    is_known_key,
};
pub use sd::{SdError, SecurityDescriptor, Sid, binary_to_sddl, sddl_to_binary};
pub use time::{PaxTime, format_pax_time};

/// Directory of a layer that holds its alternate data streams, each at
/// its tar name (`streams/Files/a.txt:Zone.Identifier`), so that they stay
/// out of the `Files/` view.
pub const STREAMS_DIR: &str = "streams";

/// The files a Windows host rewrites when it imports a layer (the utility
/// VM's boot configuration), and the backups of their original bytes that
/// the seed keeps in the layer directory (moby `mutatedFiles`).
pub const MUTATED_FILES: [(&str, &str); 4] = [
    ("UtilityVM/Files/EFI/Microsoft/Boot/BCD", "bcd.bak"),
    ("UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG", "bcd.log.bak"),
    (
        "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG1",
        "bcd.log1.bak",
    ),
    (
        "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG2",
        "bcd.log2.bak",
    ),
];

/// The backup file name for a cleaned layer path that names a mutated
/// file.
pub fn mutated_backup(path: &[u8]) -> Option<&'static str> {
    MUTATED_FILES
        .iter()
        .find(|(p, _)| p.as_bytes() == path)
        .map(|(_, bak)| *bak)
}
