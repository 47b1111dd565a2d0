//! TarWriter → TarReader round trips over generated headers, plus the
//! writer's format policy (plain ustar when possible, one minimal PAX
//! header otherwise, deterministic output).
//!
//! Fields the writer legitimately does not carry, normalised away before
//! comparing (see `TarWriter` docs): `atime`/`ctime`; `uname`/`gname` over
//! 32 bytes; mode bits outside 0o7777; device numbers of non-devices;
//! xattr order (written sorted by name); the sparse layout (written as a
//! regular file of `file_size` bytes); and `pax`, which on reading also
//! lists the records the writer generated (compared after filtering).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{Chunks, read_all_checked, read_all_checked_with};
use proptest::collection::vec;
use proptest::prelude::*;
use strata_tar::{EntryKind, Header, Sparse, SparseChunk, TarReader, TarWriter, Timestamp};

const GENERATED: [&[u8]; 7] = [
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"hdrcharset",
];

fn ascii_component(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![b'a'..=b'z', b'0'..=b'9', Just(b'.'), Just(b'-'), Just(b' ')],
        1..=max,
    )
}

fn join(parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.join(&b'/')
}

/// Names covering every encoding path: short, exactly around 100 bytes,
/// splittable into ustar prefix + name, over 255 bytes, non-UTF-8, with
/// and without trailing slash.
fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        3 => vec(ascii_component(20), 1..4).prop_map(join),
        1 => (95usize..=105).prop_map(|n| vec![b'p'; n]),
        2 => (ascii_component(150), ascii_component(100)).prop_map(|(a, b)| join(vec![a, b])),
        2 => vec(ascii_component(60), 5..9).prop_map(join),
        2 => vec(1u8..=255, 1..300),
        1 => (ascii_component(40), vec(0x80u8..=0xff, 1..10)).prop_map(|(a, b)| join(vec![a, b])),
    ];
    (base, any::<bool>()).prop_map(|(mut p, slash)| {
        if slash && p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p
    })
}

fn arb_time() -> impl Strategy<Value = Timestamp> {
    let secs = prop_oneof![0i64..=0o77777777777, any::<i64>(), -10i64..10];
    let nanos = prop_oneof![Just(0u32), 0u32..1_000_000_000];
    (secs, nanos).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn arb_id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..=0o7777777, any::<u64>()]
}

fn arb_owner_name() -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 0..40)
}

fn arb_xattrs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = vec(
        any::<u8>().prop_filter("no '=' or NUL", |b| *b != b'=' && *b != 0),
        0..30,
    );
    vec((name, vec(any::<u8>(), 0..100)), 0..4)
}

/// PAX records the writer does not generate and the reader does not
/// interpret, which must pass through untouched.
fn arb_extra_pax() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let key = prop_oneof![
        Just(b"MSWINDOWS.fileattr".to_vec()),
        Just(b"comment".to_vec()),
        Just(b"LIBARCHIVE.creationtime".to_vec()),
        Just(b"SCHILY.fflags".to_vec()),
    ];
    vec((key, vec(any::<u8>(), 0..40)), 0..3)
}

prop_compose! {
    fn arb_header()(
        kind in prop_oneof![
            4 => Just(EntryKind::Regular),
            1 => Just(EntryKind::HardLink),
            1 => Just(EntryKind::Symlink),
            1 => Just(EntryKind::CharDevice),
            1 => Just(EntryKind::BlockDevice),
            1 => Just(EntryKind::Directory),
            1 => Just(EntryKind::Fifo),
        ],
        path in arb_path(),
        link in arb_path(),
        mode in prop_oneof![0u32..=0o7777, any::<u32>()],
        uid in arb_id(),
        gid in arb_id(),
        uname in arb_owner_name(),
        gname in arb_owner_name(),
        mtime in arb_time(),
        atime in proptest::option::of(arb_time()),
        dev in (any::<u32>(), any::<u32>()),
        xattrs in arb_xattrs(),
        extra in arb_extra_pax(),
        data in prop_oneof![
            4 => vec(any::<u8>(), 0..2000),
            1 => vec(any::<u8>(), 100_000..140_000),
        ],
        sparse in any::<bool>(),
    ) -> (Header, Vec<u8>) {
        let mut h = Header::new(kind, path);
        if matches!(kind, EntryKind::HardLink | EntryKind::Symlink) {
            h.link_name = link;
        }
        h.mode = mode;
        h.uid = uid;
        h.gid = gid;
        h.uname = uname;
        h.gname = gname;
        h.mtime = mtime;
        h.atime = atime;
        h.ctime = atime;
        if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            (h.dev_major, h.dev_minor) = dev;
        }
        h.xattrs = xattrs;
        h.pax = extra;
        let data = if kind == EntryKind::Regular { data } else { Vec::new() };
        if kind == EntryKind::Regular {
            h.size = data.len() as u64;
            if sparse && !data.is_empty() {
                // A sparse header with the expanded data: written as a
                // plain regular file of `file_size` bytes.
                h.size = 1;
                h.sparse = Some(Sparse {
                    real_size: data.len() as u64,
                    chunks: vec![SparseChunk { offset: data.len() as u64 - 1, length: 1 }],
                });
            }
        }
        (h, data)
    }
}

/// What reading back should give, per the writer's documented policy.
fn expected(h: &Header) -> Header {
    let mut e = h.clone();
    e.mode &= 0o7777;
    e.atime = None;
    e.ctime = None;
    if e.uname.len() > 32 {
        e.uname.clear();
    }
    if e.gname.len() > 32 {
        e.gname.clear();
    }
    let sorted: BTreeMap<_, _> = e.xattrs.drain(..).collect();
    e.xattrs = sorted.into_iter().collect();
    e.size = e.file_size();
    e.sparse = None;
    e.pax = extra_records(&h.pax);
    e
}

fn extra_records(pax: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pax.iter()
        .filter(|(k, _)| {
            !GENERATED.contains(&k.as_slice())
                && !k.starts_with(b"SCHILY.xattr.")
                && !k.starts_with(b"GNU.sparse.")
        })
        .cloned()
        .collect()
}

fn write_all(entries: &[(Header, Vec<u8>)]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (h, d) in entries {
        w.append_data(h, d).unwrap();
    }
    w.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn write_then_read_gives_equal_headers_and_data(
        entries in vec(arb_header(), 1..6)
    ) {
        let archive = write_all(&entries);
        prop_assert_eq!(archive.len() % 512, 0);
        // read_all_checked also asserts raw + data == archive.
        let back = read_all_checked(&archive);
        prop_assert_eq!(back.len(), entries.len());
        for ((h, data), e) in entries.iter().zip(&back) {
            let mut got = e.header.clone();
            got.pax = extra_records(&got.pax);
            prop_assert_eq!(&got, &expected(h));
            prop_assert!(e.data == *data, "data of {:?}", String::from_utf8_lossy(&h.path));
        }

        // Deterministic, and idempotent: what was read writes back to the
        // same bytes (generated PAX records in `pax` are not copied).
        prop_assert!(write_all(&entries) == archive);
        let again: Vec<_> = back.iter().map(|e| (e.header.clone(), e.data.clone())).collect();
        prop_assert!(write_all(&again) == archive);
    }

    /// A reader over a read-ahead thread's chunks, whatever their sizes
    /// (a header or a file's data split anywhere), reads what a reader
    /// over the bytes reads, and its raw record is as exact.
    #[test]
    fn chunks_of_any_size_read_as_the_stream(
        entries in vec(arb_header(), 1..6),
        sizes in vec(1usize..3000, 1..8),
    ) {
        let archive = write_all(&entries);
        let plain = read_all_checked(&archive);
        let chunks = Chunks { data: &archive, sizes, next: 0 };
        let chunked = read_all_checked_with(TarReader::over_chunks(chunks), &archive);
        prop_assert_eq!(plain.len(), chunked.len());
        for (a, b) in plain.iter().zip(&chunked) {
            prop_assert_eq!(&a.header, &b.header);
            prop_assert!(a.data == b.data);
        }
    }
}

fn regular(path: &[u8], len: usize) -> Header {
    let mut h = Header::new(EntryKind::Regular, path);
    h.size = len as u64;
    h.mode = 0o644;
    h.mtime = Timestamp::from_secs(1_700_000_000);
    h
}

/// Type flag of each header block of an archive written by us (PAX header
/// data is skipped using its size).
fn type_flags(archive: &[u8]) -> Vec<u8> {
    let mut flags = Vec::new();
    let mut at = 0;
    while at + 512 <= archive.len() && archive[at..at + 512].iter().any(|&b| b != 0) {
        let b = &archive[at..at + 512];
        flags.push(b[156]);
        let size_txt = std::str::from_utf8(&b[124..135]).unwrap();
        let size = u64::from_str_radix(size_txt, 8).unwrap() as usize;
        at += 512 + size.next_multiple_of(512);
    }
    flags
}

#[test]
fn plain_ustar_when_everything_fits() {
    let mut h = regular(
        format!("{}/{}", "a".repeat(150), "b".repeat(100)).as_bytes(),
        3,
    );
    h.link_name = Vec::new();
    h.uid = 0o7777777;
    h.uname = vec![b'u'; 32];
    let archive = write_all(&[(h.clone(), b"abc".to_vec())]);
    assert_eq!(type_flags(&archive), vec![b'0']);
    assert_eq!(&archive[257..265], b"ustar\x0000");
    assert_eq!(archive.len(), 512 + 512 + 1024);
    // Go's checksum layout: six octal digits, NUL, space.
    assert_eq!(archive[154], 0);
    assert_eq!(archive[155], b' ');
}

#[test]
fn one_pax_header_with_only_needed_records() {
    let mut h = regular(b"short", 0);
    h.uid = 0o10000000;
    h.mtime = Timestamp {
        secs: -5,
        nanos: 250_000_000,
    };
    h.xattrs = vec![
        (b"user.z".to_vec(), b"2".to_vec()),
        (b"user.a".to_vec(), b"1\n\0".to_vec()),
    ];
    h.pax = vec![
        (b"path".to_vec(), b"stale".to_vec()),
        (b"MSWINDOWS.fileattr".to_vec(), b"32".to_vec()),
        (b"GNU.sparse.major".to_vec(), b"1".to_vec()),
    ];
    let archive = write_all(&[(h, Vec::new())]);
    assert_eq!(type_flags(&archive), vec![b'x', b'0']);
    assert_eq!(&archive[..15], b"PaxHeaders.0/sh");
    let size = usize::from_str_radix(std::str::from_utf8(&archive[124..135]).unwrap(), 8).unwrap();
    let data = &archive[512..512 + size];
    assert_eq!(
        data,
        &b"27 SCHILY.xattr.user.a=1\n\0\n25 SCHILY.xattr.user.z=2\n\
           15 mtime=-4.75\n15 uid=2097152\n25 MSWINDOWS.fileattr=32\n"[..]
    );
    // The ustar fields that could not hold the values are zero.
    let main = &archive[1024..1536];
    assert_eq!(&main[108..116], b"0000000\0");
    assert_eq!(&main[136..148], b"00000000000\0");
}

#[test]
fn huge_size_uses_pax_size_record() {
    // 10 GiB does not fit 11 octal digits; only the headers are checked,
    // so the data is never produced.
    let mut h = regular(b"big", 0);
    h.size = 10 << 30;
    /// Accepts the header blocks, then refuses data.
    struct HeadersOnly(Vec<u8>);
    impl std::io::Write for HeadersOnly {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !self.0.is_empty() {
                return Err(std::io::Error::other("headers only"));
            }
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = TarWriter::new(HeadersOnly(Vec::new()));
    let mut zeros = std::io::repeat(0);
    let err = w.append(&h, &mut zeros).unwrap_err();
    assert!(err.to_string().contains("\"big\""), "{err}");
    let headers = w.get_ref().0.clone();
    assert_eq!(headers.len(), 1536);
    let mut r = TarReader::new(&headers[..]);
    let got = r.next_entry().unwrap().unwrap();
    assert_eq!(got.size, 10 << 30);
    assert_eq!(r.data_remaining(), 10 << 30);
}

#[test]
fn large_device_numbers_use_base256() {
    let mut h = Header::new(EntryKind::CharDevice, "dev/x");
    h.dev_major = u32::MAX;
    h.dev_minor = 0o10000000;
    let archive = write_all(&[(h.clone(), Vec::new())]);
    assert_eq!(type_flags(&archive), vec![b'3']);
    assert_eq!(archive[329] & 0x80, 0x80);
    let back = read_all_checked(&archive);
    assert_eq!(back[0].header.dev_major, u32::MAX);
    assert_eq!(back[0].header.dev_minor, 0o10000000);
}

#[test]
fn writer_refusals() {
    let mut w = TarWriter::new(Vec::new());
    let e = w.append_data(&regular(b"a\0b", 0), b"").unwrap_err();
    assert!(matches!(e, strata_tar::TarError::NulInName { .. }), "{e}");
    let e = w.append_data(&regular(b"short", 5), b"abc").unwrap_err();
    assert!(e.to_string().contains("3 bytes"), "{e}");
    let mut d = Header::new(EntryKind::Directory, "d/");
    d.size = 5;
    assert!(w.append_data(&d, b"").is_err());
    let mut x = regular(b"x", 0);
    x.xattrs = vec![(b"a=b".to_vec(), Vec::new())];
    assert!(w.append_data(&x, b"").is_err());
    let mut big = regular(b"x", 0);
    big.xattrs = vec![(b"user.big".to_vec(), vec![0; 2 << 20])];
    assert!(w.append_data(&big, b"").is_err());
    // Short data reader.
    let e = w
        .append(&regular(b"short", 5), &mut &b"abc"[..])
        .unwrap_err();
    assert!(e.to_string().contains("3 of 5"), "{e}");
}
