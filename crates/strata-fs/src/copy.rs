//! Faithful copies of a whole layer tree from one root into another, as
//! the vfs driver needs to build a child layer from its parent.
//!
//! The copy keeps everything a layer's content is made of: file data
//! (shared by reflink where the filesystem can, else copied in the kernel
//! with holes kept), hard links within the tree, owners, modes with
//! setuid/setgid/sticky, every extended attribute (`security.capability`
//! and `trusted.*` included), access and modification times to the
//! nanosecond, symlinks as written, device nodes and fifos. Sockets are
//! skipped: they are not content and cannot be recreated meaningfully.
//!
//! The order of metadata changes matters: owner first (a `chown` clears
//! setuid/setgid and `security.capability`), then xattrs, then the mode,
//! then times. A directory's mode and times are set after its children are
//! in place ([`Visitor::leave_dir`]), so that creating them neither fails
//! on a read-only directory nor bumps the copied mtime.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom};
use rustix::io::Errno;

use crate::ops::{
    chmod_at, chmod_fd, chown_at, chown_fd, mknod_at, open_dir_at, set_times_at, set_times_fd,
    stat_times,
};
use crate::walk::{Visitor, WalkControl, WalkEntry, walk};
use crate::xattr::{set_xattr_at, set_xattr_fd, xattrs_at, xattrs_fd};
use crate::{FsError, Result, Root};

/// Largest chunk handed to one `copy_file_range` call; the kernel caps a
/// call near 2 GiB anyway, and smaller calls keep a huge file from holding
/// the inode locks for long.
const COPY_CHUNK: usize = 1 << 30;

/// Buffer size for the read/write fallback: big enough that syscall count
/// does not dominate, small enough to be irrelevant for memory.
const BUF_SIZE: usize = 1 << 20;

/// What [`copy_tree`] made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Directories created (the root itself not counted).
    pub dirs: u64,
    /// Regular files created (not counting extra hard links).
    pub files: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Device nodes and fifos created.
    pub specials: u64,
    /// Extra names linked to an inode already copied.
    pub hardlinks: u64,
    /// Bytes of regular-file content (apparent sizes).
    pub bytes: u64,
    /// Regular files whose data was shared by reflink instead of copied.
    pub reflinked: u64,
    /// Sockets left out.
    pub skipped: u64,
}

/// Copies the whole tree of `src` into `dst`, which should be empty: see
/// the module documentation for what is kept. The metadata of `src`'s root
/// directory is copied onto `dst`'s root last.
pub fn copy_tree(src: &Root, dst: &Root) -> Result<CopyStats> {
    let mut c = Copier::new(dst)?;
    walk(src, b"", &mut c)?;
    let st = rustix::fs::fstat(src.fd()).map_err(|e| FsError::io("stat", b"", e))?;
    chown_fd(dst.fd(), st.st_uid, st.st_gid, b"")?;
    for (k, v) in xattrs_fd(src.fd(), b"")? {
        set_xattr_fd(dst.fd(), &k, &v, b"")?;
    }
    chmod_fd(dst.fd(), st.st_mode, b"")?;
    set_times_fd(dst.fd(), &stat_times(&st), b"")?;
    Ok(c.stats)
}

/// Copies the object at `path` (not a directory) from `src` into `dst`,
/// creating the directories above it in `dst` with the metadata they have
/// in `src`: what overlayfs calls a copy-up. Used when a layer hard-links
/// a file that a lower layer holds. Every directory on the way must be a
/// real directory in `src` (not a symlink), so the copy lands at the very
/// path the link names.
pub fn copy_up(src: &Root, dst: &Root, path: &[u8]) -> Result<()> {
    let mut c = Copier::new(dst)?;
    let mut made = Vec::new();
    let mut prefix_end = 0;
    let comps: Vec<&[u8]> = crate::components(path).collect();
    for (i, comp) in comps.iter().enumerate() {
        prefix_end += comp.len() + usize::from(i > 0);
        let p = &path[..prefix_end];
        let (sparent, name) = src.open_parent(p)?;
        let st = rustix::fs::statat(&sparent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::io("lstat", p, e))?;
        let e = WalkEntry {
            path: p,
            name,
            parent: sparent.as_fd(),
            stat: &st,
        };
        let last = i + 1 == comps.len();
        let is_dir = e.file_type() == FileType::Directory;
        if last == is_dir {
            return Err(FsError::Invalid {
                path: crate::display_path(p),
                reason: if last {
                    "is a directory in the lower layer".into()
                } else {
                    "is not a directory in the lower layer".into()
                },
            });
        }
        match dst.lstat(p)? {
            Some(d) if !last && FileType::from_raw_mode(d.st_mode) == FileType::Directory => {
                c.dirs.push(dst.open_dir(p)?);
            }
            Some(_) => {
                return Err(FsError::Invalid {
                    path: crate::display_path(p),
                    reason: "is in the way of a copy-up".into(),
                });
            }
            None => {
                c.visit(&e)?;
                if is_dir {
                    made.push((p.to_vec(), st));
                }
            }
        }
    }
    // Modes and times last, deepest first, so making children does not
    // disturb them.
    for (p, st) in made.iter().rev() {
        let fd = dst.open_dir(p)?;
        chmod_fd(fd.as_fd(), st.st_mode, p)?;
        set_times_fd(fd.as_fd(), &stat_times(st), p)?;
    }
    Ok(())
}

/// The walk visitor that mirrors each object into the destination.
struct Copier<'a> {
    dst: &'a Root,
    /// Handles of the destination directories on the current branch:
    /// `dirs[d]` is the directory holding objects at depth `d + 1`.
    dirs: Vec<OwnedFd>,
    /// First destination path of each multiply-linked source inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    data: DataCopier,
    stats: CopyStats,
}

impl<'a> Copier<'a> {
    /// A copier into `dst`, starting at its root.
    fn new(dst: &'a Root) -> Result<Copier<'a>> {
        Ok(Copier {
            dst,
            dirs: vec![dst.open_dir(b"")?],
            links: HashMap::new(),
            data: DataCopier::default(),
            stats: CopyStats::default(),
        })
    }

    /// Links `e` to the copy of an inode met before; false if it is the
    /// first name of its inode (which is then remembered).
    fn link_known(&mut self, e: &WalkEntry<'_>) -> Result<bool> {
        let key = (e.stat.st_dev, e.stat.st_ino);
        if let Some(first) = self.links.get(&key) {
            let (fparent, fname) = self.dst.open_parent(first)?;
            let dparent = dst_parent(&mut self.dirs, e.path)?;
            rustix::fs::linkat(&fparent, fname, dparent, e.name, AtFlags::empty())
                .map_err(|err| FsError::io("link", e.path, err))?;
            self.stats.hardlinks += 1;
            return Ok(true);
        }
        self.links.insert(key, e.path.to_vec());
        Ok(false)
    }

    fn copy_file(&mut self, e: &WalkEntry<'_>) -> Result<()> {
        let src = File::from(
            rustix::fs::openat(
                e.parent,
                e.name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| FsError::io("open", e.path, err))?,
        );
        let dparent = dst_parent(&mut self.dirs, e.path)?;
        let dst = File::from(
            rustix::fs::openat(
                dparent,
                e.name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|err| FsError::io("create", e.path, err))?,
        );
        let size = u64::try_from(e.stat.st_size).unwrap_or(0);
        if self.data.copy(&src, &dst, size, e.path)? {
            self.stats.reflinked += 1;
        }
        chown_fd(dst.as_fd(), e.stat.st_uid, e.stat.st_gid, e.path)?;
        for (k, v) in xattrs_fd(src.as_fd(), e.path)? {
            set_xattr_fd(dst.as_fd(), &k, &v, e.path)?;
        }
        chmod_fd(dst.as_fd(), e.stat.st_mode, e.path)?;
        set_times_fd(dst.as_fd(), &stat_times(e.stat), e.path)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Copies owner, xattrs, mode (not for symlinks) and times of a
    /// non-regular, non-directory object by name.
    fn copy_meta_at(&mut self, e: &WalkEntry<'_>, symlink: bool) -> Result<()> {
        let xattrs = xattrs_at(e.parent, e.name, e.path)?;
        let dparent = dst_parent(&mut self.dirs, e.path)?;
        chown_at(dparent, e.name, e.stat.st_uid, e.stat.st_gid, e.path)?;
        for (k, v) in xattrs {
            set_xattr_at(dparent, e.name, &k, &v, e.path)?;
        }
        if !symlink {
            chmod_at(dparent, e.name, e.stat.st_mode, e.path)?;
        }
        set_times_at(dparent, e.name, &stat_times(e.stat), e.path)
    }
}

impl Visitor for Copier<'_> {
    fn visit(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl> {
        let kind = e.file_type();
        if kind != FileType::Directory && e.stat.st_nlink > 1 && self.link_known(e)? {
            return Ok(WalkControl::Continue);
        }
        match kind {
            FileType::Directory => {
                let dparent = dst_parent(&mut self.dirs, e.path)?;
                // Owner-only until its children are in; the real mode comes
                // in `leave_dir`.
                rustix::fs::mkdirat(dparent, e.name, Mode::from_raw_mode(0o700))
                    .map_err(|err| FsError::io("mkdir", e.path, err))?;
                let fd = open_dir_at(dparent, e.name, e.path)?;
                chown_fd(fd.as_fd(), e.stat.st_uid, e.stat.st_gid, e.path)?;
                for (k, v) in xattrs_at(e.parent, e.name, e.path)? {
                    set_xattr_fd(fd.as_fd(), &k, &v, e.path)?;
                }
                self.dirs.push(fd);
                self.stats.dirs += 1;
            }
            FileType::RegularFile => self.copy_file(e)?,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(e.parent, e.name, Vec::new())
                    .map_err(|err| FsError::io("readlink", e.path, err))?;
                let dparent = dst_parent(&mut self.dirs, e.path)?;
                rustix::fs::symlinkat(target.as_c_str(), dparent, e.name)
                    .map_err(|err| FsError::io("symlink", e.path, err))?;
                self.copy_meta_at(e, true)?;
                self.stats.symlinks += 1;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let dparent = dst_parent(&mut self.dirs, e.path)?;
                mknod_at(dparent, e.name, kind, 0o600, e.stat.st_rdev, e.path)?;
                self.copy_meta_at(e, false)?;
                self.stats.specials += 1;
            }
            FileType::Socket | FileType::Unknown => self.stats.skipped += 1,
        }
        Ok(WalkControl::Continue)
    }

    fn leave_dir(&mut self, e: &WalkEntry<'_>) -> Result<()> {
        let depth = e.path.iter().filter(|&&b| b == b'/').count();
        self.dirs.truncate(depth + 2);
        let fd = self.dirs.pop().ok_or_else(|| lost(e.path))?;
        chmod_fd(fd.as_fd(), e.stat.st_mode, e.path)?;
        set_times_fd(fd.as_fd(), &stat_times(e.stat), e.path)
    }
}

/// The destination directory that corresponds to the parent of the
/// object at `path`, given the stack of destination directories on the
/// current branch (`dirs[d]` holds objects at depth `d + 1`).
fn dst_parent<'d>(dirs: &'d mut Vec<OwnedFd>, path: &[u8]) -> Result<BorrowedFd<'d>> {
    let depth = path.iter().filter(|&&b| b == b'/').count();
    dirs.truncate(depth + 1);
    match dirs.get(depth) {
        Some(d) => Ok(d.as_fd()),
        None => Err(lost(path)),
    }
}

/// The error for a walk that does not match the directory stack, which
/// would mean the walk visited objects out of order.
fn lost(path: &[u8]) -> FsError {
    FsError::Invalid {
        path: crate::display_path(path),
        reason: "copy lost track of its destination directory".into(),
    }
}

/// Copies file contents by the fastest means the filesystems allow,
/// remembering which means failed so later files do not retry them.
struct DataCopier {
    reflink: bool,
    copy_range: bool,
    buf: Vec<u8>,
}

impl Default for DataCopier {
    fn default() -> Self {
        DataCopier {
            reflink: true,
            copy_range: true,
            buf: Vec::new(),
        }
    }
}

impl DataCopier {
    /// Copies `size` bytes of `src` into the empty `dst`, keeping holes.
    /// Returns true if the data was shared by reflink.
    fn copy(&mut self, src: &File, dst: &File, size: u64, path: &[u8]) -> Result<bool> {
        if size == 0 {
            return Ok(false);
        }
        if self.reflink {
            match rustix::fs::ioctl_ficlone(dst, src) {
                Ok(()) => return Ok(true),
                // The filesystem (or the pair) cannot share extents at all.
                Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::XDEV | Errno::NOSYS) => {
                    self.reflink = false
                }
                // This file cannot be cloned (e.g. an unaligned tail on
                // some filesystems); others may be.
                Err(Errno::INVAL | Errno::PERM | Errno::TXTBSY) => {}
                Err(e) => return Err(FsError::io("reflink", path, e)),
            }
        }
        let mut off = 0;
        while off < size {
            let start = match rustix::fs::seek(src, SeekFrom::Data(off)) {
                Ok(s) => s,
                // No data after `off`: the rest is a hole.
                Err(Errno::NXIO) => break,
                Err(e) => return Err(FsError::io("seek data", path, e)),
            };
            let end = rustix::fs::seek(src, SeekFrom::Hole(start))
                .map_err(|e| FsError::io("seek hole", path, e))?
                .min(size);
            if start >= end {
                break;
            }
            self.copy_range(src, dst, start, end - start, path)?;
            off = end;
        }
        // Gives the file its size when it ends in a hole.
        rustix::fs::ftruncate(dst, size).map_err(|e| FsError::io("truncate", path, e))?;
        Ok(false)
    }

    /// Copies `len` bytes at `off` in `src` to the same offset in `dst`.
    fn copy_range(
        &mut self,
        src: &File,
        dst: &File,
        off: u64,
        len: u64,
        path: &[u8],
    ) -> Result<()> {
        let (mut inp, mut out, end) = (off, off, off + len);
        while self.copy_range && inp < end {
            let n = usize::try_from(end - inp)
                .unwrap_or(COPY_CHUNK)
                .min(COPY_CHUNK);
            match rustix::fs::copy_file_range(src, Some(&mut inp), dst, Some(&mut out), n) {
                // The source shrank under us: nothing more to copy.
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) if inp == off => {
                    self.copy_range = false;
                }
                Err(e) => return Err(FsError::io("copy_file_range", path, e)),
            }
        }
        if self.buf.is_empty() {
            self.buf = vec![0; BUF_SIZE];
        }
        while inp < end {
            let n = usize::try_from(end - inp).unwrap_or(BUF_SIZE).min(BUF_SIZE);
            let got = src
                .read_at(&mut self.buf[..n], inp)
                .map_err(|e| FsError::io("read", path, e))?;
            if got == 0 {
                return Ok(());
            }
            dst.write_all_at(&self.buf[..got], inp)
                .map_err(|e| FsError::io("write", path, e))?;
            inp += got as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{need_root, tree_manifest};
    use std::io::{Seek, Write};
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn copies_everything() {
        if !need_root("chown, mknod and trusted.* xattrs") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("src");
        let t = d.path().join("dst");
        std::fs::create_dir_all(s.join("dir/sub")).unwrap();
        std::fs::create_dir(&t).unwrap();
        let src = Root::open(&s).unwrap();
        let put = |p: &str, data: &[u8]| std::fs::write(s.join(p), data).unwrap();
        put("dir/f", b"hello");
        put("empty", b"");
        put("dir/sub/big", &vec![0xa5; 3 << 20]);
        // A sparse file: data, a 4 MiB hole, data, a hole at the end.
        {
            let mut f = File::create(s.join("sparse")).unwrap();
            f.write_all(b"head").unwrap();
            f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
            f.write_all(b"tail").unwrap();
            f.set_len(12 << 20).unwrap();
        }
        std::fs::hard_link(s.join("dir/f"), s.join("hl")).unwrap();
        std::fs::hard_link(s.join("dir/f"), s.join("dir/sub/hl2")).unwrap();
        symlink("/etc/passwd", s.join("abs")).unwrap();
        symlink("../dir", s.join("dir/rel")).unwrap();
        std::fs::hard_link(s.join("abs"), s.join("abs-hl")).unwrap();
        let fd = src.fd();
        mknod_at(
            fd,
            b"null",
            FileType::CharacterDevice,
            0o666,
            rustix::fs::makedev(1, 3),
            b"null",
        )
        .unwrap();
        mknod_at(
            fd,
            b"blk",
            FileType::BlockDevice,
            0o600,
            rustix::fs::makedev(7, 0),
            b"blk",
        )
        .unwrap();
        mknod_at(fd, b"fifo", FileType::Fifo, 0o644, 0, b"fifo").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(s.join("sock")).unwrap();
        chown_at(fd, b"dir", 1, 2, b"dir").unwrap();
        chown_at(fd, b"hl", 1000, 1001, b"hl").unwrap();
        chown_at(fd, b"abs", 3, 4, b"abs").unwrap();
        chown_at(fd, b"fifo", 5, 6, b"fifo").unwrap();
        chmod_at(fd, b"hl", 0o4755, b"hl").unwrap();
        chmod_at(fd, b"empty", 0o2640, b"empty").unwrap();
        chmod_at(fd, b"dir", 0o1705, b"dir").unwrap();
        chmod_at(fd, b"fifo", 0o4610, b"fifo").unwrap();
        chmod_at(fd, b"sparse", 0o400, b"sparse").unwrap();
        let cap: &[u8] =
            b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        set_xattr_at(fd, b"hl", b"security.capability", cap, b"hl").unwrap();
        set_xattr_at(fd, b"dir", b"trusted.overlay.opaque", b"y", b"dir").unwrap();
        set_xattr_at(fd, b"dir", b"user.d", b"\x00\xff", b"dir").unwrap();
        set_xattr_at(fd, b"abs", b"trusted.sym", b"s", b"abs").unwrap();
        set_xattr_at(fd, b"null", b"trusted.dev", b"d", b"null").unwrap();
        set_xattr_fd(fd, b"trusted.root", b"r", b"").unwrap();
        chmod_fd(fd, 0o750, b"").unwrap();
        // A read-only directory must still receive its children.
        std::fs::set_permissions(
            s.join("dir/sub"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 100,
                tv_nsec: 1,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_600_000_000,
                tv_nsec: 987_654_321,
            },
        };
        for p in [&b"dir/sub"[..], b"dir", b"abs", b"fifo", b"sparse", b"null"] {
            let (parent, name) = src.open_parent(p).unwrap();
            set_times_at(parent.as_fd(), name, &times, p).unwrap();
        }
        set_times_fd(fd, &times, b"").unwrap();

        let dst = Root::open(&t).unwrap();
        let stats = copy_tree(&src, &dst).unwrap();
        drop(listener);
        assert_eq!(stats.skipped, 1);
        assert_eq!(stats.hardlinks, 3);
        assert_eq!(stats.symlinks, 2);
        assert_eq!(stats.specials, 3);
        assert_eq!(stats.dirs, 2);
        assert_eq!(stats.files, 4);

        let mut want = tree_manifest(&src);
        // The socket is the one thing not copied.
        want.retain(|l| !l.starts_with("sock "));
        let got = tree_manifest(&dst);
        assert_eq!(got, want);
        // Sparse stays sparse.
        let m = std::fs::metadata(t.join("sparse")).unwrap();
        assert_eq!(m.len(), 12 << 20);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "sparse copy allocated {} blocks",
            m.blocks()
        );
        // Hard link groups are kept.
        let a = std::fs::metadata(t.join("hl")).unwrap();
        let b = std::fs::metadata(t.join("dir/sub/hl2")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 3);
        // Atimes are kept too (the fifo's, since reading the others moves
        // the source's atime).
        let f = std::fs::symlink_metadata(t.join("fifo")).unwrap();
        assert_eq!((f.atime(), f.atime_nsec()), (100, 1));
        assert_eq!(
            std::fs::symlink_metadata(t.join("abs")).unwrap().ino(),
            std::fs::symlink_metadata(t.join("abs-hl")).unwrap().ino()
        );
    }

    #[test]
    fn data_paths_agree() {
        // Every fallback level gives the same bytes and keeps holes.
        let d = tempfile::tempdir().unwrap();
        let mut src = File::create_new(d.path().join("s")).unwrap();
        src.write_all(&[1u8; 70_000]).unwrap();
        src.seek(std::io::SeekFrom::Start(5 << 20)).unwrap();
        src.write_all(b"end").unwrap();
        let src = File::open(d.path().join("s")).unwrap();
        let want = std::fs::read(d.path().join("s")).unwrap();
        for (i, (reflink, copy_range)) in [(true, true), (false, true), (false, false)]
            .into_iter()
            .enumerate()
        {
            let p = d.path().join(format!("d{i}"));
            let dst = File::create_new(&p).unwrap();
            let mut c = DataCopier {
                reflink,
                copy_range,
                buf: Vec::new(),
            };
            c.copy(&src, &dst, want.len() as u64, b"s").unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), want, "level {i}");
            assert!(
                std::fs::metadata(&p).unwrap().blocks() * 512 < 2 << 20,
                "level {i}"
            );
        }
    }
}
