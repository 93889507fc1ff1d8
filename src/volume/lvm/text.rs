//! A recursive-descent parser for LVM2's text metadata ("config") syntax:
//! `name { ... }` sections, `key = value` pairs, values that are strings
//! with backslash escapes, integers, floats or `[ ... ]` arrays, and `#`
//! comments. Nesting depth and the number of values are capped.

use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Deepest nesting of sections and arrays accepted.
pub const MAX_DEPTH: usize = 32;

/// Most values (sections, pairs, array items) in one metadata text.
pub const MAX_NODES: u64 = 200_000;

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number with a fractional part, kept as written.
    Float(String),
    /// A string, escapes resolved.
    Str(String),
    /// `[ a, b, ... ]`.
    Array(Vec<Value>),
    /// `name { ... }`.
    Section(Section),
}

/// The entries of a section (or of the whole file), in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// `(name, value)` pairs; subsections appear with [`Value::Section`].
    pub entries: Vec<(String, Value)>,
}

impl Section {
    /// The first value named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The subsection named `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key) {
            Some(Value::Section(s)) => Some(s),
            _ => None,
        }
    }

    /// The subsections, in order, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    /// The integer named `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// The string named `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The array named `key`.
    pub fn array(&self, key: &str) -> Option<&[Value]> {
        match self.get(key) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }
}

/// Parses a metadata text. Errors are [`Error::Corrupt`] at `base` plus the
/// byte offset of the problem in `text`.
pub fn parse(text: &[u8], base: u64) -> Result<Section> {
    let mut p = Parser {
        t: text,
        pos: 0,
        base,
        nodes: 0,
    };
    let root = p.entries(0)?;
    p.skip_blank();
    if p.pos < p.t.len() {
        return Err(p.err("unexpected '}' at top level"));
    }
    Ok(root)
}

struct Parser<'a> {
    t: &'a [u8],
    pos: usize,
    base: u64,
    nodes: u64,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::corrupt(
            format!("LVM metadata text: {what}"),
            self.base.saturating_add(self.pos as u64),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.t.get(self.pos).copied()
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<()> {
        self.nodes += 1;
        check_limit("LVM metadata values", self.nodes, MAX_NODES)
    }

    /// Entries up to a closing brace (not consumed) or the end of the text.
    fn entries(&mut self, depth: usize) -> Result<Section> {
        if depth > MAX_DEPTH {
            return Err(self.err("sections nest too deeply"));
        }
        let mut s = Section::default();
        loop {
            self.skip_blank();
            match self.peek() {
                None | Some(b'}') => return Ok(s),
                _ => {}
            }
            let name = self.name()?;
            self.count()?;
            self.skip_blank();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let sub = self.entries(depth + 1)?;
                    if self.peek() != Some(b'}') {
                        return Err(self.err(&format!("section {name:?} is not closed")));
                    }
                    self.pos += 1;
                    s.entries.push((name, Value::Section(sub)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    let v = self.value(depth + 1)?;
                    s.entries.push((name, v));
                }
                _ => return Err(self.err(&format!("expected '=' or '{{' after {name:?}"))),
            }
        }
    }

    /// A key or section name: LVM allows letters, digits and `_.+-`.
    fn name(&mut self) -> Result<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(&c))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.t[start..self.pos]).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(self.err("arrays nest too deeply"));
        }
        self.skip_blank();
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    if !items.is_empty() {
                        if self.peek() != Some(b',') {
                            return Err(self.err("expected ',' or ']' in array"));
                        }
                        self.pos += 1;
                    }
                    self.count()?;
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("text ends where a value should be")),
        }
    }

    fn string(&mut self) -> Result<Value> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = open;
                    return Err(self.err("string is not closed"));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err(self.err("string ends in a backslash")),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
            self.pos += 1;
        }
        let s = String::from_utf8_lossy(&self.t[start..self.pos]).into_owned();
        if s.contains('.') {
            if s.parse::<f64>().is_err() {
                self.pos = start;
                return Err(self.err(&format!("bad number {s:?}")));
            }
            return Ok(Value::Float(s));
        }
        match s.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => {
                self.pos = start;
                Err(self.err(&format!("bad integer {s:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_strings_numbers_arrays_and_comments() {
        let t = br#"# comment
vg-1 {
    id = "a\"b\\c"   # trailing
    seqno = 12
    ratio = 1.5
    neg = -3
    status = ["READ", "WRITE"]
    empty = []
    sub { stripes = [ "pv0", 0, "pv1", 16 ] }
}
contents = "Text Format Volume Group"
"#;
        let root = parse(t, 0).unwrap();
        let vg = root.section("vg-1").unwrap();
        assert_eq!(vg.str("id"), Some("a\"b\\c"));
        assert_eq!(vg.int("seqno"), Some(12));
        assert_eq!(vg.int("neg"), Some(-3));
        assert_eq!(vg.get("ratio"), Some(&Value::Float("1.5".into())));
        assert_eq!(vg.array("status").unwrap().len(), 2);
        assert_eq!(vg.array("empty").unwrap().len(), 0);
        assert_eq!(
            vg.section("sub").unwrap().array("stripes").unwrap()[3],
            Value::Int(16)
        );
        assert_eq!(root.str("contents"), Some("Text Format Volume Group"));
    }

    #[test]
    fn malformed_text_is_corrupt_at_its_offset() {
        for (t, at) in [
            (&b"vg { id = \"x"[..], 10u64),
            (b"vg { a = }", 9),
            (b"vg { a = 1 ", 11),
            (b"a = [1 2]", 7),
            (b"}", 0),
            (b"a = 99999999999999999999", 4),
            (b"a b", 2),
        ] {
            match parse(t, 1000) {
                Err(Error::Corrupt { offset, .. }) => {
                    assert_eq!(offset, 1000 + at, "{}", String::from_utf8_lossy(t))
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(t)),
            }
        }
    }

    #[test]
    fn depth_and_size_are_capped() {
        let deep = "a {".repeat(MAX_DEPTH + 2) + &"}".repeat(MAX_DEPTH + 2);
        assert!(matches!(parse(deep.as_bytes(), 0), Err(Error::Corrupt { .. })));
        let deep = "a = ".to_string() + &"[".repeat(MAX_DEPTH + 2);
        assert!(matches!(parse(deep.as_bytes(), 0), Err(Error::Corrupt { .. })));
        let wide = "a = [".to_string() + &"1,".repeat(MAX_NODES as usize) + "1]";
        assert!(matches!(
            parse(wide.as_bytes(), 0),
            Err(Error::LimitExceeded { .. })
        ));
    }
}
