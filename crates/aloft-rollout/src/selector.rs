//! Targeting: a small boolean language over a device's attributes.
//!
//! # Grammar
//!
//! ```text
//! selector   := <empty> | or
//! or         := and ( "or" and )*
//! and        := unary ( "and" unary )*
//! unary      := "not" unary | "(" or ")" | comparison
//! comparison := field op value
//!             | field [ "not" ] "in" "(" value ( "," value )* ")"
//!             | "version" "in" version ".." version      (half-open: lo <= v < hi)
//!             | "version" "in" version "..=" version     (closed:    lo <= v <= hi)
//! field      := "product" | "hardware" | "version" | "region" | "tz" | "tag" | "test" | "id"
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">="     (ordering only for version)
//! value      := word | "quoted string"                  (\" and \\ escape inside quotes)
//! word       := one or more of  A-Z a-z 0-9 . _ : / + - *
//! ```
//!
//! - Keywords (`and`, `or`, `not`, `in`) and field names are case-insensitive;
//!   values are compared exactly (case-sensitive). Quote a value that is a
//!   keyword or holds other characters: `region = "not"`, `tag = "a b"`.
//! - `not` binds tightest, then `and`, then `or`; parentheses group.
//! - `version` values are `MAJOR.MINOR.PATCH` and compare numerically
//!   (`1.10.0 > 1.9.0`); the device's installed firmware version is used.
//! - `tag = x` holds when the device has tag `x`; `tag != x` when it has not;
//!   `tag in (a, b)` when it has any of them.
//! - `test` takes `true` or `false` (the test-device flag).
//! - `tz` is the device's IANA time zone name, `id` its device id.
//! - The empty selector (or only whitespace) selects every device.
//!
//! Example: `product = "sensor" and region in (eu, us) and version < 1.1.0 and not tag = lab`.
//!
//! Errors carry the byte position, what was expected and what was found.

use core::fmt;

use aloft_protocol::{DeviceId, Version};

use crate::ParseError;

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Deepest nesting of `not` and parentheses accepted.
pub const MAX_DEPTH: usize = 64;

/// What a rollout knows about a device when it decides: its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    /// The device id.
    pub id: DeviceId,
    /// Product name, e.g. `sensor`.
    pub product: String,
    /// Hardware revision, e.g. `rev-b`.
    pub hardware: String,
    /// Installed (running) firmware version.
    pub version: Version,
    /// Region label, e.g. `eu`.
    pub region: String,
    /// IANA time zone name, e.g. `Europe/Berlin` (may be empty: see [`crate::window`]).
    pub time_zone: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Whether this is a test device.
    pub test: bool,
}

/// A parsed selector; [`Selector::matches`] evaluates it against a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    source: String,
    expr: Expr,
}

impl Selector {
    /// The selector that matches every device (the empty selector).
    pub fn all() -> Self {
        Self {
            source: String::new(),
            expr: Expr::All,
        }
    }

    /// Parses `text` by the grammar in the module docs.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_SELECTOR_LEN {
            return Err(ParseError {
                position: MAX_SELECTOR_LEN,
                expected: format!("at most {MAX_SELECTOR_LEN} bytes"),
                found: format!("{} bytes", text.len()),
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            end: text.len(),
        };
        let expr = if p.peek().is_none() {
            Expr::All
        } else {
            p.or()?
        };
        if let Some(t) = p.peek() {
            return Err(p.err_at(t.pos, "`and`, `or` or end of input", &t.kind.describe()));
        }
        Ok(Self {
            source: text.trim().to_string(),
            expr,
        })
    }

    /// Whether `device` is selected.
    pub fn matches(&self, device: &DeviceView) -> bool {
        self.expr.eval(device)
    }

    /// The selector's text (trimmed), as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Conditions every selected device meets, in the forms a database can
    /// answer from an index (equality on a text attribute, a tag, the test
    /// flag): the top-level `and` terms of those forms. A device that
    /// fails one is never selected; one that meets all may still not be
    /// ([`Selector::matches`] decides), so a store may use them to narrow
    /// what it reads, never to replace the match.
    pub fn indexable_terms(&self) -> Vec<Term> {
        let mut out = Vec::new();
        self.expr.collect_terms(&mut out);
        out
    }
}

/// An attribute a device store can index (see [`Selector::indexable_terms`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexedField {
    /// The product name.
    Product,
    /// The hardware revision.
    Hardware,
    /// The region label.
    Region,
    /// The IANA time zone name.
    Tz,
    /// One of the device's tags.
    Tag,
    /// The device id.
    Id,
}

/// A condition every device a selector selects meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// The field equals one of these values (for [`IndexedField::Tag`]:
    /// the device has one of these tags).
    AnyOf(IndexedField, Vec<String>),
    /// The test-device flag has this value.
    Test(bool),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl core::str::FromStr for Selector {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

// ---- AST and evaluation ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Product,
    Hardware,
    Version,
    Region,
    Tz,
    Tag,
    Test,
    Id,
}

impl Field {
    fn indexed(self) -> Option<IndexedField> {
        Some(match self {
            Self::Product => IndexedField::Product,
            Self::Hardware => IndexedField::Hardware,
            Self::Region => IndexedField::Region,
            Self::Tz => IndexedField::Tz,
            Self::Tag => IndexedField::Tag,
            Self::Id => IndexedField::Id,
            Self::Version | Self::Test => return None,
        })
    }

    fn from_name(s: &str) -> Option<Self> {
        const NAMES: [(&str, Field); 8] = [
            ("product", Field::Product),
            ("hardware", Field::Hardware),
            ("version", Field::Version),
            ("region", Field::Region),
            ("tz", Field::Tz),
            ("tag", Field::Tag),
            ("test", Field::Test),
            ("id", Field::Id),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, f)| *f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Text(String),
    Version(Version),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    All,
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Field, Op, Value),
    In(Field, Vec<Value>),
    Range {
        lo: Version,
        hi: Version,
        inclusive: bool,
    },
}

impl Expr {
    /// See [`Selector::indexable_terms`]: only through `and`, never under
    /// `or` or `not`.
    fn collect_terms(&self, out: &mut Vec<Term>) {
        let texts = |values: &[Value]| -> Option<Vec<String>> {
            values
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect()
        };
        match self {
            Self::And(a, b) => {
                a.collect_terms(out);
                b.collect_terms(out);
            }
            Self::Cmp(Field::Test, Op::Eq, Value::Bool(b)) => out.push(Term::Test(*b)),
            Self::Cmp(field, Op::Eq, value) => {
                if let (Some(f), Some(v)) = (field.indexed(), texts(core::slice::from_ref(value))) {
                    out.push(Term::AnyOf(f, v));
                }
            }
            Self::In(field, values) => {
                if let (Some(f), Some(v)) = (field.indexed(), texts(values)) {
                    out.push(Term::AnyOf(f, v));
                }
            }
            _ => {}
        }
    }

    fn eval(&self, d: &DeviceView) -> bool {
        match self {
            Self::All => true,
            Self::And(a, b) => a.eval(d) && b.eval(d),
            Self::Or(a, b) => a.eval(d) || b.eval(d),
            Self::Not(a) => !a.eval(d),
            Self::Cmp(field, op, value) => {
                let eq = equals(*field, value, d);
                match (op, value) {
                    (Op::Eq, _) => eq,
                    (Op::Ne, _) => !eq,
                    (op, Value::Version(v)) => match op {
                        Op::Lt => d.version < *v,
                        Op::Le => d.version <= *v,
                        Op::Gt => d.version > *v,
                        Op::Ge => d.version >= *v,
                        Op::Eq | Op::Ne => unreachable!("handled above"),
                    },
                    // The parser only builds ordering comparisons on versions.
                    _ => false,
                }
            }
            Self::In(field, values) => values.iter().any(|v| equals(*field, v, d)),
            Self::Range { lo, hi, inclusive } => {
                d.version >= *lo
                    && if *inclusive {
                        d.version <= *hi
                    } else {
                        d.version < *hi
                    }
            }
        }
    }
}

fn equals(field: Field, value: &Value, d: &DeviceView) -> bool {
    match (field, value) {
        (Field::Version, Value::Version(v)) => d.version == *v,
        (Field::Test, Value::Bool(b)) => d.test == *b,
        (Field::Tag, Value::Text(t)) => d.tags.iter().any(|x| x == t),
        (Field::Product, Value::Text(t)) => d.product == *t,
        (Field::Hardware, Value::Text(t)) => d.hardware == *t,
        (Field::Region, Value::Text(t)) => d.region == *t,
        (Field::Tz, Value::Text(t)) => d.time_zone == *t,
        (Field::Id, Value::Text(t)) => d.id.as_str() == t,
        _ => false,
    }
}

// ---- lexer ----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Word(String),
    Str(String),
    Op(Op),
    LParen,
    RParen,
    Comma,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Self::Word(w) => format!("`{w}`"),
            Self::Str(s) => format!("\"{s}\""),
            Self::Op(op) => format!(
                "`{}`",
                match op {
                    Op::Eq => "=",
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                }
            ),
            Self::LParen => "`(`".into(),
            Self::RParen => "`)`".into(),
            Self::Comma => "`,`".into(),
        }
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self, Self::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

#[derive(Clone, Debug)]
struct Token {
    pos: usize,
    kind: Kind,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'+' | b'-' | b'*')
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Kind::LParen
            }
            b')' => {
                i += 1;
                Kind::RParen
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'=' => {
                i += 1;
                Kind::Op(Op::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Kind::Op(Op::Ne)
            }
            b'<' | b'>' => {
                let with_eq = bytes.get(i + 1) == Some(&b'=');
                i += if with_eq { 2 } else { 1 };
                Kind::Op(match (b, with_eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                })
            }
            b'"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(c) = text[i..].chars().next() else {
                        return Err(ParseError {
                            position: start,
                            expected: "a closing `\"`".into(),
                            found: "end of input".into(),
                        });
                    };
                    i += c.len_utf8();
                    match c {
                        '"' => break,
                        '\\' => match text[i..].chars().next() {
                            Some(e @ ('"' | '\\')) => {
                                s.push(e);
                                i += 1;
                            }
                            other => {
                                return Err(ParseError {
                                    position: i,
                                    expected: "`\"` or `\\` after `\\`".into(),
                                    found: other
                                        .map_or("end of input".into(), |c| format!("`{c}`")),
                                });
                            }
                        },
                        c => s.push(c),
                    }
                }
                Kind::Str(s)
            }
            b if is_word_byte(b) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                // `1.0.0..=2.0.0` is one word: take the `=` of an inclusive range.
                if bytes[start..i].ends_with(b"..") && bytes.get(i) == Some(&b'=') {
                    i += 1;
                    while i < bytes.len() && is_word_byte(bytes[i]) {
                        i += 1;
                    }
                }
                Kind::Word(text[start..i].to_string())
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or('?');
                return Err(ParseError {
                    position: i,
                    expected: "a field, value, operator or parenthesis".into(),
                    found: format!("`{c}`"),
                });
            }
        };
        out.push(Token { pos: start, kind });
    }
    Ok(out)
}

// ---- parser ----

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    end: usize,
}

const FIELDS: &str = "a field (product, hardware, version, region, tz, tag, test, id)";

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err_at(&self, position: usize, expected: &str, found: &str) -> ParseError {
        ParseError {
            position,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// An error at the next token (or the end) saying what was expected.
    fn expected(&self, expected: &str) -> ParseError {
        match self.peek() {
            Some(t) => self.err_at(t.pos, expected, &t.kind.describe()),
            None => self.err_at(self.end, expected, "end of input"),
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| t.kind.is_keyword(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.expected(&format!("at most {MAX_DEPTH} levels of nesting")));
        }
        self.depth += 1;
        let out = if self.keyword("not") {
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else if self.peek().is_some_and(|t| t.kind == Kind::LParen) {
            self.pos += 1;
            let e = self.or()?;
            match self.peek() {
                Some(t) if t.kind == Kind::RParen => {
                    self.pos += 1;
                    Ok(e)
                }
                _ => Err(self.expected("`)`, `and` or `or`")),
            }
        } else {
            self.comparison()
        };
        self.depth -= 1;
        out
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let field = match self.peek() {
            Some(Token {
                kind: Kind::Word(w),
                ..
            }) => match Field::from_name(w) {
                Some(f) => f,
                None => return Err(self.expected(FIELDS)),
            },
            _ => return Err(self.expected(FIELDS)),
        };
        self.pos += 1;
        if let Some(Token {
            kind: Kind::Op(op),
            pos,
        }) = self.peek().cloned()
        {
            if field != Field::Version && !matches!(op, Op::Eq | Op::Ne) {
                return Err(self.err_at(
                    pos,
                    "`=` or `!=` (ordering applies only to version)",
                    &Kind::Op(op).describe(),
                ));
            }
            self.pos += 1;
            let value = self.value(field)?;
            return Ok(Expr::Cmp(field, op, value));
        }
        let negated = self.keyword("not");
        if !self.keyword("in") {
            let what = if negated {
                "`in`"
            } else {
                "an operator (=, !=, <, <=, >, >=) or `in`"
            };
            return Err(self.expected(what));
        }
        let set = if self.peek().is_some_and(|t| t.kind == Kind::LParen) {
            self.pos += 1;
            let mut values = vec![self.value(field)?];
            loop {
                match self.next() {
                    Some(Token {
                        kind: Kind::Comma, ..
                    }) => values.push(self.value(field)?),
                    Some(Token {
                        kind: Kind::RParen, ..
                    }) => break,
                    _ => {
                        self.pos -= 1;
                        return Err(self.expected("`,` or `)`"));
                    }
                }
            }
            Expr::In(field, values)
        } else if field == Field::Version {
            self.range()?
        } else {
            return Err(self.expected("`(` starting a list of values"));
        };
        Ok(if negated {
            Expr::Not(Box::new(set))
        } else {
            set
        })
    }

    fn range(&mut self) -> Result<Expr, ParseError> {
        const WHAT: &str = "`(` or a version range such as 1.0.0..2.0.0";
        let Some(Token {
            kind: Kind::Word(w),
            pos,
        }) = self.peek().cloned()
        else {
            return Err(self.expected(WHAT));
        };
        let (lo, hi, inclusive) = match w.split_once("..=") {
            Some((lo, hi)) => (lo, hi, true),
            None => match w.split_once("..") {
                Some((lo, hi)) => (lo, hi, false),
                None => return Err(self.expected(WHAT)),
            },
        };
        let parse = |s: &str, at: usize| {
            Version::parse(s)
                .map_err(|_| self.err_at(at, "a version MAJOR.MINOR.PATCH", &format!("`{s}`")))
        };
        let lo = parse(lo, pos)?;
        let hi = parse(hi, pos + w.len() - hi.len())?;
        self.pos += 1;
        Ok(Expr::Range { lo, hi, inclusive })
    }

    fn value(&mut self, field: Field) -> Result<Value, ParseError> {
        let (text, pos, quoted) = match self.peek() {
            Some(Token {
                kind: Kind::Word(w),
                pos,
            }) if !["and", "or", "not", "in"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                (w.clone(), *pos, false)
            }
            Some(Token {
                kind: Kind::Str(s),
                pos,
            }) => (s.clone(), *pos, true),
            _ => return Err(self.expected("a value (a word or a \"quoted string\")")),
        };
        let found = if quoted {
            format!("\"{text}\"")
        } else {
            format!("`{text}`")
        };
        let value = match field {
            Field::Version => Value::Version(
                Version::parse(&text)
                    .map_err(|_| self.err_at(pos, "a version MAJOR.MINOR.PATCH", &found))?,
            ),
            Field::Test => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(self.err_at(pos, "`true` or `false`", &found)),
            },
            _ => Value::Text(text),
        };
        self.pos += 1;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexable_terms_are_the_top_level_and_equalities_only() {
        let terms = |s: &str| Selector::parse(s).unwrap().indexable_terms();
        use IndexedField::*;
        assert_eq!(
            terms("product = sensor and region in (eu, us) and tag = lab and test = true"),
            [
                Term::AnyOf(Product, vec!["sensor".into()]),
                Term::AnyOf(Region, vec!["eu".into(), "us".into()]),
                Term::AnyOf(Tag, vec!["lab".into()]),
                Term::Test(true),
            ]
        );
        assert_eq!(
            terms("(id = d-1 and tz = UTC) and version < 2.0.0"),
            [
                Term::AnyOf(Id, vec!["d-1".into()]),
                Term::AnyOf(Tz, vec!["UTC".into()])
            ]
        );
        // Under `or` or `not`, inequalities and versions narrow nothing.
        for s in [
            "",
            "product = a or product = b",
            "not region = eu",
            "region != eu",
            "tag not in (lab)",
            "version = 1.0.0",
            "version in 1.0.0..2.0.0",
        ] {
            assert!(terms(s).is_empty(), "{s}: {:?}", terms(s));
        }
    }

    /// Every device a selector matches meets each of its indexable terms
    /// (the property a store relies on when it narrows by them).
    #[test]
    fn a_matched_device_meets_every_indexable_term() {
        let selectors = [
            "product = sensor and region in (eu, us)",
            "tag in (field, lab) and hardware = rev-b and test = false",
            "id = dev-001 and (region = eu or region = us)",
            "tz = Europe/Berlin and not tag = lab",
        ];
        let meets = |t: &Term, d: &DeviceView| match t {
            Term::Test(b) => d.test == *b,
            Term::AnyOf(f, vs) => vs.iter().any(|v| match f {
                IndexedField::Product => d.product == *v,
                IndexedField::Hardware => d.hardware == *v,
                IndexedField::Region => d.region == *v,
                IndexedField::Tz => d.time_zone == *v,
                IndexedField::Tag => d.tags.contains(v),
                IndexedField::Id => d.id.as_str() == v,
            }),
        };
        for s in selectors {
            let sel = Selector::parse(s).unwrap();
            assert!(sel.matches(&dev()), "{s} should match the fixture");
            assert!(!sel.indexable_terms().is_empty(), "{s}");
            for t in sel.indexable_terms() {
                assert!(meets(&t, &dev()), "{s}: {t:?}");
            }
        }
    }

    fn dev() -> DeviceView {
        DeviceView {
            id: DeviceId::new("dev-001").unwrap(),
            product: "sensor".into(),
            hardware: "rev-b".into(),
            version: Version::new(1, 0, 3),
            region: "eu".into(),
            time_zone: "Europe/Berlin".into(),
            tags: vec!["field".into(), "batch 7".into()],
            test: false,
        }
    }

    fn m(s: &str) -> bool {
        Selector::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .matches(&dev())
    }

    #[test]
    fn example_from_the_docs() {
        let s =
            r#"product = "sensor" and region in (eu, us) and version < 1.1.0 and not tag = lab"#;
        assert!(m(s));
        let mut d = dev();
        d.tags.push("lab".into());
        assert!(!Selector::parse(s).unwrap().matches(&d));
        d.tags.pop();
        d.region = "apac".into();
        assert!(!Selector::parse(s).unwrap().matches(&d));
        d.region = "us".into();
        d.version = Version::new(1, 1, 0);
        assert!(!Selector::parse(s).unwrap().matches(&d));
    }

    #[test]
    fn empty_selects_all() {
        assert!(m(""));
        assert!(m("   "));
        assert_eq!(Selector::parse(" ").unwrap(), Selector::all());
    }

    #[test]
    fn every_field_and_operator() {
        assert!(m("product = sensor"));
        assert!(!m("product != sensor"));
        assert!(m("hardware = rev-b"));
        assert!(m("region = eu"));
        assert!(m("tz = Europe/Berlin"));
        assert!(!m("tz = America/New_York"));
        assert!(m("id = dev-001"));
        assert!(m("test = false"));
        assert!(!m("test = true"));
        assert!(m("tag = field"));
        assert!(m("tag = \"batch 7\""));
        assert!(!m("tag = batch"));
        assert!(m("tag != lab"));
        assert!(!m("tag != field"));
        assert!(m("tag in (lab, field)"));
        assert!(!m("tag not in (lab, field)"));
        assert!(m("version = 1.0.3"));
        assert!(m("version != 1.0.4"));
        assert!(m("version < 1.0.4") && !m("version < 1.0.3"));
        assert!(m("version <= 1.0.3") && !m("version <= 1.0.2"));
        assert!(m("version > 1.0.2") && !m("version > 1.0.3"));
        assert!(m("version >= 1.0.3") && !m("version >= 1.0.4"));
        assert!(m("version > 0.10.0")); // numeric, not lexicographic
        assert!(m("version in (1.0.3, 2.0.0)"));
        assert!(m("version in 1.0.0..1.0.4"));
        assert!(!m("version in 1.0.0..1.0.3")); // half-open
        assert!(m("version in 1.0.0..=1.0.3")); // closed
        assert!(!m("version not in 1.0.0..=1.0.3"));
        assert!(m("region not in (us, apac)"));
    }

    #[test]
    fn precedence_and_grouping() {
        // and binds tighter than or
        assert!(m("region = us and product = x or product = sensor"));
        assert!(!m("region = us and (product = x or product = sensor)"));
        // not binds tightest
        assert!(!m("not region = eu or product = x"));
        assert!(m("not (region = us or product = x)"));
        assert!(m("NOT Region = us AND PRODUCT = sensor"));
    }

    #[test]
    fn quoted_values_and_escapes() {
        let mut d = dev();
        d.region = "say \"hi\" \\ and".into();
        assert!(
            Selector::parse(r#"region = "say \"hi\" \\ and""#)
                .unwrap()
                .matches(&d)
        );
        d.region = "not".into();
        assert!(Selector::parse(r#"region = "not""#).unwrap().matches(&d));
    }

    fn err(s: &str) -> ParseError {
        Selector::parse(s).expect_err(s)
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = err("product = ");
        assert_eq!((e.position, e.found.as_str()), (10, "end of input"));
        assert!(e.expected.contains("a value"), "{e}");

        let e = err("colour = red");
        assert_eq!(e.position, 0);
        assert!(e.expected.contains("a field"), "{e}");
        assert_eq!(e.found, "`colour`");

        let e = err("region < eu");
        assert_eq!(e.position, 7);
        assert!(
            e.expected.contains("ordering applies only to version"),
            "{e}"
        );

        let e = err("version < 1.1");
        assert_eq!(e.position, 10);
        assert!(e.expected.contains("MAJOR.MINOR.PATCH"), "{e}");

        let e = err("test = yes");
        assert!(e.expected.contains("`true` or `false`"), "{e}");

        let e = err("(region = eu");
        assert_eq!((e.position, e.found.as_str()), (12, "end of input"));
        assert!(e.expected.contains("`)`"), "{e}");

        let e = err("region in (eu us)");
        assert_eq!(e.position, 14);
        assert!(e.expected.contains("`,` or `)`"), "{e}");

        let e = err("region = eu product = x");
        assert_eq!(e.position, 12);
        assert!(e.expected.contains("`and`, `or`"), "{e}");

        let e = err("region = \"eu");
        assert!(e.expected.contains("closing"), "{e}");

        let e = err("region = eu & product = x");
        assert_eq!((e.position, e.found.as_str()), (12, "`&`"));

        let e = err("region eu");
        assert!(e.expected.contains("operator"), "{e}");

        let e = err("region in eu");
        assert!(e.expected.contains("`(`"), "{e}");

        let e = err("version in 1.0.0..x");
        assert!(e.expected.contains("MAJOR.MINOR.PATCH"), "{e}");

        let e = err("region = and");
        assert!(e.expected.contains("a value"), "{e}");

        let e = err(&"not ".repeat(MAX_DEPTH + 1));
        assert!(e.expected.contains("nesting"), "{e}");

        assert!(Selector::parse(&"x".repeat(MAX_SELECTOR_LEN + 1)).is_err());
        assert!(err("region =").to_string().contains("position 8"));
    }

    #[test]
    fn display_round_trips() {
        let s = Selector::parse("  region = eu and tag = lab ").unwrap();
        assert_eq!(s.to_string(), "region = eu and tag = lab");
        assert_eq!(s.to_string().parse::<Selector>().unwrap(), s);
    }
}
