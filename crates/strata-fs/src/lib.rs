//! Root-anchored file operations for Strata layers.
//!
//! Everything Strata does inside a layer directory goes through a [`Root`]:
//! a directory handle on the layer root, with every path resolved by
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` so that symlinks in the
//! image (absolute or relative) resolve inside the layer as if it were `/`,
//! and `..` can never climb out. The last component of anything created,
//! replaced or inspected is handled with `*at` calls that do not follow it.
//! Paths are raw bytes, cleaned lexically by [`clean_path`] before use.
//!
//! On top of that sit the pieces the layer code shares: extended
//! attributes that never follow the object ([`xattrs_at`]), fd-based
//! depth-first walks in tar order ([`walk`]), creation/removal/metadata
//! helpers ([`mkdir_all`], [`remove_all_at`], [`chmod_at`], ...) and a
//! faithful whole-tree copy ([`copy_tree`]).
//!
//! For the overlay driver it also mounts and inspects mounts: [`mount`]
//! plans an overlay as `fsconfig` operations and applies them (new mount
//! API with `lowerdir+`, or `mount(2)` with short links), [`mountinfo`]
//! parses the mount table, and [`overlay`] knows overlayfs's on-disk forms
//! (whiteouts, opaque dirs) and probes its defaults.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod copy;
mod error;
pub mod mount;
pub mod mountinfo;
mod ops;
pub mod overlay;
mod path;
mod quota;
mod root;
mod sandbox;
#[cfg(test)]
mod testutil;
mod walk;
mod xattr;

pub use copy::{CopyStats, copy_tree, copy_up};
pub use error::{FsError, Result};
pub use ops::{
    MODE_MASK, chmod_at, chmod_fd, chown_at, chown_fd, mkdir_all, mknod_at, open_dir_at,
    remove_all_at, set_times_at, set_times_fd, stat_times,
};
pub use path::{check_name, clean_path, components, display_path, join_path};
pub use quota::{
    QuotaError, XFS_SUPER_MAGIC, project_id, project_quota_usage, set_project_quota,
    xfs_project_quota_supported,
};
pub use root::Root;
pub use sandbox::{
    MIN_SANDBOX_SIZE, SANDBOX_IMAGE, SANDBOX_MOUNT, SANDBOX_UPPER, SANDBOX_WORK, Sandbox,
    SandboxError, create_image, image_size_for, mount_image, release_stale, unmount_image,
};
pub use walk::{Visitor, WalkControl, WalkEntry, dir_names, walk, walk_dir};
pub use xattr::{Xattr, set_xattr_at, set_xattr_fd, xattrs_at, xattrs_fd};
