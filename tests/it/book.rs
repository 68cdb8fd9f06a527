//! The manual (`docs/`, the README, ARCHITECTURE.md) as a reader meets it:
//! every link leads to a page and a heading that exist, every page is in
//! the book's table of contents, every configuration snippet loads (a
//! fragment merged into a minimal base), and every `egress-milter` command
//! line shown parses as the command line defines it.

use clap::Parser;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown file of the manual, with its text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for name in ["README.md", "ARCHITECTURE.md"] {
        let p = root().join(name);
        out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
    }
    for entry in std::fs::read_dir(root().join("docs/src")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// A heading's anchor, as mdBook (and GitHub) make it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
            }
            !fenced
        })
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// `[label](target)` links, outside code.
fn links(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut fenced = false;
    let mut out = Vec::new();
    for l in text.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || l.starts_with("    ") {
            continue;
        }
        out.extend(re.captures_iter(l).map(|c| c[1].to_string()));
    }
    out
}

#[test]
fn every_link_leads_somewhere() {
    let mut checked = 0;
    for (page, text) in pages() {
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, frag) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            // The built book is installed alone: a page links only to
            // pages (the README and ARCHITECTURE.md may link anywhere).
            if page.starts_with(root().join("docs/src")) {
                assert!(
                    !file.contains("..") && !file.starts_with('/'),
                    "{}: link to {link} leaves the book (it is installed alone; name the installed path)",
                    page.display()
                );
            }
            assert!(
                target.exists(),
                "{}: link to {link}: no {}",
                page.display(),
                target.display()
            );
            if let Some(frag) = frag {
                let there = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&there).iter().any(|a| a == frag),
                    "{}: link to {link}: no heading #{frag} there",
                    page.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
}

#[test]
fn every_page_is_in_the_table_of_contents() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    let listed = links(&summary);
    for (page, _) in pages() {
        let Some(name) = page
            .strip_prefix(root().join("docs/src"))
            .ok()
            .and_then(|p| p.to_str())
        else {
            continue;
        };
        if name == "SUMMARY.md" {
            continue;
        }
        assert!(
            listed.iter().any(|l| l == name),
            "{name} is not in SUMMARY.md"
        );
    }
    for l in &listed {
        assert!(root().join("docs/src").join(l).exists(), "SUMMARY.md: {l}");
    }
}

/// Code blocks: (line, info string, text); indented blocks have the info
/// string "indented".
fn blocks(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let start = i + 1;
            let mut j = start;
            while j < lines.len() && !lines[j].starts_with("```") {
                j += 1;
            }
            out.push((
                start,
                info.to_string(),
                lines[start..j.min(lines.len())].join("\n"),
            ));
            i = j + 1;
            continue;
        }
        if lines[i].starts_with("    ") && (i == 0 || lines[i - 1].trim().is_empty()) {
            let start = i;
            let mut j = i;
            while j < lines.len()
                && (lines[j].starts_with("    ")
                    || (lines[j].trim().is_empty()
                        && lines.get(j + 1).is_some_and(|n| n.starts_with("    "))))
            {
                j += 1;
            }
            let body: Vec<&str> = lines[start..j]
                .iter()
                .map(|l| l.get(4..).unwrap_or(""))
                .collect();
            out.push((start + 1, "indented".into(), body.join("\n")));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// A configuration snippet: its first line is a top-level key.
fn is_config(info: &str, body: &str) -> bool {
    if info.contains("cases") {
        return false;
    }
    let first = body
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("");
    let key = regex::Regex::new(r"^[a-z_]+:( |$)").unwrap();
    (info.starts_with("yaml") || info == "indented") && key.is_match(first)
}

/// Every configuration snippet of the book, merged into a minimal file,
/// loads as the daemon reads it, and conforms to `milter.schema.json` by
/// python3-jsonschema (draft 2020-12).
#[test]
fn every_configuration_snippet_loads() {
    let base = "listen: inet:127.0.0.1:7357\nlocal_domains: [example.com]\n";
    let named = regex::Regex::new(r"/etc/egress-milter/[\w./-]+").unwrap();
    let mut loaded = 0;
    // Each merged snippet as JSON, for the schema's validator below.
    let merged = tempfile::tempdir().unwrap();
    for (page, text) in pages() {
        for (line, info, body) in blocks(&text) {
            if !is_config(&info, &body) {
                continue;
            }
            let fragment: serde_json::Value = serde_saphyr::from_str(&body)
                .unwrap_or_else(|e| panic!("{}:{line}: not YAML: {e}", page.display()));
            let mut doc: serde_json::Value = serde_saphyr::from_str(base).unwrap();
            if let (Some(d), Some(f)) = (doc.as_object_mut(), fragment.as_object()) {
                for (k, v) in f {
                    d.insert(k.clone(), v.clone());
                }
            }
            // The files it names, made in a directory of the test: a key
            // for a DKIM key file, a certificate for a CA file, a TSIG key,
            // an empty list, a secret for the others.
            let dir = tempfile::tempdir().unwrap();
            let mut yaml = serde_saphyr::to_string(&doc).unwrap();
            for path in named
                .find_iter(&yaml.clone())
                .map(|m| m.as_str().to_string())
            {
                let here = dir
                    .path()
                    .join(path.trim_start_matches("/etc/egress-milter/"));
                std::fs::create_dir_all(here.parent().unwrap()).unwrap();
                let content = if path.contains("/dkim/") {
                    egress_milter::dkim::generate("ed25519", 0).unwrap().0
                } else if path.ends_with("ca.pem") {
                    let certs = tempfile::tempdir().unwrap();
                    crate::common::tls::make_certs(certs.path());
                    std::fs::read_to_string(certs.path().join("ca.pem")).unwrap()
                } else if path.ends_with(".users") {
                    format!(
                        "alice:{}:admin\n",
                        egress_milter::users::hash("alice-password").unwrap()
                    )
                } else if path.ends_with(".secret") {
                    // 32 random bytes, base64 (openssl rand -base64 32).
                    "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n".into()
                } else if path.ends_with("tsig.key") {
                    crate::common::bind::Bind::key_text()
                } else if path.ends_with("dqs.key") {
                    // A Spamhaus DQS key: letters and digits.
                    "k3y9abc0123456789xyz\n".into()
                } else if path.ends_with(".txt") {
                    // A list file, empty.
                    String::new()
                } else {
                    "s3cret-password-0123456789\n".into()
                };
                std::fs::write(&here, content).unwrap();
                yaml = yaml.replace(&path, &here.display().to_string());
            }
            if let Err(e) = egress_milter::config::Config::parse(Path::new("snippet.yaml"), &yaml) {
                panic!(
                    "{}:{line}: the snippet does not load:\n{e}\n{body}",
                    page.display()
                );
            }
            loaded += 1;
            let name = format!(
                "{}-{line}.json",
                page.file_stem().unwrap().to_string_lossy()
            );
            std::fs::write(merged.path().join(name), doc.to_string()).unwrap();
        }
    }
    assert!(loaded >= 10, "{loaded}");
    // And milter.schema.json, by a standard validator, accepts each.
    let out = crate::common::cli::output(
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import json, os, sys, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 v = jsonschema.Draft202012Validator(schema)\n\
                 n = 0\n\
                 for f in sorted(os.listdir(sys.argv[2])):\n\
                 \x20   n += 1\n\
                 \x20   for e in v.iter_errors(json.load(open(os.path.join(sys.argv[2], f)))):\n\
                 \x20       print(f, e.json_path, e.message)\n\
                 print('validated', n)\n",
            )
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("milter.schema.json"))
            .arg(merged.path()),
    );
    assert!(out.ok(), "python3-jsonschema: {}", out.text());
    assert_eq!(
        out.stdout,
        format!("validated {loaded}\n"),
        "{}",
        out.text()
    );
}

/// A cases file shown (` ```yaml cases `) loads as `egress-milter test`
/// reads one.
#[test]
fn every_cases_snippet_loads() {
    let mut loaded = 0;
    for (page, text) in pages() {
        for (line, info, body) in blocks(&text) {
            if !info.starts_with("yaml cases") {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("cases.yaml");
            std::fs::write(&file, &body).unwrap();
            if let Err(e) = egress_milter::cases::load(&file) {
                panic!("{}:{line}: {e}\n{body}", page.display());
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 1, "{loaded}");
}

#[test]
fn every_command_line_shown_parses() {
    let mut parsed = 0;
    for (page, text) in pages() {
        for (line, _, body) in blocks(&text) {
            // Lines joined at a trailing backslash.
            let joined = body.replace("\\\n", " ");
            for l in joined.lines() {
                let l = l.trim().trim_start_matches("$ ");
                if !l.starts_with("egress-milter ") {
                    continue;
                }
                // A trailing comment, and what a shell would do after.
                let l = l.split("  #").next().unwrap_or(l);
                let l = l.split(" > ").next().unwrap_or(l);
                let words =
                    shlex::split(l).unwrap_or_else(|| panic!("{}:{line}: {l}", page.display()));
                if let Err(e) = egress_milter::cli::Cli::try_parse_from(&words) {
                    panic!("{}:{line}: {l}\n{e}", page.display());
                }
                parsed += 1;
            }
        }
    }
    assert!(parsed >= 10, "{parsed}");
}
