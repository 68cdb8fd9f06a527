//! The address-list parser on every odd spelling of a header.

use super::*;

fn one(v: &str) -> Result<String, ParseError> {
    match parse_address_list(v.as_bytes())?.as_slice() {
        [Entry::Mailbox(a)] => Ok(a.to_string()),
        other => panic!("{v:?}: expected one mailbox, got {other:?}"),
    }
}

/// The table of odd forms: each must yield exactly the address in the
/// angle brackets or the addr-spec, never anything from the display text.
#[test]
fn single_mailboxes() {
    let cases = [
        ("alice@example.com", "alice@example.com"),
        ("Alice <alice@example.com>", "alice@example.com"),
        (
            "\"admin@example.com\" <evil@attacker.com>",
            "evil@attacker.com",
        ),
        ("evil@attacker.com <admin@example.com>", "admin@example.com"),
        (
            "(comment) alice(c2)@(c3)example.com (c4)",
            "alice@example.com",
        ),
        (
            "=?utf-8?q?admin=40example.com?= <evil@attacker.com>",
            "evil@attacker.com",
        ),
        ("Alice\r\n <alice@example.com>", "alice@example.com"),
        (
            "\"Al\\\"ice <x@evil.com>\" <alice@example.com>",
            "alice@example.com",
        ),
        (
            "\"alice@example.com\"@evil.com",
            "\"alice@example.com\"@evil.com",
        ),
        ("J\u{fc}rgen <j@example.com>", "j@example.com"),
        (
            "<@relay.evil.com,@r2.evil.com:alice@example.com>",
            "alice@example.com",
        ),
        ("x@[192.0.2.1]", "x@[192.0.2.1]"),
        ("John Q. Public <jqp@EXAMPLE.com.>", "jqp@example.com"),
        ("john . doe @ example . com", "john.doe@example.com"),
        (
            "(a (nested \\) comment)) bob@example.com",
            "bob@example.com",
        ),
        ("<alice@b\u{fc}cher.example>", "alice@xn--bcher-kva.example"),
        ("Alice <alice@example.com>,", "alice@example.com"),
    ];
    for (input, want) in cases {
        assert_eq!(one(input).as_deref(), Ok(want), "{input:?}");
    }
}

/// Raw 8-bit text as broken applications send it (Latin-1, not UTF-8):
/// harmless in a display name or quoted string, refused in the address.
#[test]
fn eight_bit_bytes() {
    let one = |v: &[u8]| match parse_address_list(v) {
        Ok(list) => match list.as_slice() {
            [Entry::Mailbox(a)] => Ok(a.to_string()),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e),
    };
    assert_eq!(
        one(b"J\xfcrgen <j@example.com>").as_deref(),
        Ok("j@example.com")
    );
    assert_eq!(
        one(b"\"Ren\xe9e\" <r@example.com>").as_deref(),
        Ok("r@example.com")
    );
    assert_eq!(
        one(b"(caf\xe9) r@example.com").as_deref(),
        Ok("r@example.com")
    );
    assert_eq!(one(b"Ren\xe9e@example.com"), Err(ParseError::Encoding));
    assert_eq!(
        one("r\u{e9}n\u{e9}e@exampl\u{e9}.com".as_bytes()).as_deref(),
        Ok("r\u{e9}n\u{e9}e@xn--exampl-gva.com")
    );
}

#[test]
fn lists_and_groups() {
    let list = parse_address_list(b"a@example.com, B <b@evil.com>").unwrap();
    assert_eq!(list.len(), 2);
    let g = parse_address_list(b"undisclosed-recipients:;").unwrap();
    assert_eq!(g, vec![Entry::Group(vec![])]);
    let g = parse_address_list(b"team: a@example.com, b@example.com;").unwrap();
    assert!(matches!(&g[..], [Entry::Group(m)] if m.len() == 2));
    // "Smith, John <j@example.com>": the first element has no address.
    assert_eq!(
        parse_address_list(b"Smith, John <j@example.com>"),
        Err(ParseError::NoDomain)
    );
    assert_eq!(parse_address_list(b"").unwrap(), vec![]);
}

#[test]
fn malformed() {
    let bad = [
        ("<alice@example.com> evil@attacker.com", "trailing text"),
        ("alice@example.com evil", "trailing word"),
        ("alice@example.com@evil.com", "two @"),
        ("alice@example.com <evil@attacker.com", "unclosed angle"),
        ("Alice <>", "empty angle"),
        ("alice", "no domain"),
        ("@example.com", "no local part"),
        ("(unterminated alice@example.com", "comment"),
        ("\"unterminated alice@example.com", "quote"),
        ("alice@[1.2.3.4", "literal"),
        ("alice@exa\u{1}mple.com", "control"),
        ("alice@\"example.com\"", "quoted domain"),
        ("alice@example..com", "empty label"),
        ("grp: a@example.com", "unterminated group"),
    ];
    for (input, why) in bad {
        let r = parse_address_list(input.as_bytes());
        assert!(
            !matches!(r.as_deref(), Ok([Entry::Mailbox(_)])),
            "{why}: {input:?} gave {r:?}"
        );
    }
    let deep = format!("{}x{} a@example.com", "(".repeat(100), ")".repeat(100));
    assert_eq!(
        parse_address_list(deep.as_bytes()),
        Err(ParseError::CommentTooDeep)
    );
    assert_eq!(
        parse_address_list(b"a@b\xff.com"),
        Err(ParseError::Domain(DomainError::Idna))
    );
}

/// Whatever the bytes, the parser returns; it never panics nor loops.
/// Inputs are drawn (deterministically) from the characters that steer
/// the grammar.
#[test]
fn never_panics_on_generated_input() {
    const ALPHABET: &[u8] = b"<>()[]\":;@,.\\ a\r\n\t\x80\xc3\xbc=?";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut input = Vec::new();
    for _ in 0..200_000 {
        input.clear();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 59) as usize + 1;
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            input.push(ALPHABET[(seed >> 33) as usize % ALPHABET.len()]);
        }
        let _ = parse_address_list(&input);
    }
}
