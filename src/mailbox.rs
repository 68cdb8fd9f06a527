//! A strict parser for RFC 5322 address lists, as found in the From: header.
//!
//! The From: decision must be taken on the address a receiving MUA and a
//! DMARC verifier will see, so this parser follows RFC 5322 §3.4 (with the
//! obsolete forms of §4.4 that real software still emits) and refuses what it
//! cannot read unambiguously instead of guessing. The lenient MIME parsers
//! return a best effort for display; for example they turn
//! `alice(c)@(c)example.com` into an empty address and
//! `"a@example.com"@evil.com` into a split at the wrong `@`, which is why they
//! are not used here.
//!
//! Handled: display names (atoms, quoted strings, encoded words, which are
//! never decoded since the decision ignores display text), comments (nested,
//! with quoted pairs), folding, groups, obsolete routes in angle brackets,
//! address literals and 8-bit (RFC 6532 UTF-8) text.
//!
//! One tolerance: an unquoted `@` in a display name (`a@example.com
//! <a@example.com>`), which many applications emit; the address inside the
//! angle brackets is the one that counts, exactly as receivers read it.

use crate::address::{Address, AddressDomain, Domain, DomainError};

/// One element of an address list.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Entry {
    Mailbox(Address),
    /// RFC 5322 §3.4 group (`name: a@b, c@d;`); From: may not hold one.
    Group(Vec<Address>),
}

#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("unterminated comment")]
    UnterminatedComment,
    #[error("comments nested deeper than {MAX_COMMENT_DEPTH}")]
    CommentTooDeep,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unterminated address literal")]
    UnterminatedLiteral,
    #[error("control character 0x{0:02x}")]
    ControlCharacter(u8),
    #[error("unexpected '{0}'")]
    Unexpected(char),
    #[error("unexpected \"{0}\"")]
    UnexpectedWord(String),
    #[error("unexpected end of header")]
    UnexpectedEnd,
    #[error("mailbox has no address")]
    NoAddress,
    #[error("address has no @domain")]
    NoDomain,
    #[error("address has an empty local part")]
    EmptyLocal,
    #[error("invalid domain: {0}")]
    Domain(#[from] DomainError),
    #[error("text is not valid UTF-8")]
    Encoding,
}

/// Bounds the nesting of comments: RFC 5322 sets no limit, a real header
/// never nests more than a couple of levels, and a bound keeps the work per
/// byte constant.
const MAX_COMMENT_DEPTH: usize = 64;

#[derive(Clone, Debug, Eq, PartialEq)]
enum Token {
    /// atext run, 8-bit bytes included (RFC 6532 §3.2).
    Atom(Vec<u8>),
    /// A quoted string, with its quotes, quoted pairs kept as written.
    Quoted(Vec<u8>),
    /// The inside of `[...]`.
    Literal(Vec<u8>),
    Special(u8),
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn is_space(b: u8) -> bool {
    // Folding (RFC 5322 §3.2.2) leaves CRLF + WSP in the value; a CR or LF
    // counts as white space here.
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn tokenize(input: &[u8]) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            _ if is_space(b) => i += 1,
            b'(' => i = skip_comment(input, i)?,
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match input.get(i) {
                        None => return Err(ParseError::UnterminatedQuote),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(&c) if is_control(c) => return Err(ParseError::ControlCharacter(c)),
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                tokens.push(Token::Quoted(input[start..i].to_vec()));
            }
            b'[' => {
                let start = i + 1;
                i += 1;
                loop {
                    match input.get(i) {
                        None => return Err(ParseError::UnterminatedLiteral),
                        Some(b'\\') => i += 2,
                        Some(b']') => break,
                        Some(b'[') => return Err(ParseError::Unexpected('[')),
                        Some(&c) if is_control(c) => return Err(ParseError::ControlCharacter(c)),
                        Some(_) => i += 1,
                    }
                }
                let inner: Vec<u8> = input[start..i]
                    .iter()
                    .copied()
                    .filter(|&c| !is_space(c))
                    .collect();
                tokens.push(Token::Literal(inner));
                i += 1;
            }
            b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.' => {
                tokens.push(Token::Special(b));
                i += 1;
            }
            b')' | b']' | b'\\' => return Err(ParseError::Unexpected(b as char)),
            _ if is_atext(b) => {
                let start = i;
                while i < input.len() && is_atext(input[i]) {
                    i += 1;
                }
                tokens.push(Token::Atom(input[start..i].to_vec()));
            }
            _ => return Err(ParseError::ControlCharacter(b)),
        }
    }
    Ok(tokens)
}

fn is_control(b: u8) -> bool {
    (b < 0x20 && !is_space(b)) || b == 0x7f
}

/// Skips a comment starting at `input[start] == '('`; returns the index after
/// its closing parenthesis.
fn skip_comment(input: &[u8], start: usize) -> Result<usize, ParseError> {
    let mut depth = 0usize;
    let mut i = start;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 1,
            b'(' => {
                depth += 1;
                if depth > MAX_COMMENT_DEPTH {
                    return Err(ParseError::CommentTooDeep);
                }
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            c if is_control(c) => return Err(ParseError::ControlCharacter(c)),
            _ => {}
        }
        i += 1;
    }
    Err(ParseError::UnterminatedComment)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn rest(&self) -> &[Token] {
        self.tokens.get(self.pos..).unwrap_or_default()
    }

    fn at_special(&self, c: u8) -> bool {
        self.peek() == Some(&Token::Special(c))
    }

    fn expect_special(&mut self, c: u8) -> Result<(), ParseError> {
        match self.next() {
            Some(Token::Special(s)) if s == c => Ok(()),
            Some(t) => Err(unexpected(&t)),
            None => Err(ParseError::UnexpectedEnd),
        }
    }

    /// The first of `<`, `:`, `,`, `;` or the end, from the current position:
    /// it tells a name-addr, a group and a bare addr-spec apart.
    fn lookahead_kind(&self) -> Option<u8> {
        self.rest().iter().find_map(|t| match t {
            Token::Special(c @ (b'<' | b':' | b',' | b';')) => Some(*c),
            _ => None,
        })
    }

    fn address_list(&mut self) -> Result<Vec<Entry>, ParseError> {
        let mut entries = Vec::new();
        while self.peek().is_some() {
            // RFC 5322 §4.4 obs-mbox-list: empty elements between commas.
            if self.at_special(b',') {
                self.pos += 1;
                continue;
            }
            entries.push(self.address()?);
            match self.next() {
                None | Some(Token::Special(b',')) => {}
                Some(t) => return Err(unexpected(&t)),
            }
        }
        Ok(entries)
    }

    fn address(&mut self) -> Result<Entry, ParseError> {
        if self.lookahead_kind() == Some(b':') {
            self.phrase_until(b':')?;
            self.pos += 1;
            let mut members = Vec::new();
            loop {
                match self.peek() {
                    None => return Err(ParseError::UnexpectedEnd),
                    Some(Token::Special(b';')) => {
                        self.pos += 1;
                        break;
                    }
                    Some(Token::Special(b',')) => self.pos += 1,
                    Some(_) => members.push(self.mailbox()?),
                }
            }
            return Ok(Entry::Group(members));
        }
        self.mailbox().map(Entry::Mailbox)
    }

    fn mailbox(&mut self) -> Result<Address, ParseError> {
        if matches!(self.lookahead_kind(), Some(b'<')) && self.angle_before_separator() {
            self.phrase_until(b'<')?;
            self.pos += 1;
            if self.at_special(b'>') {
                return Err(ParseError::NoAddress);
            }
            // RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec.
            if self.at_special(b'@') {
                while !self.at_special(b':') {
                    if self.next().is_none() {
                        return Err(ParseError::UnexpectedEnd);
                    }
                }
                self.pos += 1;
            }
            let address = self.addr_spec()?;
            self.expect_special(b'>')?;
            return Ok(address);
        }
        self.addr_spec()
    }

    /// True when the next `<` comes before any `,` or `;` (so it opens this
    /// mailbox's angle-addr, not a later one's).
    fn angle_before_separator(&self) -> bool {
        for t in self.rest() {
            match t {
                Token::Special(b'<') => return true,
                Token::Special(b',' | b';') => return false,
                _ => {}
            }
        }
        false
    }

    /// Skips a display name up to (not past) `stop`. Words, dots (obsolete
    /// phrase) and the tolerated unquoted `@` may appear; nothing else.
    fn phrase_until(&mut self, stop: u8) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                None => return Err(ParseError::UnexpectedEnd),
                Some(Token::Special(c)) if *c == stop => return Ok(()),
                Some(Token::Atom(_) | Token::Quoted(_) | Token::Special(b'.' | b'@')) => {
                    self.pos += 1
                }
                Some(t) => return Err(unexpected(t)),
            }
        }
    }

    fn addr_spec(&mut self) -> Result<Address, ParseError> {
        let mut local = Vec::new();
        loop {
            match self.next() {
                Some(Token::Atom(a) | Token::Quoted(a)) => local.extend_from_slice(&a),
                Some(Token::Special(b'@')) if local.is_empty() => {
                    return Err(ParseError::EmptyLocal)
                }
                Some(t) => return Err(unexpected(&t)),
                None if local.is_empty() => return Err(ParseError::NoAddress),
                None => return Err(ParseError::NoDomain),
            }
            match self.peek() {
                Some(Token::Special(b'.')) => {
                    local.push(b'.');
                    self.pos += 1;
                }
                Some(Token::Special(b'@')) => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(ParseError::NoDomain),
            }
        }
        let local = String::from_utf8(local).map_err(|_| ParseError::Encoding)?;
        let domain = match self.next() {
            Some(Token::Literal(l)) => {
                AddressDomain::Literal(String::from_utf8(l).map_err(|_| ParseError::Encoding)?)
            }
            Some(Token::Atom(first)) => {
                let mut name = first;
                while self.at_special(b'.') {
                    self.pos += 1;
                    match self.next() {
                        Some(Token::Atom(a)) => {
                            name.push(b'.');
                            name.extend_from_slice(&a);
                        }
                        // A trailing dot ends the domain (`example.com.`).
                        Some(Token::Special(b'>' | b',' | b';')) => {
                            self.pos -= 1;
                            break;
                        }
                        None => break,
                        Some(t) => return Err(unexpected(&t)),
                    }
                }
                AddressDomain::Name(Domain::parse_bytes(&name)?)
            }
            Some(t) => return Err(unexpected(&t)),
            None => return Err(ParseError::NoDomain),
        };
        Ok(Address::new(&local, domain))
    }
}

fn unexpected(t: &Token) -> ParseError {
    match t {
        Token::Special(c) => ParseError::Unexpected(*c as char),
        Token::Quoted(_) => ParseError::Unexpected('"'),
        Token::Literal(_) => ParseError::Unexpected('['),
        Token::Atom(a) => {
            ParseError::UnexpectedWord(String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned())
        }
    }
}

/// Parses the value of an address-list header (From:, Sender:, To:...).
pub fn parse_address_list(value: &[u8]) -> Result<Vec<Entry>, ParseError> {
    let tokens = tokenize(value)?;
    Parser { tokens, pos: 0 }.address_list()
}

#[cfg(test)]
mod tests;
