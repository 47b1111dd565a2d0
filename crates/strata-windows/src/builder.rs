//! Writing Windows layer tars by the rules Windows importers need
//! (windows-layer-format.md §8 (c)): what `windows-layer build` and the
//! driver's generated exports emit.
//!
//! [`LayerBuilder`] starts a delta layer with the `Files` and `Hives`
//! directory entries, emits every parent directory before its children
//! (making any the caller did not give, with default metadata), checks
//! every name against the Win32 rules and refuses case-insensitive
//! duplicates (NTFS would merge them), and writes PAX headers with the
//! Windows records on every entry: `MSWINDOWS.fileattr`,
//! `MSWINDOWS.rawsd`, `LIBARCHIVE.creationtime`, `atime` and `ctime`, and
//! the file-type bits in the mode field, as go-winio writes them.
//! Streams follow their file; whiteouts are empty regular files named
//! `.wh.<name>`, as moby and hcsshim export them.

use std::collections::HashSet;
use std::io::{Read, Write};

use strata_tar::{EntryKind, Header, TarWriter, Timestamp};

use crate::attr;
use crate::names::{WinName, check_component, classify, fold_case};
use crate::records::WinRecords;
use crate::sd;
use crate::time::format_pax_time;

/// BuildKit's and buildah's SD for directories:
/// `O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;FA;;;BA)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;BU)(A;CI;DC;;;BU)`.
pub const DEFAULT_DIR_SDDL: &str = "O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;FA;;;BA)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;BU)(A;CI;DC;;;BU)";
/// BuildKit's and buildah's SD for files:
/// `O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)`.
pub const DEFAULT_FILE_SDDL: &str = "O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)";

/// Mode type bits as go-winio sets them.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The name is not acceptable on Windows.
    #[error("{path:?}: {reason}")]
    Name {
        /// The path concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The entries are out of the order Windows needs.
    #[error("{path:?}: {reason}")]
    Order {
        /// The path concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A security descriptor could not be made.
    #[error(transparent)]
    Sd(#[from] sd::SdError),
    /// Writing the tar failed.
    #[error(transparent)]
    Tar(#[from] strata_tar::TarError),
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Default security descriptors and times for entries without their own.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// SD for directories (self-relative binary).
    pub dir_sd: Vec<u8>,
    /// SD for files and links (self-relative binary).
    pub file_sd: Vec<u8>,
    /// Time for the entries the builder makes itself (`Files`, `Hives`,
    /// missing parents).
    pub default_time: Timestamp,
}

impl BuildOptions {
    /// BuildKit's descriptors (both parsed from SDDL here), epoch times.
    pub fn new() -> Result<BuildOptions, sd::SdError> {
        Ok(BuildOptions {
            dir_sd: sd::sddl_to_binary(DEFAULT_DIR_SDDL)?,
            file_sd: sd::sddl_to_binary(DEFAULT_FILE_SDDL)?,
            default_time: Timestamp::default(),
        })
    }

    /// The same descriptor (given as SDDL) for every entry.
    pub fn with_sddl(mut self, sddl: &str) -> Result<BuildOptions, sd::SdError> {
        let b = sd::sddl_to_binary(sddl)?;
        self.dir_sd = b.clone();
        self.file_sd = b;
        Ok(self)
    }
}

/// Windows metadata of one entry to write.
#[derive(Clone, Debug, Default)]
pub struct EntryMeta {
    /// Windows records to keep (a missing fileattr, SD or creation time is
    /// filled in with the defaults).
    pub win: WinRecords,
    /// Further records kept verbatim (unknown ones of an earlier import).
    pub extra: Vec<(Vec<u8>, Vec<u8>)>,
    /// Last write time.
    pub mtime: Timestamp,
}

impl EntryMeta {
    /// Default metadata with the given modification time.
    pub fn at(mtime: Timestamp) -> EntryMeta {
        EntryMeta {
            mtime,
            ..EntryMeta::default()
        }
    }
}

/// Writes a Windows delta layer tar.
pub struct LayerBuilder<W: Write> {
    tw: TarWriter<W>,
    opts: BuildOptions,
    /// Paths emitted so far, folded (NTFS compares names case-insensitively).
    seen: HashSet<Vec<u8>>,
    /// Directories emitted, exact case.
    dirs: HashSet<Vec<u8>>,
    /// The last regular file written, whose streams may follow.
    last_file: Option<(Vec<u8>, Header)>,
    entries: u64,
}

impl<W: Write> LayerBuilder<W> {
    /// Starts a layer: the `Files` and `Hives` directory entries.
    pub fn new(w: W, opts: BuildOptions) -> Result<LayerBuilder<W>, BuildError> {
        let mut tw = TarWriter::new(w);
        tw.set_mode_type_bits(true);
        let mut b = LayerBuilder {
            tw,
            opts,
            seen: HashSet::new(),
            dirs: HashSet::new(),
            last_file: None,
            entries: 0,
        };
        let t = b.opts.default_time;
        b.dir(b"Files", &EntryMeta::at(t))?;
        b.dir(b"Hives", &EntryMeta::at(t))?;
        Ok(b)
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Whether `path` (a layer path) was written already.
    pub fn has(&self, path: &[u8]) -> bool {
        self.seen.contains(&fold_case(path))
    }

    /// Writes a directory (and any missing parents). A directory written
    /// already (e.g. as a parent made earlier) is not written again.
    pub fn dir(&mut self, path: &[u8], meta: &EntryMeta) -> Result<(), BuildError> {
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.check(path)?;
        self.parents(path)?;
        let h = self.header(
            EntryKind::Directory,
            path,
            meta,
            attr::DIRECTORY,
            S_IFDIR,
            true,
        );
        self.write(h, &mut std::io::empty())?;
        self.dirs.insert(path.to_vec());
        Ok(())
    }

    /// Writes a regular file of `size` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), BuildError> {
        self.check(path)?;
        self.parents(path)?;
        let mut h = self.header(
            EntryKind::Regular,
            path,
            meta,
            attr::ARCHIVE,
            S_IFREG,
            false,
        );
        h.size = size;
        self.write(h.clone(), data)?;
        self.last_file = Some((path.to_vec(), h));
        Ok(())
    }

    /// Writes a symlink (`dir`: its target is a directory) or, with
    /// `junction`, a mount point. `target` is the Windows link text
    /// (backslashes).
    pub fn symlink(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        target: &[u8],
        dir: bool,
        junction: bool,
    ) -> Result<(), BuildError> {
        self.check(path)?;
        self.parents(path)?;
        let attrs = attr::REPARSE_POINT | if dir || junction { attr::DIRECTORY } else { 0 };
        let bits = S_IFLNK | if dir || junction { S_IFDIR } else { 0 };
        let mut m = meta.clone();
        m.win.mountpoint |= junction;
        let mut h = self.header(EntryKind::Symlink, path, &m, attrs, bits, dir || junction);
        h.link_name = target.to_vec();
        self.write(h, &mut std::io::empty())
    }

    /// Writes a hard link to `target`, a layer path (`Files/...`) written
    /// earlier or present in a layer below. `meta`, when given, supplies
    /// the records the link entry itself carried (go-winio writes a link's
    /// basic info too); no defaults are added to a link.
    pub fn hard_link(
        &mut self,
        path: &[u8],
        target: &[u8],
        meta: Option<&EntryMeta>,
    ) -> Result<(), BuildError> {
        self.check(path)?;
        self.parents(path)?;
        let mut h = Header::new(EntryKind::HardLink, path.to_vec());
        h.mode = S_IFREG | 0o644;
        h.link_name = target.to_vec();
        if let Some(m) = meta {
            h.mtime = m.mtime;
            h.pax = m.win.to_records();
            h.pax.extend(m.extra.iter().cloned());
        }
        self.write(h, &mut std::io::empty())
    }

    /// Writes a whiteout deleting `path` (a layer path) from the layers
    /// below: `<dir>/.wh.<name>`, an empty header as hcsshim writes it.
    pub fn whiteout(&mut self, path: &[u8]) -> Result<(), BuildError> {
        let (dir, name) = split(path);
        let mut wh = dir.to_vec();
        wh.extend_from_slice(b"/.wh.");
        wh.extend_from_slice(name);
        match classify(&wh) {
            Ok(WinName::Tombstone { .. }) => {}
            Ok(_) => {
                return Err(BuildError::Name {
                    path: shown(path),
                    reason: "cannot be deleted by a whiteout".into(),
                });
            }
            Err(e) => {
                return Err(BuildError::Name {
                    path: shown(path),
                    reason: e.reason,
                });
            }
        }
        self.parents(&wh)?;
        self.write(Header::new(EntryKind::Regular, wh), &mut std::io::empty())
    }

    /// Writes an alternate data stream of the file written just before.
    pub fn stream(
        &mut self,
        file: &[u8],
        stream: &[u8],
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), BuildError> {
        let Some((last, fh)) = &self.last_file else {
            return Err(BuildError::Order {
                path: shown(file),
                reason: "a stream must follow its file".into(),
            });
        };
        if last != file {
            return Err(BuildError::Order {
                path: shown(file),
                reason: "a stream must follow its file".into(),
            });
        }
        let mut name = file.to_vec();
        name.push(b':');
        name.extend_from_slice(stream);
        if !matches!(classify(&name), Ok(WinName::Stream { .. })) {
            return Err(BuildError::Name {
                path: shown(&name),
                reason: "not a valid stream name".into(),
            });
        }
        let mut h = Header::new(EntryKind::Regular, name);
        h.mode = fh.mode;
        h.mtime = fh.mtime;
        h.size = size;
        h.pax = fh
            .pax
            .iter()
            .filter(|(k, _)| k == b"atime" || k == b"ctime")
            .cloned()
            .collect();
        let last = self.last_file.take();
        let r = self.write(h, data);
        self.last_file = last;
        r
    }

    /// Writes an entry as given (an entry of an earlier import, with its
    /// own records), after the same name and order checks.
    pub fn raw(&mut self, h: &Header, data: &mut dyn Read) -> Result<(), BuildError> {
        match classify(&h.path) {
            Ok(WinName::Stream { file, .. }) => {
                if self.last_file.as_ref().map(|(p, _)| p) != Some(&file) {
                    return Err(BuildError::Order {
                        path: shown(&h.path),
                        reason: "a stream must follow its file".into(),
                    });
                }
                let last = self.last_file.take();
                let r = self.write(h.clone(), data);
                self.last_file = last;
                r
            }
            Ok(WinName::Object { path, .. }) => {
                if h.kind == EntryKind::Directory && self.dirs.contains(&path) {
                    return Ok(());
                }
                self.check(&path)?;
                self.parents(&path)?;
                if h.kind == EntryKind::Directory {
                    self.dirs.insert(path.clone());
                }
                self.write(h.clone(), data)?;
                if h.kind == EntryKind::Regular {
                    self.last_file = Some((path, h.clone()));
                }
                Ok(())
            }
            Ok(WinName::Tombstone { path, .. } | WinName::Opaque { path, .. }) => {
                self.parents(&path)?;
                self.write(h.clone(), data)
            }
            Err(e) => Err(BuildError::Name {
                path: shown(&h.path),
                reason: e.reason,
            }),
        }
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(self) -> Result<W, BuildError> {
        Ok(self.tw.finish()?)
    }

    /// Refuses a path Windows cannot hold, or one written already under
    /// another case.
    fn check(&mut self, path: &[u8]) -> Result<(), BuildError> {
        let bad = |reason: String| BuildError::Name {
            path: shown(path),
            reason,
        };
        match classify(path) {
            Ok(WinName::Object { .. }) => {}
            Ok(_) => return Err(bad("is a stream or whiteout name, not an object".into())),
            Err(e) => return Err(bad(e.reason)),
        }
        if !self.seen.insert(fold_case(path)) {
            return Err(bad("written twice (NTFS names are case-insensitive)".into()));
        }
        Ok(())
    }

    /// Writes every missing parent directory of `path`.
    fn parents(&mut self, path: &[u8]) -> Result<(), BuildError> {
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for i in 1..comps.len() {
            let p = comps[..i].join(&b'/');
            if !self.dirs.contains(&p) {
                if self.seen.contains(&fold_case(&p)) {
                    return Err(BuildError::Order {
                        path: shown(path),
                        reason: format!("parent {:?} is not a directory", shown(&p)),
                    });
                }
                check_component(comps[i - 1]).map_err(|e| BuildError::Name {
                    path: shown(&p),
                    reason: e.reason,
                })?;
                let t = self.opts.default_time;
                self.dir(&p, &EntryMeta::at(t))?;
            }
        }
        Ok(())
    }

    /// A header with the Windows records of `meta`, defaults filled in.
    fn header(
        &self,
        kind: EntryKind,
        path: &[u8],
        meta: &EntryMeta,
        default_attr: u32,
        type_bits: u32,
        dir_sd: bool,
    ) -> Header {
        let mut win = meta.win.clone();
        win.fileattr.get_or_insert(default_attr);
        if win.rawsd.is_none() {
            // A legacy SDDL record is converted (what go-winio's reader
            // does with it on Windows); otherwise the default applies.
            let from_sddl = win.sddl.as_deref().and_then(|t| sd::sddl_to_binary(t).ok());
            win.rawsd = Some(from_sddl.unwrap_or_else(|| {
                if dir_sd {
                    self.opts.dir_sd.clone()
                } else {
                    self.opts.file_sd.clone()
                }
            }));
        }
        let mtime = meta.mtime;
        let mtime_text = format_pax_time(mtime.secs, mtime.nanos);
        if win.creation_time.is_none() {
            win.creation_time = crate::time::PaxTime::parse(&mtime_text);
        }
        let mut h = Header::new(kind, path.to_vec());
        h.mode = type_bits;
        h.mtime = mtime;
        h.pax = win.to_records();
        h.pax.extend(meta.extra.iter().cloned());
        let atime = win
            .atime
            .as_ref()
            .map_or(mtime_text.clone(), |t| t.raw.clone());
        let ctime = win.ctime.as_ref().map_or(mtime_text, |t| t.raw.clone());
        h.pax.push((b"atime".to_vec(), atime.into_bytes()));
        h.pax.push((b"ctime".to_vec(), ctime.into_bytes()));
        h
    }

    fn write(&mut self, h: Header, data: &mut dyn Read) -> Result<(), BuildError> {
        self.tw.append(&h, data)?;
        self.entries += 1;
        self.last_file = None;
        Ok(())
    }
}

/// (parent, name) of a layer path.
fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

/// The Windows `Linkname` for a Linux symlink target: `\` separators;
/// `None` for an absolute target, which has no meaning on Windows.
pub fn windows_link_text(linux_target: &[u8]) -> Option<Vec<u8>> {
    if linux_target.first() == Some(&b'/') {
        return None;
    }
    Some(
        linux_target
            .iter()
            .map(|&b| if b == b'/' { b'\\' } else { b })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tar::TarReader;

    fn read(archive: &[u8]) -> Vec<Header> {
        let mut r = TarReader::new(archive);
        let mut out = Vec::new();
        while let Some(h) = r.next_entry().unwrap() {
            out.push(h);
        }
        out
    }

    #[test]
    fn structure() {
        let mut b = LayerBuilder::new(Vec::new(), BuildOptions::new().unwrap()).unwrap();
        let m = EntryMeta::at(Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        });
        b.file(b"Files/a/b/c.txt", &m, 3, &mut &b"abc"[..]).unwrap();
        b.stream(b"Files/a/b/c.txt", b"Zone.Identifier", 1, &mut &b"z"[..])
            .unwrap();
        b.symlink(b"Files/a/l", &m, b"b\\c.txt", false, false)
            .unwrap();
        b.hard_link(b"Files/a/h", b"Files/a/b/c.txt", None).unwrap();
        b.whiteout(b"Files/a/gone").unwrap();
        assert!(
            b.file(b"Files/A/B/C.TXT", &m, 0, &mut std::io::empty())
                .is_err()
        );
        assert!(
            b.file(b"Files/a/con", &m, 0, &mut std::io::empty())
                .is_err()
        );
        assert!(
            b.stream(b"Files/a/b/c.txt", b"s", 0, &mut std::io::empty())
                .is_err()
        );
        let tar = b.finish().unwrap();
        let names: Vec<String> = read(&tar).iter().map(|h| shown(&h.path)).collect();
        assert_eq!(
            names,
            [
                "Files",
                "Hives",
                "Files/a",
                "Files/a/b",
                "Files/a/b/c.txt",
                "Files/a/b/c.txt:Zone.Identifier",
                "Files/a/l",
                "Files/a/h",
                "Files/a/.wh.gone"
            ]
        );
        let hs = read(&tar);
        let file = &hs[4];
        let w = WinRecords::parse(&file.pax).unwrap();
        assert_eq!(w.fileattr, Some(attr::ARCHIVE));
        assert_eq!(w.creation_time.unwrap().raw, "1700000000.000000005");
        assert_eq!(
            sd::binary_to_sddl(&w.rawsd.unwrap()).unwrap(),
            DEFAULT_FILE_SDDL
        );
        // The type bits reach the mode field: "0100000".
        let mut r = TarReader::new(&tar[..]);
        r.set_record_raw(true);
        r.next_entry().unwrap();
        let raw = r.take_raw();
        assert_eq!(
            &raw[raw.len() - 512 + 100..raw.len() - 512 + 107],
            b"0040000"
        );
        assert_eq!(WinRecords::parse(&hs[6].pax).unwrap().fileattr, Some(0x400));
    }
}
