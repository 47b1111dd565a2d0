//! Reader behaviour on hand-made archives covering rules no single tool
//! exercises: PAX globals, record precedence, old-style directories, Go's
//! header-only kinds, missing trailers, trailing garbage, base-256 fields,
//! buggy pre-Go-1.8 GNU headers, and the raw framing around all of them.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use common::{ext_entry, fix_checksum, pax_data, push_padded, read_all_checked, ustar_block};
use strata_tar::{EntryKind, TarReader, Timestamp};

fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

#[test]
fn pax_globals_apply_to_following_entries_and_locals_override() {
    let mut a = ext_entry(
        b'g',
        &pax_data(&[
            (b"uname", b"globaluser"),
            (b"comment", b"g1"),
            (b"SCHILY.xattr.user.g", b"gv"),
        ]),
    );
    a.extend_from_slice(&ustar_block(b"one", b'0', 0));
    a.extend(ext_entry(
        b'x',
        &pax_data(&[(b"uname", b"local"), (b"comment", b"l")]),
    ));
    a.extend_from_slice(&ustar_block(b"two", b'0', 0));
    // A later global replaces one key and deletes another (empty value).
    a.extend(ext_entry(
        b'g',
        &pax_data(&[(b"comment", b"g2"), (b"uname", b"")]),
    ));
    a.extend_from_slice(&ustar_block(b"three", b'0', 0));
    a.extend(end());
    let e = read_all_checked(&a);
    assert_eq!(e.len(), 3, "global headers are not entries");
    let (one, two, three) = (&e[0].header, &e[1].header, &e[2].header);
    assert_eq!(one.uname, b"globaluser");
    assert_eq!(one.xattrs, vec![(b"user.g".to_vec(), b"gv".to_vec())]);
    assert_eq!(two.uname, b"local");
    assert_eq!(
        two.pax,
        vec![
            (b"uname".to_vec(), b"globaluser".to_vec()),
            (b"comment".to_vec(), b"g1".to_vec()),
            (b"SCHILY.xattr.user.g".to_vec(), b"gv".to_vec()),
            (b"uname".to_vec(), b"local".to_vec()),
            (b"comment".to_vec(), b"l".to_vec()),
        ]
    );
    assert_eq!(
        three.uname, b"",
        "deleted global falls back to the header field"
    );
    assert_eq!(
        three.pax,
        vec![
            (b"SCHILY.xattr.user.g".to_vec(), b"gv".to_vec()),
            (b"comment".to_vec(), b"g2".to_vec()),
        ]
    );
}

#[test]
fn pax_overrides_header_fields() {
    let mut a = ext_entry(
        b'x',
        &pax_data(&[
            (b"path", b"real/\xffname"),
            (b"size", b"3"),
            (b"uid", b"18446744073709551615"),
            (b"gid", b"4000000000"),
            (b"mtime", b"-1.5"),
            (b"atime", b"10.000000001"),
            (b"ctime", b"20"),
            (b"gname", b"a group name longer than thirty-two bytes"),
            (b"SCHILY.xattr.user.nl", b"a\nb\0c"),
            (b"SCHILY.xattr.user.empty", b""),
            (b"SCHILY.xattr.user.nl", b"replaced"),
        ]),
    );
    let mut h = ustar_block(b"trunc", b'0', 0);
    h[108..116].copy_from_slice(b"garbage!"); // overridden, so not parsed
    fix_checksum(&mut h);
    a.extend_from_slice(&h);
    push_padded(&mut a, b"abc");
    a.extend(end());
    let e = read_all_checked(&a);
    let h = &e[0].header;
    assert_eq!(h.path, b"real/\xffname");
    assert_eq!(h.size, 3);
    assert_eq!(e[0].data, b"abc");
    assert_eq!(h.uid, u64::MAX);
    assert_eq!(h.gid, 4_000_000_000);
    assert_eq!(
        h.mtime,
        Timestamp {
            secs: -2,
            nanos: 500_000_000
        }
    );
    assert_eq!(h.atime, Some(Timestamp { secs: 10, nanos: 1 }));
    assert_eq!(h.ctime, Some(Timestamp::from_secs(20)));
    assert_eq!(h.gname, b"a group name longer than thirty-two bytes");
    assert_eq!(
        h.xattrs,
        vec![
            (b"user.nl".to_vec(), b"replaced".to_vec()),
            (b"user.empty".to_vec(), Vec::new()),
        ]
    );
}

#[test]
fn gnu_long_name_and_link() {
    let long_name = vec![b'n'; 300];
    let long_link = vec![b'l'; 200];
    let mut name_data = long_name.clone();
    name_data.push(0);
    let mut link_data = long_link.clone();
    link_data.push(0);
    let mut a = ext_entry(b'L', &name_data);
    a.extend(ext_entry(b'K', &link_data));
    // GNU long name wins over a PAX path (Go's precedence).
    a.extend(ext_entry(b'x', &pax_data(&[(b"path", b"pax/path")])));
    a.extend_from_slice(&ustar_block(b"truncated", b'2', 0));
    a.extend(end());
    let mut r = TarReader::new(&a[..]);
    let h = r.next_entry().unwrap().unwrap();
    assert_eq!(h.path, long_name);
    assert_eq!(h.link_name, long_link);
    assert_eq!(h.kind, EntryKind::Symlink);
    assert_eq!(r.entry_offset(), 0);
    assert!(r.next_entry().unwrap().is_none());
    read_all_checked(&a);
}

#[test]
fn ustar_prefix_and_old_style_directories() {
    let mut b = ustar_block(b"name", b'0', 0);
    b[345..351].copy_from_slice(b"prefix");
    fix_checksum(&mut b);
    let mut a = b.to_vec();
    // '\0' type: a directory if the name ends in '/', else a file.
    a.extend_from_slice(&ustar_block(b"olddir/", 0, 0));
    a.extend_from_slice(&ustar_block(b"oldfile", 0, 0));
    // '0' with a trailing slash stays a regular file.
    a.extend_from_slice(&ustar_block(b"odd/", b'0', 0));
    // '7' (contiguous) is a regular file.
    a.extend_from_slice(&ustar_block(b"contig", b'7', 2));
    push_padded(&mut a, b"hi");
    a.extend(end());
    let e = read_all_checked(&a);
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.header.path.clone(), e.header.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"prefix/name".to_vec(), EntryKind::Regular),
            (b"olddir/".to_vec(), EntryKind::Directory),
            (b"oldfile".to_vec(), EntryKind::Regular),
            (b"odd/".to_vec(), EntryKind::Regular),
            (b"contig".to_vec(), EntryKind::Regular),
        ]
    );
}

#[test]
fn header_only_kinds_ignore_size_field() {
    // Go writes whatever Size the caller set for links and directories but
    // no data; readers (Go, and so Docker) ignore the field. So do we.
    let mut a = ustar_block(b"link", b'1', 1000).to_vec();
    a.extend_from_slice(&ustar_block(b"dir/", b'5', 4096));
    a.extend_from_slice(&ustar_block(b"after", b'0', 1));
    push_padded(&mut a, b"x");
    a.extend(end());
    let e = read_all_checked(&a);
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].header.size, 0);
    assert_eq!(e[1].header.size, 0);
    assert_eq!(e[2].data, b"x");
}

#[test]
fn missing_trailer_and_trailing_garbage() {
    // No end-of-archive blocks at all: EOF at a header boundary ends it.
    let mut a = ustar_block(b"f", b'0', 2).to_vec();
    push_padded(&mut a, b"ab");
    let e = read_all_checked(&a);
    assert_eq!(e.len(), 1);
    // A single zero block and EOF also ends it.
    let mut b = a.clone();
    b.extend_from_slice(&[0u8; 512]);
    assert_eq!(read_all_checked(&b).len(), 1);
    // Anything after the two zero blocks is drained into raw.
    let mut c = a.clone();
    c.extend(end());
    c.extend_from_slice(b"trailing garbage that is not even a block");
    c.extend_from_slice(&[0u8; 9000]);
    assert_eq!(read_all_checked(&c).len(), 1);
    // Without raw recording the reader stops at the marker.
    let mut r = TarReader::new(&c[..]);
    r.next_entry().unwrap().unwrap();
    assert!(r.next_entry().unwrap().is_none());
    assert_eq!(r.position(), 2048);
    assert!(r.next_entry().unwrap().is_none());
}

#[test]
fn base256_fields_and_negative_mtime() {
    let mut b = ustar_block(b"big", b'0', 0);
    // uid 2^40 and size 5 in base-256; mtime -1 in two's complement.
    b[108..116].copy_from_slice(&[0x80, 0, 1, 0, 0, 0, 0, 0]);
    b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    b[136..148].fill(0xff);
    fix_checksum(&mut b);
    let mut a = b.to_vec();
    push_padded(&mut a, b"12345");
    a.extend(end());
    let e = read_all_checked(&a);
    assert_eq!(e[0].header.uid, 1 << 40);
    assert_eq!(e[0].header.size, 5);
    assert_eq!(e[0].header.mtime, Timestamp::from_secs(-1));
}

#[test]
fn octal_fields_with_spaces_and_nuls() {
    let mut b = ustar_block(b"f", b'0', 0);
    b[100..108].copy_from_slice(b"   755 \0");
    b[124..136].copy_from_slice(b"          3 ");
    b[136..148].copy_from_slice(b"\0\0\0\0\0\0\0\0\0\0\0\0");
    fix_checksum(&mut b);
    let mut a = b.to_vec();
    push_padded(&mut a, b"abc");
    let e = read_all_checked(&a);
    assert_eq!(e[0].header.mode, 0o755);
    assert_eq!(e[0].header.size, 3);
    assert_eq!(e[0].header.mtime, Timestamp::from_secs(0));
}

#[test]
fn gnu_times_and_pre_go18_prefix_fallback() {
    let gnu = |b: &mut [u8; 512]| {
        b[257..263].copy_from_slice(b"ustar ");
        b[263..265].copy_from_slice(b" \0");
    };
    let mut good = ustar_block(b"t", b'0', 0);
    gnu(&mut good);
    good[345..357].copy_from_slice(b"00000000012\0");
    fix_checksum(&mut good);
    // Go < 1.8 wrote a ustar prefix into GNU headers.
    let mut buggy = ustar_block(b"name", b'0', 0);
    gnu(&mut buggy);
    buggy[345..361].copy_from_slice(b"some/long/prefix");
    fix_checksum(&mut buggy);
    let mut a = good.to_vec();
    a.extend_from_slice(&buggy);
    let e = read_all_checked(&a);
    assert_eq!(e[0].header.atime, Some(Timestamp::from_secs(10)));
    assert_eq!(e[0].header.ctime, None);
    assert_eq!(e[1].header.path, b"some/long/prefix/name");
    assert_eq!(e[1].header.atime, None);
}

#[test]
fn devices_and_v7_headers() {
    let mut b = ustar_block(b"dev/null", b'3', 0);
    common::put_octal(&mut b[329..337], 1);
    common::put_octal(&mut b[337..345], 3);
    b[265..269].copy_from_slice(b"root");
    fix_checksum(&mut b);
    // V7: no magic, owner names and device fields are not read.
    let mut v7 = ustar_block(b"v7file", b'0', 0);
    v7[257..265].fill(0);
    v7[265..270].copy_from_slice(b"alice");
    fix_checksum(&mut v7);
    let mut a = b.to_vec();
    a.extend_from_slice(&v7);
    let e = read_all_checked(&a);
    assert_eq!((e[0].header.dev_major, e[0].header.dev_minor), (1, 3));
    assert_eq!(e[0].header.uname, b"root");
    assert_eq!(e[1].header.uname, b"");
}

#[test]
fn old_gnu_sparse_with_extension_blocks() {
    // 6 chunks of 100 bytes at 1000*i: four in the header, two in one
    // extension block.
    let mut b = ustar_block(b"sparse", b'S', 600);
    b[257..263].copy_from_slice(b"ustar ");
    b[263..265].copy_from_slice(b" \0");
    for i in 0..4 {
        let at = 386 + i * 24;
        common::put_octal(&mut b[at..at + 12], 1000 * i as u64);
        common::put_octal(&mut b[at + 12..at + 24], 100);
    }
    b[482] = 1;
    common::put_octal(&mut b[483..495], 6000);
    fix_checksum(&mut b);
    let mut ext = [0u8; 512];
    for i in 0..2 {
        let at = i * 24;
        common::put_octal(&mut ext[at..at + 12], 1000 * (i as u64 + 4));
        common::put_octal(&mut ext[at + 12..at + 24], 100);
    }
    let mut a = b.to_vec();
    a.extend_from_slice(&ext);
    let data: Vec<u8> = (0..600u32).map(|i| (i % 256) as u8).collect();
    push_padded(&mut a, &data);
    a.extend(end());
    let e = read_all_checked(&a);
    let h = &e[0].header;
    let sp = h.sparse.as_ref().unwrap();
    assert_eq!(sp.real_size, 6000);
    assert_eq!(sp.chunks.len(), 6);
    assert_eq!(sp.chunks[5].offset, 5000);
    assert_eq!(h.size, 600);
    assert_eq!(h.file_size(), 6000);
    assert_eq!(e[0].data, data);
}

#[test]
fn sparse_1_0_map_is_consumed_as_raw() {
    let mut a = ext_entry(
        b'x',
        &pax_data(&[
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.name", b"real/name"),
            (b"GNU.sparse.realsize", b"10000"),
        ]),
    );
    a.extend_from_slice(&ustar_block(b"./GNUSparseFile.1/name", b'0', 512 + 7));
    push_padded(&mut a, b"2\n0\n3\n9996\n4\n");
    push_padded(&mut a, b"abcWXYZ");
    a.extend(end());
    let e = read_all_checked(&a);
    let h = &e[0].header;
    assert_eq!(h.path, b"real/name");
    assert_eq!(h.size, 7);
    assert_eq!(e[0].data, b"abcWXYZ");
    let full = common::expand_sparse(h, &e[0].data);
    assert_eq!(&full[..3], b"abc");
    assert_eq!(&full[9996..], b"WXYZ");
}

#[test]
fn small_reads_and_positions() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    let mut a = ext_entry(b'x', &pax_data(&[(b"comment", b"c")]));
    a.extend_from_slice(&ustar_block(b"f", b'0', data.len() as u64));
    push_padded(&mut a, &data);
    a.extend(end());
    let mut r = TarReader::new(&a[..]);
    let h = r.next_entry().unwrap().unwrap();
    assert_eq!(r.entry_offset(), 0);
    assert_eq!(r.position(), 1536);
    assert_eq!(h.size, 5000);
    let mut got = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = r.read_data(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
    assert_eq!(r.position(), 1536 + 5000);
    assert_eq!(r.data_remaining(), 0);
    assert!(r.next_entry().unwrap().is_none());
    // Reading data with no current entry yields nothing.
    assert_eq!(r.data().read(&mut buf).unwrap(), 0);
}
