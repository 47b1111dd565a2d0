//! The 512-byte header block: field layout and the numeric encodings tar
//! uses (octal text, GNU base-256), shared by the reader and the writer.

/// Size of every tar block.
pub(crate) const BLOCK: usize = 512;

/// A header block.
pub(crate) type Block = [u8; BLOCK];

/// Field ranges of the V7 / ustar / GNU header layouts.
pub(crate) mod field {
    use std::ops::Range;

    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const UNAME: Range<usize> = 265..297;
    pub const GNAME: Range<usize> = 297..329;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    /// ustar / PAX prefix.
    pub const PREFIX: Range<usize> = 345..500;
    /// star's shorter prefix (star puts atime/ctime after it).
    pub const STAR_PREFIX: Range<usize> = 345..476;
    pub const STAR_ATIME: Range<usize> = 476..488;
    pub const STAR_CTIME: Range<usize> = 488..500;
    pub const STAR_TRAILER: Range<usize> = 508..512;
    /// GNU: atime, ctime, then the old sparse map.
    pub const GNU_ATIME: Range<usize> = 345..357;
    pub const GNU_CTIME: Range<usize> = 357..369;
    /// Four (offset, numbytes) pairs of 12 bytes each.
    pub const GNU_SPARSE: usize = 386;
    pub const GNU_IS_EXTENDED: usize = 482;
    pub const GNU_REALSIZE: Range<usize> = 483..495;
}

/// Which header dialect a block is in, from its magic and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// No magic: pre-POSIX Unix tar.
    V7,
    /// `ustar\0` + `00`: POSIX ustar (and PAX, which is ustar plus
    /// extension headers).
    Ustar,
    /// ustar magic plus the `tar\0` trailer of Jörg Schilling's star.
    Star,
    /// `ustar ` + ` \0`: GNU tar's own layout.
    Gnu,
}

pub(crate) fn format_of(b: &Block) -> Format {
    let magic = &b[field::MAGIC];
    let version = &b[field::VERSION];
    if magic == b"ustar\0" && version == b"00" {
        if &b[field::STAR_TRAILER] == b"tar\0" {
            Format::Star
        } else {
            Format::Ustar
        }
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    }
}

pub(crate) fn is_zero(b: &Block) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The unsigned and signed header sums with the checksum field counted as
/// spaces. Historic Sun and some other tars summed signed chars; GNU tar
/// accepts either, and so do we.
pub(crate) fn checksums(b: &Block) -> (u64, i64) {
    // Sum everything branch-free (it vectorises), then swap the checksum
    // field's actual bytes for the eight spaces the definition asks for.
    let unsigned: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let signed: i64 = b.iter().map(|&x| i64::from(x as i8)).sum();
    let ck = &b[field::CHKSUM];
    let ck_u: u64 = ck.iter().map(|&x| u64::from(x)).sum();
    let ck_s: i64 = ck.iter().map(|&x| i64::from(x as i8)).sum();
    let spaces = 8 * u64::from(b' ');
    (unsigned - ck_u + spaces, signed - ck_s + spaces as i64)
}

/// The bytes of a text field up to its first NUL.
pub(crate) fn cstr(f: &[u8]) -> &[u8] {
    match f.iter().position(|&b| b == 0) {
        Some(n) => &f[..n],
        None => f,
    }
}

/// Parses an octal field the way GNU tar and Go do: leading and trailing
/// spaces and NULs are padding, the rest (up to a NUL) must be octal
/// digits; an all-padding field is zero.
pub(crate) fn parse_octal(f: &[u8]) -> Option<u64> {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let Some(start) = f.iter().position(|b| !is_pad(b)) else {
        return Some(0);
    };
    let end = f.iter().rposition(|b| !is_pad(b)).map_or(start, |e| e + 1);
    let digits = cstr(&f[start..end]);
    if digits.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// Parses a numeric field, which is octal text unless its first byte has
/// the high bit set, in which case it is a GNU base-256 big-endian two's
/// complement number (bit 6 of the first byte is the sign). Returns `None`
/// for malformed or overflowing values.
pub(crate) fn parse_numeric(f: &[u8]) -> Option<i64> {
    if let Some(&first) = f.first()
        && first & 0x80 != 0
    {
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in f.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 != 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    parse_octal(f).and_then(|v| i64::try_from(v).ok())
}

/// Parses a numeric field that must not be negative.
pub(crate) fn parse_unsigned(f: &[u8]) -> Option<u64> {
    parse_numeric(f).and_then(|v| u64::try_from(v).ok())
}

/// Whether `v` fits the field as zero-padded octal followed by a NUL.
pub(crate) fn fits_octal(len: usize, v: u64) -> bool {
    let bits = (len - 1) * 3;
    bits >= 64 || v < (1u64 << bits)
}

/// Writes `v` as zero-padded octal with a terminating NUL (the form Go and
/// GNU tar write). The caller has checked [`fits_octal`].
pub(crate) fn put_octal(f: &mut [u8], mut v: u64) {
    let n = f.len() - 1;
    f[n] = 0;
    for slot in f[..n].iter_mut().rev() {
        *slot = b'0' + (v & 7) as u8;
        v >>= 3;
    }
}

/// Writes a non-negative `v` as GNU base-256: marker bit, then big-endian.
pub(crate) fn put_base256(f: &mut [u8], mut v: u64) {
    for slot in f.iter_mut().rev() {
        *slot = (v & 0xff) as u8;
        v >>= 8;
    }
    f[0] |= 0x80;
}

/// Writes `v` as octal when it fits, else as base-256, whose first byte
/// spends two bits on the marker and the sign: an 8-byte field holds 62
/// bits, a 12-byte one any u64. Returns false when neither fits.
pub(crate) fn put_numeric(f: &mut [u8], v: u64) -> bool {
    if fits_octal(f.len(), v) {
        put_octal(f, v);
        true
    } else if f.len() >= 9 || v >> ((f.len() - 1) * 8 + 6) == 0 {
        put_base256(f, v);
        true
    } else {
        false
    }
}

/// Fills in the checksum field the way Go and GNU tar do: six octal
/// digits, NUL, space.
pub(crate) fn set_checksum(b: &mut Block) {
    b[field::CHKSUM].fill(b' ');
    let (sum, _) = checksums(b);
    put_octal(&mut b[field::CHKSUM.start..field::CHKSUM.start + 7], sum);
    b[field::CHKSUM.end - 1] = b' ';
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_padding_forms() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"   644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"644     "), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"        "), Some(0));
        assert_eq!(parse_octal(b"12\0garb"), Some(0o12));
        assert_eq!(parse_octal(b"0000849\0"), None);
        assert_eq!(parse_octal(b"00 0644\0"), None);
        assert_eq!(parse_octal(b"-0000644"), None);
    }

    #[test]
    fn base256_positive_negative_overflow() {
        let mut f = [0u8; 12];
        put_base256(&mut f, 0x1_0000_0000_0000);
        assert_eq!(parse_numeric(&f), Some(0x1_0000_0000_0000));
        // -1 in two's complement with the marker and sign bits set.
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(parse_numeric(&neg), Some(-2));
        // 2^63 does not fit an i64.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4] = 0x80;
        assert_eq!(parse_numeric(&big), None);
        // Non-zero bytes beyond 8 significant ones overflow.
        let mut wide = [0u8; 12];
        wide[0] = 0x80;
        wide[2] = 1;
        assert_eq!(parse_numeric(&wide), None);
    }

    #[test]
    fn numeric_writer_picks_octal_then_base256() {
        let mut f = [0u8; 8];
        assert!(put_numeric(&mut f, 0o7777777));
        assert_eq!(&f, b"7777777\0");
        assert!(put_numeric(&mut f, 0o10000000));
        assert_eq!(f[0] & 0x80, 0x80);
        assert_eq!(parse_numeric(&f), Some(0o10000000));
        assert!(put_numeric(&mut f, u64::from(u32::MAX)));
        assert_eq!(parse_numeric(&f), Some(i64::from(u32::MAX)));
    }

    #[test]
    fn checksum_roundtrip() {
        let mut b = [0u8; BLOCK];
        b[..5].copy_from_slice(b"hello");
        set_checksum(&mut b);
        let stored = parse_octal(&b[field::CHKSUM]);
        assert_eq!(stored, Some(checksums(&b).0));
        assert_eq!(b[field::CHKSUM.end - 2], 0);
        assert_eq!(b[field::CHKSUM.end - 1], b' ');
    }
}
