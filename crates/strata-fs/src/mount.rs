//! Overlay mounts: a pure planner and the executor that hands its plan to
//! the kernel.
//!
//! [`plan`] turns an [`OverlaySpec`] (lowers nearest first, optional upper
//! and work dirs, read-only flag, extra options) into the list of
//! `fsconfig` operations that describe the mount ([`FsconfigOp`]). It
//! touches nothing, so every rule it enforces is unit-tested without root.
//! [`mount_overlay`] then applies that plan:
//!
//! * with the new mount API (`fsopen`, one `fsconfig` per operation,
//!   `FSCONFIG_CMD_CREATE`, `fsmount`, `move_mount`), passing each lower
//!   with its own `lowerdir+` key (Linux 6.8+), so a chain of any depth the
//!   kernel allows (500) fits, whatever the length of its paths. On failure
//!   the kernel's own messages, read from the fs-context fd
//!   ([`FsContext`]), go into the error with the key that failed;
//! * or, on kernels without `lowerdir+` (or when asked with
//!   [`MountApi::Legacy`]), with `mount(2)` and a `lowerdir=a:b:c` option
//!   string. That string must fit in one page; when it does not, each
//!   layer path is replaced by a 26-character symlink in a caller-provided
//!   short-link directory (overlay2's `l/`), and the mount is made from a
//!   helper thread that has unshared its filesystem context and changed
//!   into that directory, so the process's working directory never moves.
//!
//! Paths must be absolute and free of `,` `:` `\` and newlines: the legacy
//! option syntax cannot carry them reliably, and a spec should mount the
//! same way whichever API the kernel offers.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::Rng;
use rustix::fs::{AtFlags, FsWord, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::FsError;

/// Filesystem magic of overlayfs (`OVERLAYFS_SUPER_MAGIC` in
/// `linux/magic.h`), as `statfs` reports it in `f_type`.
pub const OVERLAYFS_SUPER_MAGIC: FsWord = 0x794c_7630;

/// Longest string `fsconfig(FSCONFIG_SET_STRING)` accepts: the kernel
/// copies the value with `strndup_user(value, 256)`, so 255 bytes and the
/// terminating NUL. A longer layer path goes through a short link.
pub const FSCONFIG_VALUE_MAX: usize = 255;

/// Length of a short-link name: overlay2's, 26 characters of base32 (130
/// random bits), so names never collide in practice and a `lowerdir=` list
/// of ~150 of them still fits in one 4 KiB page.
pub const SHORT_NAME_LEN: usize = 26;

/// Alphabet of short-link names (RFC 4648 base32, as overlay2 uses).
const SHORT_NAME_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Keys the planner sets from the spec's own fields; an extra option may
/// not set them again, as the two would contradict each other.
const RESERVED_KEYS: &[&str] = &[
    "source",
    "lowerdir",
    "lowerdir+",
    "datadir+",
    "upperdir",
    "workdir",
    "index",
    "userxattr",
    "ro",
    "rw",
];

/// Keys whose value is a layer path (the ones a short link may stand for).
const PATH_KEYS: &[&str] = &["lowerdir+", "upperdir", "workdir"];

/// An error from planning, mounting, unmounting or inspecting mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The spec does not describe a mountable overlay.
    #[error("invalid overlay spec: {reason}")]
    Spec {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path in the spec cannot be handed to overlayfs.
    #[error("overlay {role} {path:?}: {reason}")]
    BadPath {
        /// Which option the path was for (`lowerdir`, `upperdir`, ...).
        role: &'static str,
        /// The offending path.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An extra option of the spec cannot be passed.
    #[error("overlay option {key:?}: {reason}")]
    BadOption {
        /// The option's key.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A step of the mount failed in the kernel. `messages` holds what the
    /// kernel logged on the fs context (new mount API only; `mount(2)`
    /// sends its text to the kernel log instead).
    #[error("{step}{}: {source}{}", show_key(.key.as_deref(), .value.as_deref()), show_messages(.messages))]
    Kernel {
        /// The failing call (`fsopen`, `fsconfig`, `fsconfig create`,
        /// `fsmount`, `mount`).
        step: &'static str,
        /// The option being set, if the step sets one.
        key: Option<String>,
        /// Its value (a path for the layer keys), if it has one.
        value: Option<OsString>,
        /// The error number.
        #[source]
        source: io::Error,
        /// The kernel's messages, one per line as read from the context
        /// (`"e overlay: ..."`, `"w ..."`).
        messages: Vec<String>,
    },
    /// The legacy `mount(2)` option string does not fit in one page.
    #[error(
        "overlay options for {target:?} are {len} bytes, the kernel reads at most {limit}{}",
        if *.shortened { " (even with short links)" } else { " (give a short-link directory)" }
    )]
    DataTooLong {
        /// Where the overlay was to be mounted.
        target: PathBuf,
        /// Length of the option string.
        len: usize,
        /// The most `mount(2)` reads (page size - 1).
        limit: usize,
        /// Whether the layer paths were already short links.
        shortened: bool,
    },
    /// A layer path is longer than `fsconfig` accepts and no short-link
    /// directory was given to stand in for it.
    #[error(
        "overlay {key} {path:?} is {} bytes, fsconfig takes at most {FSCONFIG_VALUE_MAX} (give a short-link directory)",
        .path.as_os_str().len()
    )]
    ValueTooLong {
        /// The option (`lowerdir+`, `upperdir`, `workdir`).
        key: String,
        /// The long path.
        path: PathBuf,
    },
    /// Nothing is mounted at the path given to [`unmount`].
    #[error("unmount {path:?}: not a mount point")]
    NotMounted {
        /// The path.
        path: PathBuf,
    },
    /// A system call on a path failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A line of a mountinfo table could not be parsed.
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Mountinfo {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A file operation inside a directory failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl MountError {
    /// Wraps an errno from `op` on `path`.
    pub(crate) fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        MountError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// True for [`MountError::NotMounted`], so callers that unmount
    /// whatever may be there can treat it as done.
    pub fn is_not_mounted(&self) -> bool {
        matches!(self, MountError::NotMounted { .. })
    }

    /// The raw OS error number, when the error carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            MountError::Kernel { source, .. } | MountError::Io { source, .. } => {
                source.raw_os_error()
            }
            MountError::Fs(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// Formats ` key=value` for [`MountError::Kernel`].
fn show_key(key: Option<&str>, value: Option<&OsStr>) -> String {
    match (key, value) {
        (Some(k), Some(v)) => format!(" {k}={v:?}"),
        (Some(k), None) => format!(" {k}"),
        (None, Some(v)) => format!(" {v:?}"),
        (None, None) => String::new(),
    }
}

/// Formats the kernel's messages for [`MountError::Kernel`].
fn show_messages(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(" [kernel: {}]", messages.join("; "))
    }
}

/// Which kernel interface [`mount_overlay`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MountApi {
    /// The new API when the kernel has `lowerdir+`, `mount(2)` otherwise.
    #[default]
    Auto,
    /// The new mount API with one `lowerdir+` per lower (Linux 6.8+).
    New,
    /// `mount(2)` with a `lowerdir=a:b:c` option string (any kernel).
    Legacy,
}

/// What to mount: an overlay of `lowers` (nearest first), with `upper`
/// and `work` for a writable one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Lower directories, nearest (topmost) first.
    pub lowers: Vec<PathBuf>,
    /// The upper (writable) directory; needs `work` too.
    pub upper: Option<PathBuf>,
    /// The work directory, on the same filesystem as `upper`.
    pub work: Option<PathBuf>,
    /// Mount read-only (superblock and mount). An overlay without an upper
    /// is read-only by nature and must say so here.
    pub readonly: bool,
    /// Use `user.overlay.*` xattrs instead of `trusted.overlay.*` (needed
    /// in a user namespace).
    pub userxattr: bool,
    /// Further options as (key, value), e.g. `("context", label)` for
    /// SELinux; an empty value sets a flag.
    pub extra: Vec<(String, String)>,
    /// The kernel interface to use.
    pub api: MountApi,
    /// Directory for short links standing in for layer paths when the
    /// options would not fit otherwise (overlay2's `l/`). Links are made
    /// for one mount and removed right after it.
    pub link_dir: Option<PathBuf>,
}

/// One `fsconfig` call of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsconfigOp {
    /// `FSCONFIG_SET_FLAG key`.
    Flag(String),
    /// `FSCONFIG_SET_STRING key=value`.
    Set {
        /// The option.
        key: String,
        /// Its value.
        value: OsString,
    },
}

impl FsconfigOp {
    /// A `Set` operation.
    fn set(key: &str, value: impl Into<OsString>) -> Self {
        FsconfigOp::Set {
            key: key.to_owned(),
            value: value.into(),
        }
    }
}

/// Plans the `fsconfig` calls for `spec`: `source=overlay`, `index=off`
/// (always: with an index, a lower that is another mount's upper is
/// refused as "in use", moby #37970), `userxattr` when asked, one
/// `lowerdir+` per lower in order, `upperdir` and `workdir`, the extra
/// options, and the `ro` flag last.
///
/// Refused: no lower; an upper without a work dir or the reverse; an
/// overlay without an upper that is not read-only, or that has a single
/// lower (the kernel answers a bare `EINVAL` there and logs "at least 2
/// lowerdir are needed while upperdir nonexistent" only to the kernel
/// log); relative paths and paths holding `,` `:` `\` newline or NUL; extra
/// options that set what the spec's own fields set.
pub fn plan(spec: &OverlaySpec) -> Result<Vec<FsconfigOp>, MountError> {
    if spec.lowers.is_empty() {
        return Err(MountError::Spec {
            reason: "no lower directory",
        });
    }
    let upper_work = match (&spec.upper, &spec.work) {
        (Some(u), Some(w)) => Some((u, w)),
        (None, None) => None,
        _ => {
            return Err(MountError::Spec {
                reason: "upperdir and workdir must be given together",
            });
        }
    };
    if upper_work.is_none() {
        if !spec.readonly {
            return Err(MountError::Spec {
                reason: "an overlay without upperdir is read-only; set readonly",
            });
        }
        if spec.lowers.len() < 2 {
            return Err(MountError::Spec {
                reason: "an overlay without upperdir needs at least 2 lower directories \
                         (use the single directory itself)",
            });
        }
    }
    for l in &spec.lowers {
        check_path("lowerdir", l)?;
    }
    if let Some((u, w)) = upper_work {
        check_path("upperdir", u)?;
        check_path("workdir", w)?;
    }
    for (k, v) in &spec.extra {
        check_extra(k, v)?;
    }

    let mut ops = vec![
        FsconfigOp::set("source", "overlay"),
        FsconfigOp::set("index", "off"),
    ];
    if spec.userxattr {
        ops.push(FsconfigOp::Flag("userxattr".into()));
    }
    ops.extend(
        spec.lowers
            .iter()
            .map(|l| FsconfigOp::set("lowerdir+", l.as_os_str())),
    );
    if let Some((u, w)) = upper_work {
        ops.push(FsconfigOp::set("upperdir", u.as_os_str()));
        ops.push(FsconfigOp::set("workdir", w.as_os_str()));
    }
    for (k, v) in &spec.extra {
        ops.push(if v.is_empty() {
            FsconfigOp::Flag(k.clone())
        } else {
            FsconfigOp::set(k, v.as_str())
        });
    }
    if spec.readonly {
        ops.push(FsconfigOp::Flag("ro".into()));
    }
    Ok(ops)
}

/// Checks that `path` can be an overlay layer path under both APIs.
fn check_path(role: &'static str, path: &Path) -> Result<(), MountError> {
    let bad = |reason| MountError::BadPath {
        role,
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(bad("must be absolute"));
    }
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    // The legacy syntax splits options on ',' and lowers on ':', and
    // treats '\' as an escape; a newline would forge a line of mountinfo
    // for anyone parsing it naively. None can round-trip reliably.
    for (c, reason) in [
        (b',', "contains ',', which overlay options cannot carry"),
        (b':', "contains ':', which overlay lower lists cannot carry"),
        (
            b'\\',
            "contains '\\', which overlay options treat as an escape",
        ),
        (b'\n', "contains a newline"),
    ] {
        if bytes.contains(&c) {
            return Err(bad(reason));
        }
    }
    Ok(())
}

/// Checks an extra option's key and value.
fn check_extra(key: &str, value: &str) -> Result<(), MountError> {
    let bad = |reason| MountError::BadOption {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    if key
        .bytes()
        .any(|b| b == b',' || b == b'=' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(bad("key contains ',', '=', NUL or whitespace"));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(bad("set from the spec's own fields"));
    }
    if value.bytes().any(|b| b == 0 || b == b'\n') {
        return Err(bad("value contains NUL or a newline"));
    }
    Ok(())
}

/// What `mount(2)` needs for a plan: the source, the option string and
/// whether to pass `MS_RDONLY`.
#[derive(Debug, PartialEq, Eq)]
struct Legacy {
    source: OsString,
    data: Vec<u8>,
    readonly: bool,
}

/// Folds a plan into `mount(2)` arguments: `source` becomes the source
/// argument, `ro` becomes `MS_RDONLY`, the `lowerdir+` values join into one
/// `lowerdir=a:b:c` where the first of them stood, and everything else is
/// `key=value` or `key`, comma-separated. A value holding ',' is quoted
/// (as moby's `FormatMountLabel` does for SELinux contexts: the LSM option
/// parser strips the quotes).
fn legacy_data(ops: &[FsconfigOp]) -> Result<Legacy, MountError> {
    let mut out = Legacy {
        source: OsString::from("overlay"),
        data: Vec::new(),
        readonly: false,
    };
    let mut lowers: Vec<&OsStr> = Vec::new();
    let mut lower_at = None;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for op in ops {
        match op {
            FsconfigOp::Flag(k) if k == "ro" => out.readonly = true,
            FsconfigOp::Flag(k) => parts.push(k.as_bytes().to_vec()),
            FsconfigOp::Set { key, value } if key == "source" => out.source = value.clone(),
            FsconfigOp::Set { key, value } if key == "lowerdir+" => {
                lower_at.get_or_insert(parts.len());
                lowers.push(value);
            }
            FsconfigOp::Set { key, value } => {
                let v = value.as_bytes();
                let mut p = key.as_bytes().to_vec();
                p.push(b'=');
                if v.contains(&b',') {
                    if v.contains(&b'"') || v.contains(&b'\\') {
                        return Err(MountError::BadOption {
                            key: key.clone(),
                            reason: "value holds ',' with '\"' or '\\'; mount(2) cannot pass it",
                        });
                    }
                    p.push(b'"');
                    p.extend_from_slice(v);
                    p.push(b'"');
                } else {
                    p.extend_from_slice(v);
                }
                parts.push(p);
            }
        }
    }
    if let Some(at) = lower_at {
        let mut l = b"lowerdir=".to_vec();
        for (i, v) in lowers.iter().enumerate() {
            if i > 0 {
                l.push(b':');
            }
            l.extend_from_slice(v.as_bytes());
        }
        parts.insert(at, l);
    }
    out.data = parts.join(&b","[..]);
    Ok(out)
}

/// An open filesystem context (`fsopen`): the new mount API's handle on a
/// superblock being configured. Closing it (drop) discards the context.
#[derive(Debug)]
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    /// `fsopen(fstype, FSOPEN_CLOEXEC)`.
    pub fn open(fstype: &str) -> Result<Self, MountError> {
        rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
            .map(|fd| FsContext { fd })
            .map_err(|e| MountError::Kernel {
                step: "fsopen",
                key: None,
                value: Some(fstype.into()),
                source: e.into(),
                messages: Vec::new(),
            })
    }

    /// Applies one planned operation.
    pub fn apply(&self, op: &FsconfigOp) -> Result<(), MountError> {
        match op {
            FsconfigOp::Flag(key) => self.set_flag(key),
            FsconfigOp::Set { key, value } => self.set_string(key, value),
        }
    }

    /// `fsconfig(FSCONFIG_SET_FLAG, key)`.
    pub fn set_flag(&self, key: &str) -> Result<(), MountError> {
        rustix::mount::fsconfig_set_flag(&self.fd, key)
            .map_err(|e| self.error("fsconfig", Some(key), None, e))
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`.
    pub fn set_string(&self, key: &str, value: &OsStr) -> Result<(), MountError> {
        rustix::mount::fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.error("fsconfig", Some(key), Some(value), e))
    }

    /// `fsconfig(FSCONFIG_CMD_CREATE)`: builds the superblock.
    pub fn create(&self) -> Result<(), MountError> {
        rustix::mount::fsconfig_create(&self.fd)
            .map_err(|e| self.error("fsconfig create", None, None, e))
    }

    /// `fsmount`: a detached mount of the created superblock, read-only
    /// when asked. Attach it with `move_mount`.
    pub fn fsmount(&self, readonly: bool) -> Result<OwnedFd, MountError> {
        let attrs = if readonly {
            MountAttrFlags::MOUNT_ATTR_RDONLY
        } else {
            MountAttrFlags::empty()
        };
        rustix::mount::fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.error("fsmount", None, None, e))
    }

    /// Drains the messages the kernel logged on this context, oldest
    /// first, as read (`"e overlay: ..."`, `"w ..."`, `"i ..."`), without
    /// the trailing newline. The kernel keeps a few; reading removes them.
    pub fn messages(&self) -> Vec<String> {
        // The kernel drops a message it cannot fit in the buffer
        // (EMSGSIZE) after taking it off the log, so read with room for
        // any message it formats (they are bounded by a page).
        let mut buf = vec![0u8; 8192];
        let mut out = Vec::new();
        // ENODATA ends the log; any other error (or a runaway log) also
        // ends the drain, as there is nothing better to report.
        while out.len() < 64 {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(n) if n > 0 => out.push(
                    String::from_utf8_lossy(&buf[..n])
                        .trim_end_matches('\n')
                        .to_owned(),
                ),
                _ => break,
            }
        }
        out
    }

    /// A [`MountError::Kernel`] for `step`, with the context's messages.
    fn error(
        &self,
        step: &'static str,
        key: Option<&str>,
        value: Option<&OsStr>,
        e: Errno,
    ) -> MountError {
        MountError::Kernel {
            step,
            key: key.map(str::to_owned),
            value: value.map(OsStr::to_owned),
            source: e.into(),
            messages: self.messages(),
        }
    }
}

impl AsFd for FsContext {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether the kernel's overlayfs takes `lowerdir+` (Linux 6.8+), probed
/// once per process: a throwaway context is given `lowerdir+=/`, which an
/// older overlayfs refuses with `EINVAL` ("Unknown parameter"). A kernel
/// without the new mount API (`ENOSYS`) has no `lowerdir+` either. Other
/// failures (no permission, no overlayfs) are errors and are not cached.
pub fn lowerdir_plus_supported() -> Result<bool, MountError> {
    static CACHE: OnceLock<bool> = OnceLock::new();
    if let Some(&v) = CACHE.get() {
        return Ok(v);
    }
    let v = match FsContext::open("overlay") {
        Ok(ctx) => match ctx.set_string("lowerdir+", OsStr::new("/")) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => false,
            Err(e) => return Err(e),
        },
        Err(e) if e.raw_os_error() == Some(Errno::NOSYS.raw_os_error()) => false,
        Err(e) => return Err(e),
    };
    Ok(*CACHE.get_or_init(|| v))
}

/// Mounts the overlay `spec` describes on `target` (an existing
/// directory; a symlink there is not followed by the new API).
///
/// The API is chosen by `spec.api` ([`MountApi::Auto`]: the new one when
/// [`lowerdir_plus_supported`]). Under the new API a layer path longer than
/// [`FSCONFIG_VALUE_MAX`], and under `mount(2)` an option string longer than
/// a page, make the layer paths go through short links in
/// `spec.link_dir`; without one that is an error
/// ([`MountError::ValueTooLong`], [`MountError::DataTooLong`]), except that
/// [`MountApi::Auto`] first tries `mount(2)` for a long path.
pub fn mount_overlay(spec: &OverlaySpec, target: &Path) -> Result<(), MountError> {
    let ops = plan(spec)?;
    // Made absolute now: a helper thread may resolve it from another cwd.
    let target = std::path::absolute(target).map_err(|e| MountError::io("mount", target, e))?;
    let api = match spec.api {
        MountApi::Auto if lowerdir_plus_supported()? => MountApi::New,
        MountApi::Auto => MountApi::Legacy,
        api => api,
    };
    if api == MountApi::New {
        let long = ops.iter().find_map(|op| match op {
            FsconfigOp::Set { key, value } if value.len() > FSCONFIG_VALUE_MAX => {
                Some((key, value))
            }
            _ => None,
        });
        let Some((key, value)) = long else {
            return mount_new(&ops, &target, spec.readonly);
        };
        if !PATH_KEYS.contains(&key.as_str()) {
            return Err(MountError::BadOption {
                key: key.clone(),
                reason: "value longer than the 255 bytes fsconfig takes",
            });
        }
        let Some(dir) = &spec.link_dir else {
            if spec.api == MountApi::Auto {
                // mount(2) has no limit per value, only per option string,
                // which may well fit.
                return mount_via_legacy(&ops, spec, target);
            }
            return Err(MountError::ValueTooLong {
                key: key.clone(),
                path: PathBuf::from(value),
            });
        };
        let links = ShortLinks::create(dir, &ops)?;
        let short = links.rewrite(&ops);
        return links.in_dir(|| mount_new(&short, &target, spec.readonly));
    }
    mount_via_legacy(&ops, spec, target)
}

/// The `mount(2)` half of [`mount_overlay`]: the option string as is when
/// it fits in a page, else with short links.
fn mount_via_legacy(
    ops: &[FsconfigOp],
    spec: &OverlaySpec,
    target: PathBuf,
) -> Result<(), MountError> {
    let limit = rustix::param::page_size() - 1;
    let legacy = legacy_data(ops)?;
    if legacy.data.len() <= limit {
        return mount_legacy(&legacy, &target);
    }
    let Some(dir) = &spec.link_dir else {
        return Err(MountError::DataTooLong {
            target,
            len: legacy.data.len(),
            limit,
            shortened: false,
        });
    };
    let links = ShortLinks::create(dir, ops)?;
    let legacy = legacy_data(&links.rewrite(ops))?;
    if legacy.data.len() > limit {
        return Err(MountError::DataTooLong {
            target,
            len: legacy.data.len(),
            limit,
            shortened: true,
        });
    }
    links.in_dir(|| mount_legacy(&legacy, &target))
}

/// Mounts with the new API: one `fsconfig` per op, create, `fsmount`,
/// `move_mount` onto `target` (not following a symlink there).
fn mount_new(ops: &[FsconfigOp], target: &Path, readonly: bool) -> Result<(), MountError> {
    let ctx = FsContext::open("overlay")?;
    for op in ops {
        ctx.apply(op)?;
    }
    ctx.create()?;
    let mnt = ctx.fsmount(readonly)?;
    // The detached mount disappears with its fd (dropped on return) unless
    // attached here.
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| MountError::io("move_mount onto", target, e))
}

/// Mounts with `mount(2)`.
fn mount_legacy(legacy: &Legacy, target: &Path) -> Result<(), MountError> {
    let kernel = |e: io::Error| MountError::Kernel {
        step: "mount",
        key: Some(format!("overlay on {target:?}, options")),
        value: Some(OsString::from_vec(legacy.data.clone())),
        source: e,
        messages: Vec::new(),
    };
    let data = CString::new(legacy.data.clone()).map_err(|e| kernel(e.into()))?;
    let flags = if legacy.readonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    rustix::mount::mount(
        legacy.source.as_os_str(),
        target,
        "overlay",
        flags,
        data.as_c_str(),
    )
    .map_err(|e| kernel(e.into()))
}

/// Short links made for one mount: `<dir>/<26 random chars>` pointing at
/// each layer path. They are removed on drop; once the mount exists it
/// holds the directories themselves, not the names.
struct ShortLinks {
    /// The short-link directory.
    dir: OwnedFd,
    /// Its path, for errors.
    dir_path: PathBuf,
    /// (layer path, link name) for every link made.
    links: Vec<(OsString, String)>,
}

impl ShortLinks {
    /// Makes a link in `dir` for the value of every layer-path op.
    fn create(dir: &Path, ops: &[FsconfigOp]) -> Result<Self, MountError> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MountError::io("open short-link directory", dir, e))?;
        let mut links = ShortLinks {
            dir: fd,
            dir_path: dir.to_path_buf(),
            links: Vec::new(),
        };
        let mut rng = rand::rng();
        for op in ops {
            let FsconfigOp::Set { key, value } = op else {
                continue;
            };
            if !PATH_KEYS.contains(&key.as_str()) {
                continue;
            }
            loop {
                let name: String = (0..SHORT_NAME_LEN)
                    .map(|_| char::from(SHORT_NAME_ALPHABET[rng.random_range(0..32)]))
                    .collect();
                match rustix::fs::symlinkat(value.as_os_str(), &links.dir, name.as_str()) {
                    Ok(()) => {
                        links.links.push((value.clone(), name));
                        break;
                    }
                    // 130 random bits make this all but impossible; a
                    // leftover of a crashed process is the likely cause.
                    Err(Errno::EXIST) => continue,
                    Err(e) => {
                        return Err(MountError::io(
                            "symlink in short-link directory",
                            &links.dir_path.join(name),
                            e,
                        ));
                    }
                }
            }
        }
        Ok(links)
    }

    /// Runs `f` on a helper thread whose working directory is the link
    /// directory, so the links' bare names resolve. The thread first
    /// unshares its filesystem context (`CLONE_FS`), so its `fchdir`
    /// leaves every other thread's working directory alone, and it ends
    /// (taking that context with it) when `f` returns.
    fn in_dir<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, MountError> + Send,
    ) -> Result<T, MountError> {
        let (dir, here) = (self.dir.as_fd(), self.dir_path.as_path());
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                strata_sys::unshare_fs()
                    .map_err(|e| MountError::io("unshare(CLONE_FS) for", here, e))?;
                rustix::process::fchdir(dir).map_err(|e| MountError::io("fchdir", here, e))?;
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The plan with every layer path replaced by its link's name.
    fn rewrite(&self, ops: &[FsconfigOp]) -> Vec<FsconfigOp> {
        ops.iter()
            .map(|op| match op {
                FsconfigOp::Set { key, value } if PATH_KEYS.contains(&key.as_str()) => {
                    match self.links.iter().find(|(p, _)| p == value) {
                        Some((_, name)) => FsconfigOp::set(key, name.as_str()),
                        None => op.clone(),
                    }
                }
                _ => op.clone(),
            })
            .collect()
    }
}

impl Drop for ShortLinks {
    fn drop(&mut self) {
        for (_, name) in &self.links {
            // Drop cannot report; a link left behind (say, on a read-only
            // remount of the home) is harmless, named randomly, and the
            // owner of the directory may sweep it.
            let _ = rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
        }
    }
}

/// Unmounts `target` without following a symlink there
/// (`UMOUNT_NOFOLLOW`); with `detach`, lazily (`MNT_DETACH`: gone from the
/// namespace at once, torn down when no longer busy). When nothing is
/// mounted there the error is [`MountError::NotMounted`] (see
/// [`MountError::is_not_mounted`]).
pub fn unmount(target: &Path, detach: bool) -> Result<(), MountError> {
    let mut flags = UnmountFlags::NOFOLLOW;
    if detach {
        flags |= UnmountFlags::DETACH;
    }
    match rustix::mount::unmount(target, flags) {
        Ok(()) => Ok(()),
        // The flags are valid, so EINVAL means the target is not a mount
        // point.
        Err(Errno::INVAL) => Err(MountError::NotMounted {
            path: target.to_path_buf(),
        }),
        Err(e) => Err(MountError::io("unmount", target, e)),
    }
}

/// True when `path` is the root of an overlay mount: its filesystem is
/// overlayfs (`statfs` magic) and it sits on another mount than its
/// parent (`statx` mount ids; device numbers on kernels before 5.8). A
/// directory inside an overlay, or a plain directory, is not. A bind
/// mount of a directory of an overlay also counts.
pub fn is_overlay_mount(path: &Path) -> Result<bool, MountError> {
    let fs = rustix::fs::statfs(path).map_err(|e| MountError::io("statfs", path, e))?;
    if fs.f_type != OVERLAYFS_SUPER_MAGIC {
        return Ok(false);
    }
    let stx = |p: &Path| {
        rustix::fs::statx(
            rustix::fs::CWD,
            p,
            AtFlags::empty(),
            StatxFlags::MNT_ID | StatxFlags::INO,
        )
        .map_err(|e| MountError::io("statx", p, e))
    };
    let me = stx(path)?;
    let parent = stx(&path.join(".."))?;
    let same_object = me.stx_ino == parent.stx_ino
        && (me.stx_dev_major, me.stx_dev_minor) == (parent.stx_dev_major, parent.stx_dev_minor);
    if same_object {
        // `..` of the namespace root is itself, and that root is a mount.
        return Ok(true);
    }
    if me.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        Ok(me.stx_mnt_id != parent.stx_mnt_id)
    } else {
        Ok((me.stx_dev_major, me.stx_dev_minor) != (parent.stx_dev_major, parent.stx_dev_minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lowers: &[&str]) -> OverlaySpec {
        OverlaySpec {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            readonly: true,
            ..OverlaySpec::default()
        }
    }

    fn set(k: &str, v: &str) -> FsconfigOp {
        FsconfigOp::set(k, v)
    }

    fn flag(k: &str) -> FsconfigOp {
        FsconfigOp::Flag(k.into())
    }

    #[test]
    fn plans_read_only_and_read_write() {
        let ro = spec(&["/l/a", "/l/b"]);
        let rw = OverlaySpec {
            upper: Some("/u".into()),
            work: Some("/w".into()),
            readonly: false,
            userxattr: true,
            extra: vec![
                (
                    "context".into(),
                    "system_u:object_r:container_file_t:s0:c1,c2".into(),
                ),
                ("volatile".into(), String::new()),
            ],
            ..spec(&["/l/a"])
        };
        let ro_upper = OverlaySpec {
            upper: Some("/u".into()),
            work: Some("/w".into()),
            ..spec(&["/l/a"])
        };
        let cases: Vec<(&str, OverlaySpec, Vec<FsconfigOp>)> = vec![
            (
                "read-only, two lowers",
                ro,
                vec![
                    set("source", "overlay"),
                    set("index", "off"),
                    set("lowerdir+", "/l/a"),
                    set("lowerdir+", "/l/b"),
                    flag("ro"),
                ],
            ),
            (
                "read-write, userxattr, extras",
                rw,
                vec![
                    set("source", "overlay"),
                    set("index", "off"),
                    flag("userxattr"),
                    set("lowerdir+", "/l/a"),
                    set("upperdir", "/u"),
                    set("workdir", "/w"),
                    set("context", "system_u:object_r:container_file_t:s0:c1,c2"),
                    flag("volatile"),
                ],
            ),
            (
                "read-only with an upper, one lower",
                ro_upper,
                vec![
                    set("source", "overlay"),
                    set("index", "off"),
                    set("lowerdir+", "/l/a"),
                    set("upperdir", "/u"),
                    set("workdir", "/w"),
                    flag("ro"),
                ],
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(plan(&s).expect(name), want, "{name}");
        }
    }

    #[test]
    fn refuses_bad_specs_naming_the_problem() {
        let with = |f: &dyn Fn(&mut OverlaySpec)| {
            let mut s = spec(&["/a", "/b"]);
            f(&mut s);
            plan(&s).expect_err("must be refused").to_string()
        };
        let cases: Vec<(&str, String)> = vec![
            ("no lower", with(&|s| s.lowers.clear())),
            (
                "upperdir and workdir",
                with(&|s| s.upper = Some("/u".into())),
            ),
            (
                "upperdir and workdir",
                with(&|s| s.work = Some("/w".into())),
            ),
            ("at least 2 lower", with(&|s| s.lowers.truncate(1))),
            ("set readonly", with(&|s| s.readonly = false)),
            (
                "lowerdir \"rel/x\": must be absolute",
                with(&|s| s.lowers[1] = "rel/x".into()),
            ),
            (
                "lowerdir \"/a,b\": contains ','",
                with(&|s| s.lowers[0] = "/a,b".into()),
            ),
            (
                "lowerdir \"/a:b\": contains ':'",
                with(&|s| s.lowers[0] = "/a:b".into()),
            ),
            (
                "lowerdir \"/a\\nb\": contains a newline",
                with(&|s| s.lowers[0] = "/a\nb".into()),
            ),
            ("contains '\\'", with(&|s| s.lowers[0] = "/a\\b".into())),
            (
                "upperdir \"u\": must be absolute",
                with(&|s| {
                    s.upper = Some("u".into());
                    s.work = Some("/w".into());
                }),
            ),
            (
                "workdir \"/w:x\"",
                with(&|s| {
                    s.upper = Some("/u".into());
                    s.work = Some("/w:x".into());
                }),
            ),
            (
                "option \"lowerdir\": set from the spec",
                with(&|s| s.extra.push(("lowerdir".into(), "/x".into()))),
            ),
            (
                "option \"index\": set from the spec",
                with(&|s| s.extra.push(("index".into(), "on".into()))),
            ),
            (
                "option \"a=b\": key contains",
                with(&|s| s.extra.push(("a=b".into(), String::new()))),
            ),
            (
                "option \"context\": value contains NUL or a newline",
                with(&|s| s.extra.push(("context".into(), "a\nb".into()))),
            ),
        ];
        for (want, got) in cases {
            assert!(got.contains(want), "{got:?} should mention {want:?}");
        }
    }

    #[test]
    fn legacy_data_folds_lowers_and_flags() {
        let s = OverlaySpec {
            upper: Some("/u".into()),
            work: Some("/w".into()),
            userxattr: true,
            extra: vec![
                ("context".into(), "a:b:c:s0:c1,c2".into()),
                ("redirect_dir".into(), "off".into()),
            ],
            ..spec(&["/l/1", "/l/2", "/l/3"])
        };
        let l = legacy_data(&plan(&s).expect("plan")).expect("legacy");
        assert_eq!(l.source, "overlay");
        assert!(l.readonly);
        assert_eq!(
            String::from_utf8(l.data).expect("utf8"),
            "index=off,userxattr,lowerdir=/l/1:/l/2:/l/3,upperdir=/u,workdir=/w,\
             context=\"a:b:c:s0:c1,c2\",redirect_dir=off"
        );
        let bad = vec![set("context", "a,\"b")];
        assert!(
            legacy_data(&bad)
                .expect_err("quote in quoted value")
                .to_string()
                .contains("context")
        );
    }

    #[test]
    fn error_text_carries_key_value_and_kernel_lines() {
        let e = MountError::Kernel {
            step: "fsconfig",
            key: Some("lowerdir+".into()),
            value: Some("/x/l500".into()),
            source: io::Error::from_raw_os_error(Errno::INVAL.raw_os_error()),
            messages: vec!["e overlay: too many lower directories, limit is 500".into()],
        };
        let s = e.to_string();
        assert!(s.starts_with("fsconfig lowerdir+=\"/x/l500\": "), "{s}");
        assert!(
            s.ends_with("[kernel: e overlay: too many lower directories, limit is 500]"),
            "{s}"
        );
        assert_eq!(e.raw_os_error(), Some(Errno::INVAL.raw_os_error()));
        assert!(MountError::NotMounted { path: "/m".into() }.is_not_mounted());
    }
}
