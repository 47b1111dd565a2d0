//! Malformed archives: each is refused with the right error, whose one-line
//! message names the offset and, when known, the entry.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read};

use common::{ext_entry, fix_checksum, pax_data, push_padded, ustar_block};
use strata_tar::{EntryKind, Header, TarError, TarReader, TarWriter};

fn archive_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (name, data) in entries {
        let mut h = Header::new(EntryKind::Regular, *name);
        h.size = data.len() as u64;
        w.append_data(&h, data).unwrap();
    }
    w.finish().unwrap()
}

/// The first error reading through the whole archive (reading all data).
fn first_error(archive: &[u8]) -> TarError {
    let mut r = TarReader::new(archive);
    loop {
        match r.next_entry() {
            Ok(Some(_)) => {
                let mut sink = Vec::new();
                if let Err(e) = r.data().read_to_end(&mut sink) {
                    // The reader stays failed and reports the same error.
                    return r.next_entry().expect_err(&format!("sticky after {e}"));
                }
            }
            Ok(None) => panic!("archive read without error"),
            Err(e) => {
                // Sticky: the same error again.
                let again = r.next_entry().unwrap_err();
                assert_eq!(again.to_string(), e.to_string());
                return e;
            }
        }
    }
}

#[test]
fn bad_checksum() {
    let mut a = archive_of(&[("first", b"x"), ("second", b"y")]);
    a[1024 + 10] ^= 1; // inside the second header's name
    let e = first_error(&a);
    assert!(
        matches!(e, TarError::BadChecksum { offset: 1024, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "tar header at offset 1024: header checksum mismatch (not a tar archive, or corrupt)"
    );
}

#[test]
fn signed_checksum_is_accepted() {
    let mut b = ustar_block(b"caf\xe9", b'0', 0);
    // Store the signed sum instead of the unsigned one, as old Sun tar did.
    b[148..156].fill(b' ');
    let signed: i64 = b.iter().map(|&x| i64::from(x as i8)).sum();
    b[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    let mut r = TarReader::new(&b[..]);
    assert_eq!(r.next_entry().unwrap().unwrap().path, b"caf\xe9");
}

#[test]
fn truncated_header() {
    let a = archive_of(&[("first", b"x"), ("second", b"y")]);
    let e = first_error(&a[..1024 + 300]);
    assert!(
        matches!(
            e,
            TarError::Truncated {
                offset: 1024,
                what: "header",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "tar header at offset 1024: header truncated (stream ended)"
    );
}

#[test]
fn truncated_data_when_reading() {
    let data = vec![7u8; 1000];
    let a = archive_of(&[("etc/passwd", &data)]);
    let cut = &a[..512 + 600];
    let mut r = TarReader::new(cut);
    r.next_entry().unwrap().unwrap();
    let mut buf = Vec::new();
    let err = r.data().read_to_end(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(
        err.to_string(),
        "tar entry \"etc/passwd\" at offset 0: data truncated (stream ended)"
    );
    assert_eq!(buf.len(), 600);
    let e = r.next_entry().unwrap_err();
    assert!(matches!(e, TarError::Truncated { .. }), "{e:?}");
}

#[test]
fn truncated_data_when_skipping() {
    let data = vec![7u8; 1000];
    let a = archive_of(&[("a", b"x"), ("etc/passwd", &data)]);
    let mut r = TarReader::new(&a[..1024 + 512 + 100]);
    r.next_entry().unwrap().unwrap();
    r.next_entry().unwrap().unwrap();
    let e = r.next_entry().unwrap_err();
    assert_eq!(
        e.to_string(),
        "tar entry \"etc/passwd\" at offset 1024: data truncated (stream ended)"
    );
    assert_eq!(e.path(), Some(&b"etc/passwd"[..]));
    assert_eq!(e.offset(), 1024);
}

#[test]
fn truncated_padding() {
    let a = archive_of(&[("a", b"xyz")]);
    let e = first_error(&a[..512 + 100]);
    assert!(
        matches!(
            e,
            TarError::Truncated {
                what: "data padding",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn truncated_extension_data_and_orphan_extension() {
    let mut a = ext_entry(b'x', &pax_data(&[(b"path", b"long/name")]));
    a.truncate(700);
    let e = first_error(&a);
    assert!(
        matches!(
            e,
            TarError::Truncated {
                offset: 0,
                what: "extension header data",
                ..
            }
        ),
        "{e:?}"
    );
    // An extension header and then EOF: the entry it describes is missing.
    let a = ext_entry(b'L', b"some/long/name\0");
    let e = first_error(&a);
    assert_eq!(
        e.to_string(),
        "tar entry \"some/long/name\" at offset 1024: header after extension header truncated (stream ended)"
    );
}

#[test]
fn absurd_pax_header_size() {
    // Only the header is present: the size is refused before any read.
    let b = ustar_block(b"PaxHeaders.0/x", b'x', 2 << 20);
    let mut a = ustar_block(b"first", b'0', 0).to_vec();
    a.extend_from_slice(&b);
    let e = first_error(&a);
    assert!(matches!(e, TarError::BadPax { offset: 512, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("tar header at offset 512: bad PAX header: absurd size")
    );
    // Same for GNU long names.
    let e = first_error(&ustar_block(b"././@LongLink", b'L', 5 << 20));
    assert!(
        matches!(
            e,
            TarError::InvalidField {
                field: "GNU long name size",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn chained_pax_headers_are_bounded_in_total() {
    let record = pax_data(&[(b"comment", &vec![b'c'; 600 << 10])]);
    let mut a = ext_entry(b'x', &record);
    a.extend(ext_entry(b'x', &record));
    a.extend_from_slice(&ustar_block(b"f", b'0', 0));
    let e = first_error(&a);
    assert!(matches!(e, TarError::BadPax { .. }), "{e:?}");
    assert!(e.to_string().contains("exceed"), "{e}");
}

#[test]
fn star_sparse_is_refused() {
    let e = first_error(&ustar_block(b"sp", b'S', 0));
    assert!(matches!(e, TarError::BadSparse { offset: 0, .. }), "{e:?}");
}

#[test]
fn nul_in_pax_path() {
    let mut a = ext_entry(b'x', &pax_data(&[(b"path", b"evil\0/../../etc")]));
    a.extend_from_slice(&ustar_block(b"x", b'0', 0));
    let e = first_error(&a);
    assert!(
        matches!(e, TarError::NulInName { offset: 1024, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "tar entry \"evil\" at offset 1024: NUL byte in path or link name"
    );
    let mut a = ext_entry(b'x', &pax_data(&[(b"linkpath", b"a\0b")]));
    a.extend_from_slice(&ustar_block(b"x", b'2', 0));
    assert!(matches!(first_error(&a), TarError::NulInName { .. }));
}

#[test]
fn malformed_pax_records() {
    for data in [
        &b"99 path=x\n"[..],
        b"garbage",
        b"11 path=x\n",
        b"8 =abc\n\n",
        b"11 uid=12x\n",
        b"15 mtime=1.2.3\n",
        b"13 size=-12\n",
    ] {
        let mut a = ext_entry(b'x', data);
        a.extend_from_slice(&ustar_block(b"entry", b'0', 0));
        let e = first_error(&a);
        // Framing errors are found at the PAX header, value errors when the
        // records are applied to the entry's header.
        assert!(
            matches!(
                e,
                TarError::BadPax {
                    offset: 0 | 1024,
                    ..
                }
            ),
            "{data:?}: {e:?}"
        );
        assert!(e.to_string().contains("bad PAX header"), "{e}");
    }
}

#[test]
fn unknown_type_flag() {
    let mut a = ustar_block(b"ok", b'0', 0).to_vec();
    a.extend_from_slice(&ustar_block(b"volume/label", b'V', 0));
    let e = first_error(&a);
    assert!(
        matches!(
            e,
            TarError::UnknownType {
                offset: 512,
                flag: b'V',
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "tar entry \"volume/label\" at offset 512: unknown entry type flag 'V'"
    );
}

#[test]
fn invalid_numeric_fields() {
    let mut b = ustar_block(b"f", b'0', 0);
    b[124..136].copy_from_slice(b"0000000012x\0");
    fix_checksum(&mut b);
    let e = first_error(&b);
    assert!(
        matches!(e, TarError::InvalidField { field: "size", .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "tar entry \"f\" at offset 0: invalid size field"
    );
    // Negative base-256 size.
    let mut b = ustar_block(b"f", b'0', 0);
    b[124..136].fill(0xff);
    fix_checksum(&mut b);
    assert!(matches!(
        first_error(&b),
        TarError::InvalidField { field: "size", .. }
    ));
    // Device numbers beyond u32.
    let mut b = ustar_block(b"dev", b'3', 0);
    b[329..337].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0]);
    fix_checksum(&mut b);
    assert!(matches!(
        first_error(&b),
        TarError::InvalidField {
            field: "devmajor",
            ..
        }
    ));
}

#[test]
fn lone_zero_block_then_data() {
    let mut a = ustar_block(b"a", b'0', 0).to_vec();
    a.extend_from_slice(&[0u8; 512]);
    a.extend_from_slice(&ustar_block(b"hidden", b'0', 0));
    let e = first_error(&a);
    assert!(
        matches!(e, TarError::LoneZeroBlock { offset: 512, .. }),
        "{e:?}"
    );
}

#[test]
fn bad_sparse_maps() {
    // PAX 0.1 map with overlapping chunks.
    let mut a = ext_entry(
        b'x',
        &pax_data(&[
            (b"GNU.sparse.major", b"0"),
            (b"GNU.sparse.minor", b"1"),
            (b"GNU.sparse.size", b"100"),
            (b"GNU.sparse.numblocks", b"2"),
            (b"GNU.sparse.map", b"0,10,5,10"),
        ]),
    );
    a.extend_from_slice(&ustar_block(b"sp", b'0', 20));
    push_padded(&mut a, &[1; 20]);
    let e = first_error(&a);
    assert!(
        matches!(e, TarError::BadSparse { offset: 1024, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("tar entry \"sp\" at offset 1024: bad sparse map")
    );

    // Chunks that do not add up to the data.
    let mut a = ext_entry(
        b'x',
        &pax_data(&[
            (b"GNU.sparse.size", b"100"),
            (b"GNU.sparse.numblocks", b"1"),
            (b"GNU.sparse.map", b"0,10"),
        ]),
    );
    a.extend_from_slice(&ustar_block(b"sp", b'0', 20));
    push_padded(&mut a, &[1; 20]);
    assert!(matches!(first_error(&a), TarError::BadSparse { .. }));

    // 1.0 map running past the entry's data.
    let mut a = ext_entry(
        b'x',
        &pax_data(&[
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.realsize", b"100"),
        ]),
    );
    a.extend_from_slice(&ustar_block(b"sp", b'0', 10));
    push_padded(&mut a, b"1\n0\n");
    assert!(matches!(first_error(&a), TarError::BadSparse { .. }));

    // Unknown sparse version.
    let mut a = ext_entry(
        b'x',
        &pax_data(&[(b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")]),
    );
    a.extend_from_slice(&ustar_block(b"sp", b'0', 0));
    assert!(matches!(first_error(&a), TarError::BadSparse { .. }));
}

#[test]
fn io_errors_carry_offset() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(0);
            self.0 -= n;
            Ok(n)
        }
    }
    let mut r = TarReader::new(Failing(0));
    let e = r.next_entry().unwrap_err();
    assert!(matches!(e, TarError::Io { offset: 0, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "tar header at offset 0: I/O error: disk on fire"
    );
}

/// Offsets of the header blocks in [`seed_archive`].
const SEED_HEADERS: [usize; 7] = [0, 1024, 2048, 3072, 4096, 4608, 5632];

/// An archive touching most reader paths: PAX local and global records,
/// GNU long name, sparse 1.0 map, data, end marker.
fn seed_archive() -> Vec<u8> {
    let mut a = ext_entry(b'g', &pax_data(&[(b"comment", b"g")]));
    a.extend(ext_entry(
        b'x',
        &pax_data(&[
            (b"path", b"pax/name"),
            (b"mtime", b"-1.5"),
            (b"SCHILY.xattr.user.a", b"v\n"),
        ]),
    ));
    a.extend_from_slice(&ustar_block(b"f", b'0', 3));
    push_padded(&mut a, b"abc");
    a.extend(ext_entry(b'L', b"long/name\0"));
    a.extend_from_slice(&ustar_block(b"x", b'5', 0));
    a.extend(ext_entry(
        b'x',
        &pax_data(&[
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.realsize", b"100"),
        ]),
    ));
    a.extend_from_slice(&ustar_block(b"sp", b'0', 512 + 4));
    push_padded(&mut a, b"1\n50\n4\n");
    push_padded(&mut a, b"WXYZ");
    a.extend_from_slice(&[0u8; 1024]);
    a
}

/// Reads everything with raw framing on. Returns the rebuilt stream if the
/// whole read succeeded.
fn read_through(input: &[u8]) -> Option<Vec<u8>> {
    let mut r = TarReader::new(input);
    r.set_record_raw(true);
    let mut rebuilt = Vec::new();
    loop {
        let next = r.next_entry();
        r.take_raw_into(&mut rebuilt);
        match next {
            Ok(Some(_)) => {
                if r.data().read_to_end(&mut rebuilt).is_err() {
                    return None;
                }
            }
            Ok(None) => return Some(rebuilt),
            Err(_) => return None,
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

    /// Corrupt input never panics, and whenever it reads through, raw
    /// framing plus data still rebuild the input exactly. Header edits get
    /// their checksum fixed so they reach the field parsers.
    #[test]
    fn corrupt_input_never_panics(
        flips in proptest::collection::vec((0usize..8192, proptest::prelude::any::<u8>()), 0..6),
        header_edits in proptest::collection::vec(
            (0usize..SEED_HEADERS.len(), 0usize..512, proptest::prelude::any::<u8>()),
            0..6,
        ),
        cut in proptest::option::of(0usize..8192),
    ) {
        let mut a = seed_archive();
        for (h, at, v) in header_edits {
            let start = SEED_HEADERS[h];
            a[start + at] = v;
            let blk: &mut [u8; 512] = (&mut a[start..start + 512]).try_into().unwrap();
            fix_checksum(blk);
        }
        for (at, v) in flips {
            let n = a.len();
            a[at % n] = v;
        }
        if let Some(c) = cut {
            a.truncate(c.min(a.len()));
        }
        if let Some(rebuilt) = read_through(&a) {
            proptest::prop_assert!(rebuilt == a);
        }
    }

    /// Arbitrary bytes never panic the reader either.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
        if let Some(rebuilt) = read_through(&bytes) {
            proptest::prop_assert!(rebuilt == bytes);
        }
    }
}

#[test]
fn seed_archive_reads_cleanly() {
    let a = seed_archive();
    assert_eq!(read_through(&a).as_deref(), Some(&a[..]));
    let entries = common::read_all_checked(&a);
    let names: Vec<_> = entries.iter().map(|e| e.header.path.clone()).collect();
    for at in SEED_HEADERS {
        assert_eq!(&a[at + 257..at + 262], b"ustar", "header at {at}");
    }
    assert_eq!(
        names,
        vec![b"pax/name".to_vec(), b"long/name".to_vec(), b"sp".to_vec()]
    );
}
