//! containerd's filter language, as `List` receives it: each filter is a
//! comma-separated list of selectors that must all match, and a snapshot
//! is listed when any one filter matches (no filter: everything).
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]      no operator: "is present"
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="               ~= is a regular expression
//! value     := quoted | run of printable characters up to "," or space
//! quoted    := "..." with Go escapes; /.../ or |...| also after ~=
//! ```
//!
//! Snapshots expose `name`, `parent` (always present, `""` without one),
//! `kind` (`active`, `view`, `committed`) and `labels.<key>`, where the
//! key is the rest of the path joined with dots, so both
//! `labels."containerd.io/gc.root"` and `labels.a.b` work. The scanner
//! follows containerd's quirks (a value starts right after the operator,
//! whitespace is skipped between tokens but not before an operator's
//! lookahead), so a filter means here what it means to containerd.

use regex::bytes::Regex;

use crate::model::Info;

/// A parsed `List` request: any of its filters must match.
#[derive(Debug, Default)]
pub struct FilterSet {
    /// One entry per filter string; empty means "everything".
    any: Vec<Vec<Selector>>,
}

#[derive(Debug)]
struct Selector {
    path: Vec<Vec<u8>>,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Present,
    Equal(Vec<u8>),
    NotEqual(Vec<u8>),
    /// `None` when the expression does not compile: containerd logs that
    /// and matches nothing, rather than refusing the filter.
    Matches(Option<Regex>),
}

impl FilterSet {
    /// Parses `filters`; an error names the filter and the position.
    pub fn parse(filters: &[String]) -> Result<FilterSet, FilterError> {
        let mut any = Vec::new();
        for f in filters {
            if f.is_empty() {
                // containerd: an empty filter matches everything.
                any.push(Vec::new());
                continue;
            }
            any.push(Parser::new(f).selectors()?);
        }
        Ok(FilterSet { any })
    }

    /// True when `info` matches.
    pub fn matches(&self, info: &Info) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let value = field(info, &self.path);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value.is_some_and(|x| x == v.as_slice()),
            Op::NotEqual(v) => value.unwrap_or_default() != v.as_slice(),
            Op::Matches(re) => re
                .as_ref()
                .is_some_and(|re| re.is_match(value.unwrap_or_default())),
        }
    }
}

/// The value of `path` on a snapshot, if it has one.
fn field<'a>(info: &'a Info, path: &[Vec<u8>]) -> Option<&'a [u8]> {
    match path.first().map(Vec::as_slice) {
        Some(b"name") => Some(info.name.as_bytes()),
        Some(b"parent") => Some(info.parent.as_bytes()),
        Some(b"kind") => Some(info.kind.as_str().as_bytes()),
        Some(b"labels") => {
            if info.labels.is_empty() {
                return None;
            }
            let key = path[1..].join(&b'.');
            let key = std::str::from_utf8(&key).ok()?;
            info.labels.get(key).map(|v| v.as_bytes())
        }
        _ => None,
    }
}

/// A filter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {filter:?} at byte {pos}: {reason}")]
pub struct FilterError {
    /// The filter as given.
    pub filter: String,
    /// Byte offset of the problem.
    pub pos: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, PartialEq)]
enum Token {
    Eof,
    /// A quoted literal, already decoded, with its quote character.
    Quoted(Vec<u8>, char),
    Value(String),
    Field(String),
    Separator(char),
    Operator(String),
    Other(char),
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    /// The next token is a value (set by an operator).
    value: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            pos: 0,
            value: false,
        }
    }

    fn err(&self, pos: usize, reason: impl Into<String>) -> FilterError {
        FilterError {
            filter: self.input.to_string(),
            pos,
            reason: reason.into(),
        }
    }

    /// The next character, without consuming it or skipping whitespace.
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut out = vec![self.selector()?];
        loop {
            match self.peek() {
                Some(',') => {
                    let (pos, tok) = self.scan()?;
                    if tok != Token::Separator(',') {
                        return Err(self.err(pos, "expected a separator"));
                    }
                    out.push(self.selector()?);
                }
                None => return Ok(out),
                Some(c) => return Err(self.err(self.pos, format!("unexpected input: {c}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.fieldpath()?;
        if matches!(self.peek(), None | Some(',')) {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        }
        let (pos, tok) = self.scan()?;
        let op = match tok {
            Token::Operator(s) if matches!(s.as_str(), "==" | "!=" | "~=") => s,
            Token::Operator(s) => return Err(self.err(pos, format!("unsupported operator {s:?}"))),
            _ => return Err(self.err(pos, r#"expected an operator ("=="|"!="|"~=")"#)),
        };
        let regex = op == "~=";
        let (pos, tok) = self.scan()?;
        let value = match tok {
            Token::Value(s) | Token::Field(s) => s.into_bytes(),
            Token::Quoted(v, q) if q == '"' || regex => v,
            Token::Quoted(..) => return Err(self.err(pos, "invalid quote encountered")),
            Token::Eof => return Err(self.err(pos, "unexpected end of filter")),
            _ => return Err(self.err(pos, "expected value or quoted")),
        };
        let op = match op.as_str() {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(compile(&value)),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<Vec<u8>>, FilterError> {
        let mut out = vec![self.field()?];
        while self.peek() == Some('.') {
            self.scan()?;
            out.push(self.field()?);
        }
        Ok(out)
    }

    fn field(&mut self) -> Result<Vec<u8>, FilterError> {
        let (pos, tok) = self.scan()?;
        match tok {
            Token::Field(s) => Ok(s.into_bytes()),
            Token::Quoted(v, '"') => Ok(v),
            Token::Quoted(..) => Err(self.err(pos, "invalid quote encountered")),
            _ => Err(self.err(pos, "expected field or quoted")),
        }
    }

    /// The next token and where it starts.
    fn scan(&mut self) -> Result<(usize, Token), FilterError> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let pos = self.pos;
        let Some(c) = self.bump() else {
            return Ok((pos, Token::Eof));
        };
        if c == '\0' {
            return Err(self.err(pos, "unexpected null"));
        }
        let tok = match c {
            '/' | '|' | '"' => Token::Quoted(self.quoted(pos, c)?, c),
            ',' | '.' => {
                self.value = false;
                Token::Separator(c)
            }
            '=' | '!' | '~' => {
                while matches!(self.peek(), Some('=' | '!' | '~')) {
                    self.bump();
                }
                self.value = true;
                Token::Operator(self.input[pos..self.pos].to_string())
            }
            _ if self.value => {
                while self.peek().is_some_and(is_value_char) {
                    self.bump();
                }
                self.value = false;
                Token::Value(self.input[pos..self.pos].to_string())
            }
            _ if is_field_char(c) => {
                while self.peek().is_some_and(is_field_char) {
                    self.bump();
                }
                Token::Field(self.input[pos..self.pos].to_string())
            }
            _ => Token::Other(c),
        };
        Ok((pos, tok))
    }

    /// Decodes a quoted literal whose opening `quote` was at `start`.
    fn quoted(&mut self, start: usize, quote: char) -> Result<Vec<u8>, FilterError> {
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None | Some('\n') => {
                    return Err(self.err(start, "quoted literal not terminated"));
                }
                Some(c) if c == quote => return Ok(out),
                Some('\\') => self.escape(at, quote, &mut out)?,
                Some(c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }

    /// Decodes the escape after a backslash at `at` (Go's rules).
    fn escape(&mut self, at: usize, quote: char, out: &mut Vec<u8>) -> Result<(), FilterError> {
        let bad = |p: &Self| p.err(at, "illegal escape sequence");
        let c = self.bump().ok_or_else(|| bad(self))?;
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            _ if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let (digits, radix) = match c {
            '0'..='7' => (2, 8),
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            _ => return Err(bad(self)),
        };
        let mut v: u32 = if radix == 8 { c as u32 - '0' as u32 } else { 0 };
        for _ in 0..digits {
            let d = self
                .bump()
                .and_then(|d| d.to_digit(radix))
                .ok_or_else(|| self.err(at, "illegal numeric escape sequence"))?;
            v = v * radix + d;
        }
        match c {
            '0'..='7' | 'x' => {
                let b = u8::try_from(v).map_err(|_| bad(self))?;
                out.push(b);
            }
            _ => {
                let ch = char::from_u32(v).ok_or_else(|| bad(self))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
        Ok(())
    }
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_value_char(c: char) -> bool {
    c != ',' && !c.is_whitespace() && !c.is_control()
}

fn compile(pattern: &[u8]) -> Option<Regex> {
    let Ok(p) = std::str::from_utf8(pattern) else {
        tracing::warn!(pattern = %String::from_utf8_lossy(pattern), "filter regexp is not UTF-8; it matches nothing");
        return None;
    };
    match Regex::new(p) {
        Ok(re) => Some(re),
        Err(e) => {
            tracing::warn!(pattern = p, error = %e, "filter regexp does not compile; it matches nothing");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::model::Kind;

    fn info(name: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            parent: parent.into(),
            kind,
            created: UNIX_EPOCH,
            updated: UNIX_EPOCH,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn m(filters: &[&str], i: &Info) -> bool {
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        FilterSet::parse(&f).unwrap().matches(i)
    }

    #[test]
    fn fields_and_operators() {
        let a = info(
            "default/3/a",
            "default/2/p",
            Kind::Active,
            &[
                ("containerd.io/gc.root", "x"),
                ("l", "2"),
                ("a.b", "dotted"),
            ],
        );
        assert!(m(&[], &a));
        assert!(m(&[""], &a));
        assert!(m(&["kind==active"], &a));
        assert!(!m(&["kind==committed"], &a));
        assert!(m(&["name==\"default/3/a\""], &a));
        assert!(
            m(&["name==default/3/a"], &a),
            "unquoted values run to , or space"
        );
        assert!(m(&[r#"labels."containerd.io/gc.root"==x"#], &a));
        assert!(m(&["labels.l"], &a));
        assert!(!m(&["labels.m"], &a));
        assert!(m(&["labels.a.b==dotted"], &a));
        assert!(m(&["parent!=\"\""], &a));
        assert!(m(&["labels.l==2,kind==active"], &a));
        assert!(!m(&["labels.l==2,kind==view"], &a));
        assert!(
            m(&["labels.l==3", "name==default/3/a"], &a),
            "any of the filters"
        );
        assert!(m(&["name~=/^default\\/3/"], &a));
        assert!(m(&["name~=|a$|"], &a));
        assert!(m(&["name~=\"^def\""], &a));
        assert!(!m(&["name~=^x"], &a));
        assert!(m(&["labels.m!=1"], &a), "!= holds for an absent field");
        assert!(m(&[" kind == active"], &a), "spaces between tokens");
        assert!(!m(&["name=='default/3/a'"], &a), "' is no quote");
        assert!(
            FilterSet::parse(&["kind==active ".into()]).is_err(),
            "trailing space"
        );
        assert!(m(&["labels.\"l\"==\"\\x32\""], &a), "escapes");
        let base = info("c1", "", Kind::Committed, &[]);
        assert!(!m(&["parent!=\"\""], &base));
        assert!(m(&["parent==\"\""], &base));
        assert!(!m(&["labels.l"], &base));
        assert!(!m(&["bogus"], &base), "unknown fields are absent");
        assert!(m(&["bogus!=x"], &base));
    }

    #[test]
    fn bad_filters_name_the_problem() {
        for (f, want) in [
            ("kind=active", "unsupported operator"),
            ("kind==", "unexpected end"),
            ("kind active", "expected an operator"),
            ("name==\"open", "not terminated"),
            ("name==a b", "unexpected input"),
            ("labels./x/==1", "invalid quote"),
            ("name==/x/", "invalid quote"),
            ("name==\"\\q\"", "illegal escape"),
            (",", "expected field"),
            ("name==x,", "expected field"),
        ] {
            let e = FilterSet::parse(&[f.to_string()]).unwrap_err();
            assert!(e.to_string().contains(want), "{f}: {e}");
            assert_eq!(e.filter, f);
        }
    }

    #[test]
    fn bad_regexp_matches_nothing() {
        let a = info("a", "", Kind::View, &[]);
        assert!(!m(&["name~=\"(\""], &a));
    }
}
