//! The shipped `milter.yaml`, made from a template (`packaging/milter.yaml.in`)
//! that holds the example's values and its own remarks, and marks each place
//! a key's documentation goes with a line `#: KEY` (`#: classes[].clients`).
//! The mark becomes that key's doc comment, as the reference has it, wrapped
//! as YAML comments at the mark's indentation: the file documents its keys
//! without a second copy of their text.

use super::{keys, Key};

/// Comment lines end by this column.
const WIDTH: usize = 78;

/// The example made from `template` (named `name` in errors): every mark
/// replaced; an error for a mark that names no key.
pub fn milter_yaml(name: &str, template: &str) -> Result<String, String> {
    let keys = keys();
    let mut out = String::with_capacity(template.len() * 2);
    for (n, line) in template.lines().enumerate() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let Some(path) = line.trim_start().strip_prefix("#: ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let path = path.trim();
        let key = keys
            .iter()
            .find(|k| k.path == path)
            .ok_or_else(|| format!("{name}:{}: #: {path}: no such key", n + 1))?;
        for comment in comment_lines(key, WIDTH.saturating_sub(indent.len() + 2).max(30)) {
            out.push_str(indent);
            out.push('#');
            if !comment.is_empty() {
                out.push(' ');
                out.push_str(&comment);
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// A key's description as lines of at most `width` characters,
/// paragraphs apart; a restart key says so. A `code span` is never broken
/// (a longer one stands alone on its line).
fn comment_lines(key: &Key, width: usize) -> Vec<String> {
    let mut text = key.description.clone();
    if key.restart {
        text.push_str(" Changing it needs a restart.");
    }
    let mut lines = Vec::new();
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in unbroken(paragraph) {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// The words of a paragraph, a code span with spaces as one word.
fn unbroken(paragraph: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for word in paragraph.split_whitespace() {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
        if word.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_becomes_the_keys_documentation_at_its_indentation() {
        let made = milter_yaml("t", "a: 1\n  #: listen\n  listen: x\n").unwrap();
        let listen = keys().into_iter().find(|k| k.path == "listen").unwrap();
        let first_word = listen.description.split_whitespace().next().unwrap();
        assert!(made.starts_with("a: 1\n  # "), "{made}");
        assert!(made.contains(first_word), "{made}");
        assert!(made.contains("needs a restart"), "{made}");
        assert!(made.ends_with("\n  listen: x\n"), "{made}");
        for l in made.lines() {
            assert!(l.len() <= WIDTH || l.contains('`'), "{l}");
        }
        assert_eq!(
            unbroken("a `{ source: NAME }` b `c` d"),
            ["a", "`{ source: NAME }`", "b", "`c`", "d"]
        );
        // The made file reads as the template's YAML.
        crate::config::Config::parse(
            std::path::Path::new("t.yaml"),
            &milter_yaml("t", "#: listen\nlisten: inet:127.0.0.1:1\n#: local_domains\nlocal_domains: [example.com]\n").unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn a_mark_of_no_key_is_an_error_with_its_line() {
        let e = milter_yaml("t.in", "a: 1\n#: no_such.key\n").unwrap_err();
        assert_eq!(e, "t.in:2: #: no_such.key: no such key");
    }
}
