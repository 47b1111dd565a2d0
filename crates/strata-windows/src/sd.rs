//! Windows security descriptors: the self-relative binary form that
//! `MSWINDOWS.rawsd` carries (base64) and the SDDL text form that
//! `MSWINDOWS.sd` carried in old layers and that people read and write.
//!
//! Both directions are done here, in Rust, so a Linux host can show a
//! layer's permissions (`windows-layer inspect`) and set them
//! (`windows-layer build --sddl`) without calling Windows. The model is
//! the documented one (MS-DTYP 2.4.6 and 2.5.1): a control word, an
//! optional owner and group SID, an optional SACL and DACL of ACEs. ACEs of
//! the common kinds (allow, deny, audit, alarm, mandatory label, scoped
//! policy) are understood field by field; other kinds (object and callback
//! ACEs) are kept as raw bytes so that binary → model → binary is exact for
//! every descriptor, and only their SDDL rendering is refused.

use std::fmt::Write as _;

/// `SE_OWNER_DEFAULTED` and friends: the control bits of a descriptor.
pub mod control {
    /// The owner was set by a default mechanism.
    pub const OWNER_DEFAULTED: u16 = 0x0001;
    /// The group was set by a default mechanism.
    pub const GROUP_DEFAULTED: u16 = 0x0002;
    /// The descriptor has a DACL (possibly null: no ACL at all).
    pub const DACL_PRESENT: u16 = 0x0004;
    /// The DACL was set by a default mechanism.
    pub const DACL_DEFAULTED: u16 = 0x0008;
    /// The descriptor has a SACL.
    pub const SACL_PRESENT: u16 = 0x0010;
    /// The SACL was set by a default mechanism.
    pub const SACL_DEFAULTED: u16 = 0x0020;
    /// SDDL `AR` on the DACL.
    pub const DACL_AUTO_INHERIT_REQ: u16 = 0x0100;
    /// SDDL `AR` on the SACL.
    pub const SACL_AUTO_INHERIT_REQ: u16 = 0x0200;
    /// SDDL `AI` on the DACL.
    pub const DACL_AUTO_INHERITED: u16 = 0x0400;
    /// SDDL `AI` on the SACL.
    pub const SACL_AUTO_INHERITED: u16 = 0x0800;
    /// SDDL `P` on the DACL.
    pub const DACL_PROTECTED: u16 = 0x1000;
    /// SDDL `P` on the SACL.
    pub const SACL_PROTECTED: u16 = 0x2000;
    /// The resource-manager control byte (`Sbz1`) is valid.
    pub const RM_CONTROL_VALID: u16 = 0x4000;
    /// The descriptor is self-relative (always, in a layer tar).
    pub const SELF_RELATIVE: u16 = 0x8000;
}

/// Why a security descriptor could not be decoded, encoded or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdError {
    /// The binary form is malformed.
    #[error("security descriptor: {0}")]
    Binary(String),
    /// The SDDL text is malformed.
    #[error("SDDL {text:?}: {reason}")]
    Sddl {
        /// The text (or the part) that was refused.
        text: String,
        /// Why.
        reason: String,
    },
    /// The descriptor holds something SDDL cannot express here.
    #[error("security descriptor cannot be written as SDDL: {0}")]
    NotRenderable(String),
}

/// A security identifier: `S-1-<authority>-<sub>...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sid {
    /// Revision, always 1 in practice.
    pub revision: u8,
    /// The 48-bit identifier authority.
    pub authority: u64,
    /// Sub-authorities (at most 15).
    pub sub_authorities: Vec<u32>,
}

/// SDDL's two-letter names for well-known SIDs that do not depend on a
/// domain, with the SID each stands for.
const SID_ALIASES: &[(&str, &str)] = &[
    ("AA", "S-1-5-32-579"),
    ("AC", "S-1-15-2-1"),
    ("AN", "S-1-5-7"),
    ("AO", "S-1-5-32-548"),
    ("AU", "S-1-5-11"),
    ("BA", "S-1-5-32-544"),
    ("BG", "S-1-5-32-546"),
    ("BO", "S-1-5-32-551"),
    ("BU", "S-1-5-32-545"),
    ("CD", "S-1-5-32-574"),
    ("CG", "S-1-3-1"),
    ("CO", "S-1-3-0"),
    ("CY", "S-1-5-32-569"),
    ("ED", "S-1-5-9"),
    ("ER", "S-1-5-32-573"),
    ("ES", "S-1-5-32-576"),
    ("HA", "S-1-5-32-578"),
    ("HI", "S-1-16-12288"),
    ("IS", "S-1-5-32-568"),
    ("IU", "S-1-5-4"),
    ("LS", "S-1-5-19"),
    ("LU", "S-1-5-32-559"),
    ("LW", "S-1-16-4096"),
    ("ME", "S-1-16-8192"),
    ("MP", "S-1-16-8448"),
    ("MS", "S-1-5-32-577"),
    ("MU", "S-1-5-32-558"),
    ("NO", "S-1-5-32-556"),
    ("NS", "S-1-5-20"),
    ("NU", "S-1-5-2"),
    ("OW", "S-1-3-4"),
    ("PO", "S-1-5-32-550"),
    ("PS", "S-1-5-10"),
    ("PU", "S-1-5-32-547"),
    ("RA", "S-1-5-32-575"),
    ("RC", "S-1-5-12"),
    ("RD", "S-1-5-32-555"),
    ("RE", "S-1-5-32-552"),
    ("RM", "S-1-5-32-580"),
    ("RU", "S-1-5-32-554"),
    ("SI", "S-1-16-16384"),
    ("SO", "S-1-5-32-549"),
    ("SS", "S-1-18-2"),
    ("SU", "S-1-5-6"),
    ("SY", "S-1-5-18"),
    ("WD", "S-1-1-0"),
    ("WR", "S-1-5-33"),
];

impl Sid {
    /// Parses the `S-1-...` form.
    pub fn parse_str(s: &str) -> Result<Sid, SdError> {
        let bad = |reason: &str| SdError::Sddl {
            text: s.to_string(),
            reason: reason.to_string(),
        };
        let rest = s
            .strip_prefix("S-")
            .or_else(|| s.strip_prefix("s-"))
            .ok_or_else(|| bad("a SID starts with S-"))?;
        let mut parts = rest.split('-');
        let revision: u8 = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| bad("bad SID revision"))?;
        let auth = parts.next().ok_or_else(|| bad("SID without authority"))?;
        let authority = match auth.strip_prefix("0x").or_else(|| auth.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad("bad SID authority"))?,
            None => auth.parse().map_err(|_| bad("bad SID authority"))?,
        };
        if authority >= 1 << 48 {
            return Err(bad("SID authority exceeds 48 bits"));
        }
        let sub_authorities = parts
            .map(|p| p.parse::<u32>().map_err(|_| bad("bad SID sub-authority")))
            .collect::<Result<Vec<_>, _>>()?;
        if sub_authorities.len() > 15 {
            return Err(bad("more than 15 SID sub-authorities"));
        }
        Ok(Sid {
            revision,
            authority,
            sub_authorities,
        })
    }

    /// Parses an SDDL account: a two-letter alias or an `S-1-...` SID.
    pub fn parse_sddl(s: &str) -> Result<Sid, SdError> {
        if let Some((_, sid)) = SID_ALIASES.iter().find(|(a, _)| *a == s) {
            return Sid::parse_str(sid);
        }
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(SdError::Sddl {
                text: s.to_string(),
                reason: "unknown or domain-relative SID alias (write the S-1-... form)".into(),
            });
        }
        Sid::parse_str(s)
    }

    /// The `S-1-...` form.
    pub fn to_sid_string(&self) -> String {
        let mut s = format!("S-{}-", self.revision);
        if self.authority < 1 << 32 {
            let _ = write!(s, "{}", self.authority);
        } else {
            let _ = write!(s, "0x{:012X}", self.authority);
        }
        for sub in &self.sub_authorities {
            let _ = write!(s, "-{sub}");
        }
        s
    }

    /// The SDDL form: the alias where there is one, else `S-1-...`.
    pub fn to_sddl(&self) -> String {
        let s = self.to_sid_string();
        SID_ALIASES
            .iter()
            .find(|(_, sid)| *sid == s)
            .map_or(s, |(a, _)| (*a).to_string())
    }

    /// Bytes of the binary form.
    pub fn binary_len(&self) -> usize {
        8 + 4 * self.sub_authorities.len()
    }

    /// Decodes a SID at the start of `b`; returns it and its length.
    pub fn decode(b: &[u8]) -> Result<(Sid, usize), SdError> {
        if b.len() < 8 {
            return Err(SdError::Binary("SID shorter than 8 bytes".into()));
        }
        let count = usize::from(b[1]);
        if count > 15 {
            return Err(SdError::Binary(format!(
                "SID with {count} sub-authorities (at most 15)"
            )));
        }
        let len = 8 + 4 * count;
        if b.len() < len {
            return Err(SdError::Binary("SID runs past its buffer".into()));
        }
        let authority = b[2..8].iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        let sub_authorities = b[8..len]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((
            Sid {
                revision: b[0],
                authority,
                sub_authorities,
            },
            len,
        ))
    }

    /// Appends the binary form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.revision);
        out.push(self.sub_authorities.len() as u8);
        out.extend_from_slice(&self.authority.to_be_bytes()[2..]);
        for s in &self.sub_authorities {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
}

/// ACE types this module reads field by field (MS-DTYP 2.4.4.1): each is
/// a type, flags, size, access mask and SID.
const SIMPLE_ACE_TYPES: &[(u8, &str)] = &[
    (0x00, "A"),
    (0x01, "D"),
    (0x02, "AU"),
    (0x03, "AL"),
    (0x11, "ML"),
    (0x13, "SP"),
];

/// SDDL ACE flags and their bits.
const ACE_FLAGS: &[(&str, u8)] = &[
    ("OI", 0x01),
    ("CI", 0x02),
    ("NP", 0x04),
    ("IO", 0x08),
    ("ID", 0x10),
    ("SA", 0x40),
    ("FA", 0x80),
];

/// Access-mask names SDDL writes for a whole mask when it matches exactly.
const WHOLE_RIGHTS: &[(&str, u32)] = &[
    ("FA", 0x001F_01FF),
    ("FR", 0x0012_0089),
    ("FW", 0x0012_0116),
    ("FX", 0x0012_00A0),
    ("KA", 0x000F_003F),
    ("KR", 0x0002_0019),
    ("KW", 0x0002_0006),
];

/// Access-mask names for single bits (or small groups), in SDDL's order.
const RIGHT_BITS: &[(&str, u32)] = &[
    ("GA", 0x1000_0000),
    ("GR", 0x8000_0000),
    ("GW", 0x4000_0000),
    ("GX", 0x2000_0000),
    ("RC", 0x0002_0000),
    ("SD", 0x0001_0000),
    ("WD", 0x0004_0000),
    ("WO", 0x0008_0000),
    ("RP", 0x0000_0010),
    ("WP", 0x0000_0020),
    ("CC", 0x0000_0001),
    ("DC", 0x0000_0002),
    ("LC", 0x0000_0004),
    ("SW", 0x0000_0008),
    ("LO", 0x0000_0080),
    ("DT", 0x0000_0040),
    ("CR", 0x0000_0100),
];

/// Names only accepted when parsing (their bits overlap the above).
const PARSE_ONLY_RIGHTS: &[(&str, u32)] = &[
    ("KX", 0x0002_0019),
    ("NR", 0x0000_0001),
    ("NW", 0x0000_0002),
    ("NX", 0x0000_0004),
];

/// One access control entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ace {
    /// An ACE of a type with the plain layout (allow, deny, audit, alarm,
    /// mandatory label, scoped policy).
    Simple {
        /// `ACE_HEADER.AceType`.
        ace_type: u8,
        /// `ACE_HEADER.AceFlags`.
        flags: u8,
        /// The access mask.
        mask: u32,
        /// The trustee.
        sid: Sid,
        /// Bytes after the SID inside the ACE (padding or application
        /// data), kept so the binary form round-trips.
        trailing: Vec<u8>,
    },
    /// An ACE of any other type, kept whole.
    Raw(Vec<u8>),
}

impl Ace {
    fn decode(b: &[u8]) -> Result<(Ace, usize), SdError> {
        if b.len() < 4 {
            return Err(SdError::Binary("ACE header runs past the ACL".into()));
        }
        let size = usize::from(u16::from_le_bytes([b[2], b[3]]));
        if size < 4 || size > b.len() {
            return Err(SdError::Binary(format!(
                "ACE size {size} does not fit the ACL"
            )));
        }
        let ace = &b[..size];
        if !SIMPLE_ACE_TYPES.iter().any(|(t, _)| *t == ace[0]) {
            return Ok((Ace::Raw(ace.to_vec()), size));
        }
        if size < 8 {
            return Err(SdError::Binary("ACE too short for its mask".into()));
        }
        let mask = u32::from_le_bytes([ace[4], ace[5], ace[6], ace[7]]);
        let (sid, n) = Sid::decode(&ace[8..])?;
        Ok((
            Ace::Simple {
                ace_type: ace[0],
                flags: ace[1],
                mask,
                sid,
                trailing: ace[8 + n..].to_vec(),
            },
            size,
        ))
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), SdError> {
        match self {
            Ace::Raw(b) => out.extend_from_slice(b),
            Ace::Simple {
                ace_type,
                flags,
                mask,
                sid,
                trailing,
            } => {
                let size = 8 + sid.binary_len() + trailing.len();
                let size = u16::try_from(size)
                    .map_err(|_| SdError::Binary("ACE larger than 64 KiB".into()))?;
                out.push(*ace_type);
                out.push(*flags);
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&mask.to_le_bytes());
                sid.encode(out);
                out.extend_from_slice(trailing);
            }
        }
        Ok(())
    }

    fn to_sddl(&self) -> Result<String, SdError> {
        let Ace::Simple {
            ace_type,
            flags,
            mask,
            sid,
            ..
        } = self
        else {
            let t = match self {
                Ace::Raw(b) => b.first().copied().unwrap_or(0),
                Ace::Simple { .. } => 0,
            };
            return Err(SdError::NotRenderable(format!("ACE type {t:#04x}")));
        };
        let ty = SIMPLE_ACE_TYPES
            .iter()
            .find(|(t, _)| t == ace_type)
            .map_or("?", |(_, n)| n);
        let mut f = String::new();
        let mut known = 0u8;
        for (name, bit) in ACE_FLAGS {
            if flags & bit != 0 {
                f.push_str(name);
                known |= bit;
            }
        }
        if flags & !known != 0 {
            return Err(SdError::NotRenderable(format!("ACE flags {flags:#04x}")));
        }
        Ok(format!(
            "({ty};{f};{};;;{})",
            rights_to_sddl(*mask),
            sid.to_sddl()
        ))
    }

    fn parse_sddl(s: &str) -> Result<Ace, SdError> {
        let bad = |reason: &str| SdError::Sddl {
            text: format!("({s})"),
            reason: reason.to_string(),
        };
        let fields: Vec<&str> = s.split(';').collect();
        if fields.len() != 6 {
            return Err(bad("an ACE has 6 fields: type;flags;rights;guid;guid;sid"));
        }
        let ace_type = SIMPLE_ACE_TYPES
            .iter()
            .find(|(_, n)| *n == fields[0])
            .map(|(t, _)| *t)
            .ok_or_else(|| bad("unsupported ACE type"))?;
        let mut flags = 0u8;
        let mut rest = fields[1];
        while !rest.is_empty() {
            let (name, bit) = ACE_FLAGS
                .iter()
                .find(|(n, _)| rest.starts_with(n))
                .ok_or_else(|| bad("unknown ACE flag"))?;
            flags |= bit;
            rest = &rest[name.len()..];
        }
        if !fields[3].is_empty() || !fields[4].is_empty() {
            return Err(bad("object ACE GUIDs are not supported"));
        }
        Ok(Ace::Simple {
            ace_type,
            flags,
            mask: parse_rights(fields[2]).ok_or_else(|| bad("bad access rights"))?,
            sid: Sid::parse_sddl(fields[5])?,
            trailing: Vec::new(),
        })
    }
}

/// An access control list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// `ACL_REVISION` (2) or `ACL_REVISION_DS` (4).
    pub revision: u8,
    /// The entries, in order.
    pub aces: Vec<Ace>,
}

impl Acl {
    fn decode(b: &[u8]) -> Result<Acl, SdError> {
        if b.len() < 8 {
            return Err(SdError::Binary(
                "ACL header runs past the descriptor".into(),
            ));
        }
        let size = usize::from(u16::from_le_bytes([b[2], b[3]]));
        let count = usize::from(u16::from_le_bytes([b[4], b[5]]));
        if size < 8 || size > b.len() {
            return Err(SdError::Binary(format!(
                "ACL size {size} does not fit the descriptor"
            )));
        }
        let mut at = 8;
        let mut aces = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let (ace, n) = Ace::decode(&b[at..size])?;
            aces.push(ace);
            at += n;
        }
        Ok(Acl {
            revision: b[0],
            aces,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), SdError> {
        let start = out.len();
        out.extend_from_slice(&[self.revision, 0, 0, 0]);
        let count = u16::try_from(self.aces.len())
            .map_err(|_| SdError::Binary("more than 65535 ACEs".into()))?;
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        for a in &self.aces {
            a.encode(out)?;
        }
        let size = u16::try_from(out.len() - start)
            .map_err(|_| SdError::Binary("ACL larger than 64 KiB".into()))?;
        out[start + 2..start + 4].copy_from_slice(&size.to_le_bytes());
        Ok(())
    }
}

/// A security descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityDescriptor {
    /// Always 1.
    pub revision: u8,
    /// `Sbz1`: the resource-manager control byte.
    pub rm_control: u8,
    /// Control bits ([`control`]).
    pub control: u16,
    /// The owner.
    pub owner: Option<Sid>,
    /// The primary group.
    pub group: Option<Sid>,
    /// The system ACL (auditing), when present.
    pub sacl: Option<Acl>,
    /// The discretionary ACL; `None` with `DACL_PRESENT` is a null DACL
    /// (everyone has full access).
    pub dacl: Option<Acl>,
}

impl SecurityDescriptor {
    /// Decodes the self-relative binary form.
    pub fn decode(b: &[u8]) -> Result<SecurityDescriptor, SdError> {
        if b.len() < 20 {
            return Err(SdError::Binary(format!(
                "{} bytes; a descriptor has a 20-byte header",
                b.len()
            )));
        }
        if b[0] != 1 {
            return Err(SdError::Binary(format!("revision {} (expected 1)", b[0])));
        }
        let control = u16::from_le_bytes([b[2], b[3]]);
        if control & control::SELF_RELATIVE == 0 {
            return Err(SdError::Binary("not in self-relative form".into()));
        }
        let off = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let at = |o: usize, what: &str| -> Result<&[u8], SdError> {
            if o < 20 || o >= b.len() {
                return Err(SdError::Binary(format!("{what} offset {o} out of range")));
            }
            Ok(&b[o..])
        };
        let sid_at = |o: usize, what: &str| -> Result<Option<Sid>, SdError> {
            if o == 0 {
                return Ok(None);
            }
            Ok(Some(Sid::decode(at(o, what)?)?.0))
        };
        let owner = sid_at(off(4), "owner")?;
        let group = sid_at(off(8), "group")?;
        let sacl = match off(12) {
            0 => None,
            o if control & control::SACL_PRESENT != 0 => Some(Acl::decode(at(o, "SACL")?)?),
            _ => None,
        };
        let dacl = match off(16) {
            0 => None,
            o if control & control::DACL_PRESENT != 0 => Some(Acl::decode(at(o, "DACL")?)?),
            _ => None,
        };
        Ok(SecurityDescriptor {
            revision: b[0],
            rm_control: b[1],
            control,
            owner,
            group,
            sacl,
            dacl,
        })
    }

    /// Encodes the self-relative binary form: header, owner, group, SACL,
    /// DACL.
    pub fn encode(&self) -> Result<Vec<u8>, SdError> {
        let mut out = vec![0u8; 20];
        out[0] = self.revision;
        out[1] = self.rm_control;
        out[2..4].copy_from_slice(&(self.control | control::SELF_RELATIVE).to_le_bytes());
        let put_off = |out: &mut Vec<u8>, slot: usize| {
            let o = out.len() as u32;
            out[slot..slot + 4].copy_from_slice(&o.to_le_bytes());
        };
        if let Some(s) = &self.owner {
            put_off(&mut out, 4);
            s.encode(&mut out);
        }
        if let Some(s) = &self.group {
            put_off(&mut out, 8);
            s.encode(&mut out);
        }
        if let Some(a) = &self.sacl {
            put_off(&mut out, 12);
            a.encode(&mut out)?;
        }
        if let Some(a) = &self.dacl {
            put_off(&mut out, 16);
            a.encode(&mut out)?;
        }
        Ok(out)
    }

    /// Parses SDDL (`O:..G:..D:flags(ace)(ace)S:flags(ace)`).
    pub fn parse_sddl(text: &str) -> Result<SecurityDescriptor, SdError> {
        let bad = |reason: &str| SdError::Sddl {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let s: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut sd = SecurityDescriptor {
            revision: 1,
            rm_control: 0,
            control: control::SELF_RELATIVE,
            owner: None,
            group: None,
            sacl: None,
            dacl: None,
        };
        let mut rest = s.as_str();
        while !rest.is_empty() {
            let (tag, body) = rest.split_at(rest.len().min(2));
            // A component runs until the next `X:` tag outside parentheses.
            let end = component_end(body);
            let value = &body[..end];
            rest = &body[end..];
            match tag {
                "O:" => sd.owner = Some(Sid::parse_sddl(value)?),
                "G:" => sd.group = Some(Sid::parse_sddl(value)?),
                "D:" | "S:" => {
                    let dacl = tag == "D:";
                    let (flags, acl) = parse_acl(value)?;
                    let (p, ai, ar, present) = if dacl {
                        (
                            control::DACL_PROTECTED,
                            control::DACL_AUTO_INHERITED,
                            control::DACL_AUTO_INHERIT_REQ,
                            control::DACL_PRESENT,
                        )
                    } else {
                        (
                            control::SACL_PROTECTED,
                            control::SACL_AUTO_INHERITED,
                            control::SACL_AUTO_INHERIT_REQ,
                            control::SACL_PRESENT,
                        )
                    };
                    sd.control |= present;
                    for f in flags {
                        sd.control |= match f {
                            AclFlag::Protected => p,
                            AclFlag::AutoInherited => ai,
                            AclFlag::AutoInheritReq => ar,
                            AclFlag::NoAccessControl => 0,
                        };
                    }
                    if dacl {
                        sd.dacl = acl;
                    } else {
                        sd.sacl = acl;
                    }
                }
                _ => return Err(bad("expected O:, G:, D: or S:")),
            }
        }
        Ok(sd)
    }

    /// Renders the descriptor as SDDL, in Windows' order (O, G, D, S).
    pub fn to_sddl(&self) -> Result<String, SdError> {
        let mut s = String::new();
        if let Some(o) = &self.owner {
            let _ = write!(s, "O:{}", o.to_sddl());
        }
        if let Some(g) = &self.group {
            let _ = write!(s, "G:{}", g.to_sddl());
        }
        let acl = |s: &mut String,
                   tag: &str,
                   present: u16,
                   flags: [(u16, &str); 3],
                   acl: &Option<Acl>|
         -> Result<(), SdError> {
            if self.control & present == 0 {
                return Ok(());
            }
            s.push_str(tag);
            for (bit, name) in flags {
                if self.control & bit != 0 {
                    s.push_str(name);
                }
            }
            match acl {
                None => s.push_str("NO_ACCESS_CONTROL"),
                Some(a) => {
                    for ace in &a.aces {
                        s.push_str(&ace.to_sddl()?);
                    }
                }
            }
            Ok(())
        };
        acl(
            &mut s,
            "D:",
            control::DACL_PRESENT,
            [
                (control::DACL_PROTECTED, "P"),
                (control::DACL_AUTO_INHERIT_REQ, "AR"),
                (control::DACL_AUTO_INHERITED, "AI"),
            ],
            &self.dacl,
        )?;
        acl(
            &mut s,
            "S:",
            control::SACL_PRESENT,
            [
                (control::SACL_PROTECTED, "P"),
                (control::SACL_AUTO_INHERIT_REQ, "AR"),
                (control::SACL_AUTO_INHERITED, "AI"),
            ],
            &self.sacl,
        )?;
        Ok(s)
    }
}

/// Converts SDDL text to the self-relative binary form.
pub fn sddl_to_binary(text: &str) -> Result<Vec<u8>, SdError> {
    SecurityDescriptor::parse_sddl(text)?.encode()
}

/// Converts the self-relative binary form to SDDL.
pub fn binary_to_sddl(b: &[u8]) -> Result<String, SdError> {
    SecurityDescriptor::decode(b)?.to_sddl()
}

/// Where the component starting at `body` ends: at the next `O:`, `G:`,
/// `D:` or `S:` that is not inside an ACE's parentheses.
fn component_end(body: &str) -> usize {
    let b = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            c if depth == 0
                && matches!(c, b'O' | b'G' | b'D' | b'S')
                && b.get(i + 1) == Some(&b':') =>
            {
                return i;
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

enum AclFlag {
    Protected,
    AutoInherited,
    AutoInheritReq,
    NoAccessControl,
}

/// Parses `flags(ace)(ace)...`; the ACL is `None` for `NO_ACCESS_CONTROL`.
fn parse_acl(v: &str) -> Result<(Vec<AclFlag>, Option<Acl>), SdError> {
    let bad = |reason: &str| SdError::Sddl {
        text: v.to_string(),
        reason: reason.to_string(),
    };
    let (flag_text, aces_text) = v.split_at(v.find('(').unwrap_or(v.len()));
    let mut flags = Vec::new();
    let mut rest = flag_text;
    while !rest.is_empty() {
        let (f, n) = if rest.starts_with("NO_ACCESS_CONTROL") {
            (AclFlag::NoAccessControl, 17)
        } else if rest.starts_with("AI") {
            (AclFlag::AutoInherited, 2)
        } else if rest.starts_with("AR") {
            (AclFlag::AutoInheritReq, 2)
        } else if rest.starts_with('P') {
            (AclFlag::Protected, 1)
        } else {
            return Err(bad("unknown ACL flag"));
        };
        flags.push(f);
        rest = &rest[n..];
    }
    let null = flags.iter().any(|f| matches!(f, AclFlag::NoAccessControl));
    let mut aces = Vec::new();
    let mut rest = aces_text;
    while let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or_else(|| bad("unclosed ACE"))?;
        aces.push(Ace::parse_sddl(&r[..close])?);
        rest = &r[close + 1..];
    }
    if !rest.is_empty() {
        return Err(bad("text after the ACEs"));
    }
    if null {
        if !aces.is_empty() {
            return Err(bad("NO_ACCESS_CONTROL with ACEs"));
        }
        return Ok((flags, None));
    }
    Ok((flags, Some(Acl { revision: 2, aces })))
}

/// Renders an access mask: a whole-mask name, else single-bit names when
/// they cover every bit, else hex (as Windows does, e.g. `0x1200a9`).
fn rights_to_sddl(mask: u32) -> String {
    if let Some((n, _)) = WHOLE_RIGHTS.iter().find(|(_, m)| *m == mask) {
        return (*n).to_string();
    }
    let mut s = String::new();
    let mut covered = 0u32;
    for (n, bit) in RIGHT_BITS {
        if mask & bit == *bit {
            s.push_str(n);
            covered |= bit;
        }
    }
    if covered == mask && !s.is_empty() {
        s
    } else {
        format!("{mask:#x}")
    }
}

/// Parses an access mask: hex or decimal, or concatenated right names.
fn parse_rights(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let mut mask = 0u32;
    let mut rest = s;
    while !rest.is_empty() {
        let name = rest.get(..2)?;
        let bits = WHOLE_RIGHTS
            .iter()
            .chain(RIGHT_BITS)
            .chain(PARSE_ONLY_RIGHTS)
            .find(|(n, _)| *n == name)?
            .1;
        mask |= bits;
        rest = &rest[2..];
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const GGCR: &str = "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";
    const BUILDKIT_FILE: &str = "O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)";
    const BUILDKIT_DIR: &str = "O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;FA;;;BA)\
                                (A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;BU)(A;CI;DC;;;BU)";

    #[test]
    fn ggcr_no_dacl_users() {
        let b = base64::engine::general_purpose::STANDARD
            .decode(GGCR)
            .unwrap();
        assert_eq!(b.len(), 52);
        let sd = SecurityDescriptor::decode(&b).unwrap();
        assert_eq!(sd.to_sddl().unwrap(), "O:BUG:BU");
        assert_eq!(sd.encode().unwrap(), b);
        assert_eq!(sddl_to_binary("O:BUG:BU").unwrap(), b);
    }

    #[test]
    fn buildkit_sizes_and_round_trip() {
        for (text, len) in [(BUILDKIT_FILE, 124), (BUILDKIT_DIR, 216)] {
            let b = sddl_to_binary(text).unwrap();
            assert_eq!(b.len(), len, "{text}");
            assert_eq!(binary_to_sddl(&b).unwrap(), text);
        }
    }

    #[test]
    fn flags_null_dacl_and_sids() {
        let t = "O:S-1-5-21-1-2-3-500G:SYD:PAI(D;;GA;;;WD)(A;ID;FR;;;AU)S:NO_ACCESS_CONTROL";
        let sd = SecurityDescriptor::parse_sddl(t).unwrap();
        assert!(sd.control & control::DACL_PROTECTED != 0);
        assert!(sd.sacl.is_none() && sd.control & control::SACL_PRESENT != 0);
        let back = binary_to_sddl(&sd.encode().unwrap()).unwrap();
        assert_eq!(
            back,
            "O:S-1-5-21-1-2-3-500G:SYD:PAI(D;;GA;;;WD)(A;ID;FR;;;AU)S:NO_ACCESS_CONTROL"
        );
        assert_eq!(rights_to_sddl(0x6), "DCLC");
        assert_eq!(parse_rights("DCLC"), Some(6));
    }

    #[test]
    fn refusals_name_the_problem() {
        for bad in [
            "O:XX",
            "Q:BA",
            "D:(A;;FA;;BA)",
            "D:(Z;;FA;;;BA)",
            "D:(A;;FA;;;BA",
        ] {
            assert!(sddl_to_binary(bad).is_err(), "{bad}");
        }
        assert!(SecurityDescriptor::decode(&[1, 0, 0, 0]).is_err());
        let mut b = sddl_to_binary(BUILDKIT_FILE).unwrap();
        b[16] = 0xff; // DACL offset past the end
        assert!(SecurityDescriptor::decode(&b).is_err());
    }

    #[test]
    fn unknown_ace_types_round_trip_in_binary() {
        let mut sd = SecurityDescriptor::parse_sddl(BUILDKIT_FILE).unwrap();
        let raw = vec![0x05, 0, 12, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        sd.dacl.as_mut().unwrap().aces.push(Ace::Raw(raw));
        let b = sd.encode().unwrap();
        assert_eq!(SecurityDescriptor::decode(&b).unwrap(), sd);
        assert!(matches!(sd.to_sddl(), Err(SdError::NotRenderable(_))));
    }
}
