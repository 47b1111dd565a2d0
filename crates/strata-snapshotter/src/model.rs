//! The snapshotter's own vocabulary, independent of the wire format:
//! snapshot kinds, the facts `Stat` and `List` return, usage, and the
//! mount specs handed to containerd. The gRPC service converts these to
//! and from the protobuf messages; `strata ls` uses them without gRPC.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Labels on a snapshot (sorted, so listings are stable).
pub type Labels = BTreeMap<String, String>;

/// Longest label key plus value containerd accepts, in bytes.
pub const MAX_LABEL_SIZE: usize = 4096;

/// Label that gives an active snapshot a size limit (a Docker-style size
/// such as `10G` or `512m`, binary units): its writable layer gets the
/// overlay driver's size-limited sandbox. containerd forwards labels under
/// `containerd.io/snapshot/` to snapshotters.
pub const SIZE_LABEL: &str = "containerd.io/snapshot/strata.size";

/// A snapshot's kind, numbered as containerd's `Kind` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable snapshot that may be committed.
    Active,
    /// An immutable snapshot, usable as a parent.
    Committed,
}

impl Kind {
    /// The name filters and `ctr` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    /// containerd's enum value (`VIEW = 1, ACTIVE = 2, COMMITTED = 3`).
    pub fn number(self) -> i32 {
        match self {
            Kind::View => 1,
            Kind::Active => 2,
            Kind::Committed => 3,
        }
    }

    /// The kind with containerd's enum value `n`.
    pub fn from_number(n: i64) -> Option<Kind> {
        match n {
            1 => Some(Kind::View),
            2 => Some(Kind::Active),
            3 => Some(Kind::Committed),
            _ => None,
        }
    }
}

/// What `Stat` and `List` say about a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Its key (active, view) or name (committed).
    pub name: String,
    /// The parent's name; empty for a snapshot without one.
    pub parent: String,
    /// Its kind.
    pub kind: Kind,
    /// When it was created (for a committed one: when it was committed).
    pub created: SystemTime,
    /// When it was last changed.
    pub updated: SystemTime,
    /// Its labels.
    pub labels: Labels,
}

/// Disk used by a snapshot's own content (not its parents').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated (`st_blocks` × 512, each inode once).
    pub size: i64,
    /// Distinct inodes, the content's root directory included.
    pub inodes: i64,
}

/// One mount containerd performs to get a snapshot's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem type: `bind` or `overlay`.
    pub fstype: String,
    /// The source: a directory for `bind`, `overlay` for overlay.
    pub source: String,
    /// fstab-style options.
    pub options: Vec<String>,
}
