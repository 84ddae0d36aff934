//! The multicast-registry filter language, over an identity's metadata (string values).
//!
//! ```text
//! filter     := or                      (an empty filter matches everything)
//! or         := and ( "or" and )*
//! and        := unary ( "and" unary )*
//! unary      := "not" unary | primary
//! primary    := "(" or ")"
//!             | "exists" "(" field ")"
//!             | field "in" "(" value ( "," value )* ")"
//!             | field ( "=" | "==" | "!=" | "^=" ) value  ^= is "starts with"; == is =
//!             | field ( "<" | "<=" | ">" | ">=" ) number
//! field      := letter or '_', then letters, digits, '_', '-', '.'
//! value      := "double" or 'single' quoted, with \", \' and \\ escapes
//!             | number | bare word (letters, digits, '_', '-', '.')
//! ```
//!
//! Keywords are case-insensitive. A comparison on a field the identity does not have is
//! false (so `not (tier = "gold")` matches identities without a tier). Numeric comparisons
//! parse the field's value as a number and are false when it is not one.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All,
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    StartsWith(String, String),
    In(String, Vec<String>),
    Compare(String, Comparison, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// Where parsing stopped and what would have been valid there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 0-based character position in the filter.
    pub position: usize,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: expected {}, found {}", self.position, self.expected, self.found)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Symbol(&'static str),
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(word) => format!("'{word}'"),
            Token::Quoted(text) => format!("\"{text}\""),
            Token::Symbol(symbol) => format!("'{symbol}'"),
            Token::End => "the end of the filter".into(),
        }
    }

    fn keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(word) if word.eq_ignore_ascii_case(keyword))
    }
}

const SYMBOLS: [&str; 12] = ["==", "!=", "^=", "<=", ">=", "=", "<", ">", "(", ")", ",", "!"];

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        if c == '"' || c == '\'' {
            let quote = c;
            let mut text = String::new();
            at += 1;
            loop {
                match chars.get(at) {
                    None => {
                        return Err(ParseError {
                            position: start,
                            expected: format!("a closing '{quote}'"),
                            found: "the end of the filter".into(),
                        })
                    }
                    Some(end) if *end == quote => break,
                    Some('\\') => match chars.get(at + 1) {
                        Some(escaped @ ('"' | '\'' | '\\')) => {
                            text.push(*escaped);
                            at += 2;
                        }
                        other => {
                            return Err(ParseError {
                                position: at,
                                expected: "\\\", \\' or \\\\ after a backslash".into(),
                                found: other.map_or("the end of the filter".into(), |c| format!("'\\{c}'")),
                            })
                        }
                    },
                    Some(other) => {
                        text.push(*other);
                        at += 1;
                    }
                }
            }
            at += 1;
            tokens.push((start, Token::Quoted(text)));
            continue;
        }
        if word_char(c) {
            while at < chars.len() && word_char(chars[at]) {
                at += 1;
            }
            tokens.push((start, Token::Word(chars[start..at].iter().collect())));
            continue;
        }
        let rest: String = chars[at..chars.len().min(at + 2)].iter().collect();
        match SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            Some(symbol) => {
                at += symbol.chars().count();
                tokens.push((start, Token::Symbol(symbol)));
            }
            None => {
                return Err(ParseError {
                    position: start,
                    expected: "a field, a value, an operator or a parenthesis".into(),
                    found: format!("'{c}'"),
                })
            }
        }
    }
    tokens.push((chars.len(), Token::End));
    Ok(tokens)
}

/// Longest filter accepted, in bytes, and most comparisons in one filter: evaluation and
/// the tree are recursive, so their size is bounded up front.
pub const MAX_FILTER_BYTES: usize = 4096;
pub const MAX_TERMS: usize = 256;

/// Parses a filter; an empty (or all-blank) filter matches everything.
pub fn parse(input: &str) -> Result<Filter, ParseError> {
    if input.len() > MAX_FILTER_BYTES {
        return Err(ParseError {
            position: input
                .chars()
                .take_while({
                    let mut bytes = 0;
                    move |c| {
                        bytes += c.len_utf8();
                        bytes <= MAX_FILTER_BYTES
                    }
                })
                .count(),
            expected: format!("a filter of at most {MAX_FILTER_BYTES} bytes"),
            found: format!("{} bytes", input.len()),
        });
    }
    let tokens = tokenize(input)?;
    if tokens.len() == 1 {
        return Ok(Filter::All);
    }
    let mut parser = Parser { tokens, at: 0, depth: 0, terms: 0 };
    let filter = parser.or()?;
    parser.expect_end()?;
    Ok(filter)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    depth: usize,
    terms: usize,
}

/// Deeper nesting is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at].1
    }

    fn position(&self) -> usize {
        self.tokens[self.at].0
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].1.clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn error(&self, expected: &str) -> ParseError {
        ParseError { position: self.position(), expected: expected.into(), found: self.peek().describe() }
    }

    fn expect_symbol(&mut self, symbol: &'static str) -> Result<(), ParseError> {
        if *self.peek() == Token::Symbol(symbol) {
            self.next();
            Ok(())
        } else {
            Err(self.error(&format!("'{symbol}'")))
        }
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        if *self.peek() == Token::End {
            Ok(())
        } else {
            Err(self.error("'and', 'or' or the end of the filter"))
        }
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while self.peek().keyword("or") {
            self.next();
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.unary()?;
        while self.peek().keyword("and") {
            self.next();
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("at most {MAX_DEPTH} levels of 'not' and parentheses")));
        }
        let result = if self.peek().keyword("not") || *self.peek() == Token::Symbol("!") {
            self.next();
            self.unary().map(|inner| Filter::Not(Box::new(inner)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn field(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Token::Word(word)
                if word.starts_with(|c: char| c.is_alphabetic() || c == '_')
                    && !["and", "or", "not", "in", "exists"].iter().any(|k| word.eq_ignore_ascii_case(k)) =>
            {
                let word = word.clone();
                self.next();
                Ok(word)
            }
            _ => Err(self.error("a metadata field name")),
        }
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Token::Quoted(text) => {
                let text = text.clone();
                self.next();
                Ok(text)
            }
            Token::Word(word) => {
                let word = word.clone();
                self.next();
                Ok(word)
            }
            _ => Err(self.error("a value (a \"quoted string\", a number or a word)")),
        }
    }

    fn primary(&mut self) -> Result<Filter, ParseError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(&format!("at most {MAX_TERMS} comparisons in one filter")));
        }
        if *self.peek() == Token::Symbol("(") {
            self.next();
            let inner = self.or()?;
            self.expect_symbol(")")?;
            return Ok(inner);
        }
        if self.peek().keyword("exists") {
            self.next();
            self.expect_symbol("(")?;
            let field = self.field()?;
            self.expect_symbol(")")?;
            return Ok(Filter::Exists(field));
        }
        let field = self.field()?;
        if self.peek().keyword("in") {
            self.next();
            self.expect_symbol("(")?;
            let mut values = vec![self.value()?];
            while *self.peek() == Token::Symbol(",") {
                self.next();
                values.push(self.value()?);
            }
            self.expect_symbol(")")?;
            return Ok(Filter::In(field, values));
        }
        let operator = match self.peek() {
            Token::Symbol("==") => "=",
            Token::Symbol(symbol @ ("=" | "!=" | "^=" | "<" | "<=" | ">" | ">=")) => *symbol,
            _ => return Err(self.error("an operator (=, ==, !=, ^=, <, <=, >, >=, in) after the field")),
        };
        self.next();
        let ordering = match operator {
            "<" => Some(Comparison::Less),
            "<=" => Some(Comparison::LessOrEqual),
            ">" => Some(Comparison::Greater),
            ">=" => Some(Comparison::GreaterOrEqual),
            _ => None,
        };
        if let Some(ordering) = ordering {
            let position = self.position();
            let found = self.peek().describe();
            let value = self.value()?;
            let number = value.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or(ParseError {
                position,
                expected: format!("a number after '{operator}'"),
                found,
            })?;
            return Ok(Filter::Compare(field, ordering, number));
        }
        let value = self.value()?;
        Ok(match operator {
            "=" => Filter::Equals(field, value),
            "!=" => Filter::NotEquals(field, value),
            _ => Filter::StartsWith(field, value),
        })
    }
}

impl Filter {
    pub fn matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::All => true,
            Filter::Or(left, right) => left.matches(metadata) || right.matches(metadata),
            Filter::And(left, right) => left.matches(metadata) && right.matches(metadata),
            Filter::Not(inner) => !inner.matches(metadata),
            Filter::Exists(field) => metadata.contains_key(field),
            Filter::Equals(field, value) => metadata.get(field) == Some(value),
            Filter::NotEquals(field, value) => metadata.get(field).is_some_and(|v| v != value),
            Filter::StartsWith(field, prefix) => {
                metadata.get(field).is_some_and(|v| v.starts_with(prefix.as_str()))
            }
            Filter::In(field, values) => metadata.get(field).is_some_and(|v| values.contains(v)),
            Filter::Compare(field, ordering, number) => {
                let Some(value) = metadata.get(field).and_then(|v| v.trim().parse::<f64>().ok()) else {
                    return false;
                };
                match ordering {
                    Comparison::Less => value < *number,
                    Comparison::LessOrEqual => value <= *number,
                    Comparison::Greater => value > *number,
                    Comparison::GreaterOrEqual => value >= *number,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_table_of_filters_and_what_they_match() {
        let gold_eu =
            metadata(&[("tier", "gold"), ("region", "eu-west"), ("age", "42"), ("name", "a \"b\"")]);
        let silver_us = metadata(&[("tier", "silver"), ("region", "us-east"), ("age", "17")]);
        let bare = metadata(&[]);
        let cases: &[(&str, [bool; 3])] = &[
            ("", [true, true, true]),
            ("tier = gold", [true, false, false]),
            ("tier = \"gold\"", [true, false, false]),
            ("tier != gold", [false, true, false]),
            ("not tier = gold", [false, true, true]),
            ("!(tier = gold)", [false, true, true]),
            ("tier in (gold, silver)", [true, true, false]),
            ("tier IN (\"bronze\")", [false, false, false]),
            ("region ^= eu", [true, false, false]),
            ("age > 18", [true, false, false]),
            ("age >= 17 and age < 42", [false, true, false]),
            ("age <= 42", [true, true, false]),
            ("age > -1.5e3", [true, true, false]),
            ("exists(age)", [true, true, false]),
            ("not exists(age)", [false, false, true]),
            ("tier = gold or region ^= us", [true, true, false]),
            ("tier = gold and region ^= us or age < 18", [false, true, false]),
            ("tier = gold and (region ^= us or age > 18)", [true, false, false]),
            ("((tier = silver))", [false, true, false]),
            ("name = \"a \\\"b\\\"\"", [true, false, false]),
            ("tier == 'gold'", [true, false, false]),
            ("name = 'a \"b\"'", [true, false, false]),
            ("tier in ('gold', \"silver\")", [true, true, false]),
            ("tier > 3", [false, false, false]),
        ];
        for (filter, expected) in cases {
            let parsed = parse(filter).unwrap_or_else(|e| panic!("{filter:?} did not parse: {e}"));
            let got = [parsed.matches(&gold_eu), parsed.matches(&silver_us), parsed.matches(&bare)];
            assert_eq!(&got, expected, "{filter:?}");
        }
    }

    #[test]
    fn parse_errors_say_where_and_what_was_expected() {
        let cases: &[(&str, usize, &str)] = &[
            ("tier =", 6, "a value"),
            ("tier gold", 5, "an operator"),
            ("= gold", 0, "a metadata field name"),
            ("(tier = gold", 12, "')'"),
            ("tier = gold)", 11, "'and', 'or' or the end"),
            ("age > old", 6, "a number after '>'"),
            ("tier in gold", 8, "'('"),
            ("tier in (gold,)", 14, "a value"),
            ("exists tier", 7, "'('"),
            ("tier = \"gold", 7, "a closing '\"'"),
            ("tier = gold and", 15, "a metadata field name"),
            ("tier # gold", 5, "a field, a value"),
            ("and = 1", 0, "a metadata field name"),
        ];
        for (filter, position, expected) in cases {
            let error = parse(filter).expect_err(filter);
            assert_eq!(error.position, *position, "{filter:?}: {error}");
            assert!(error.expected.starts_with(expected), "{filter:?}: {error}");
        }
    }

    #[test]
    fn no_input_crashes_the_parser() {
        let pieces = [
            "tier", "=", "!=", "^=", "<", "<=", ">", ">=", "(", ")", ",", "in", "and", "or", "not", "!",
            "exists", "\"x\"", "\"", "\\", "42", "-1", "é", " ", "#", "\u{0}", "((((", "))))",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let length = (next() % 12) as usize;
            let filter: String =
                (0..length).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
            if let Ok(parsed) = parse(&filter) {
                parsed.matches(&metadata(&[("tier", "1")]));
            }
        }
        let deep = "not ".repeat(10_000) + "tier = 1";
        assert!(parse(&deep).is_err(), "deep nesting is refused, not a stack overflow");
        let deep = "(".repeat(10_000) + "tier = 1" + &")".repeat(10_000);
        assert!(parse(&deep).is_err());
        let long = "a = 1 and ".repeat(300_000) + "a = 1";
        assert!(parse(&long).unwrap_err().expected.contains("at most 4096 bytes"));
        let wide = "a=1 and ".repeat(300) + "a=1";
        assert!(wide.len() < MAX_FILTER_BYTES);
        assert!(parse(&wide).unwrap_err().expected.contains("at most 256 comparisons"));
    }
}
