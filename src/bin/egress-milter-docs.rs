//! Writes the documents made from the code, so that each fact has one
//! source: `milter.schema.json` and the configuration reference (the book's
//! page and `milter.yaml(5)`) from the doc comments of the configuration's
//! types; `egress-milter(8)` and a page per command from the command
//! line's definitions; the shipped `milter.yaml` from its template
//! (`packaging/milter.yaml.in`), the keys' doc comments put in at its marks. With `--check` it writes nothing and exits 1 when a shipped copy
//! differs (the test suite runs it so); run it without to bring them up to
//! date.
//!
//!     cargo run --bin egress-milter-docs [-- --check] [--root DIR]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let root = args
        .iter()
        .position(|a| a == "--root")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut documents = vec![
        (
            "milter.schema.json".to_string(),
            egress_milter::config::schema(),
        ),
        (
            "docs/src/configuration.md".to_string(),
            egress_milter::manual::reference_markdown(),
        ),
        (
            "packaging/man/milter.yaml.5".to_string(),
            egress_milter::manual::milter_yaml_5(),
        ),
    ];
    let template = "packaging/milter.yaml.in";
    let made = std::fs::read_to_string(root.join(template))
        .map_err(|e| format!("{template}: {e}"))
        .and_then(|t| egress_milter::manual::milter_yaml(template, &t));
    match made {
        Ok(text) => documents.push(("milter.yaml".to_string(), text)),
        Err(e) => {
            eprintln!("egress-milter-docs: {e}");
            return ExitCode::FAILURE;
        }
    }
    for (name, text) in egress_milter::manual::pages() {
        documents.push((format!("packaging/man/{name}"), text));
    }
    let mut stale = Vec::new();
    // A page of a command that is gone.
    if let Ok(dir) = std::fs::read_dir(root.join("packaging/man")) {
        for entry in dir.flatten() {
            let path = format!("packaging/man/{}", entry.file_name().to_string_lossy());
            if path.ends_with(".8") && !documents.iter().any(|(p, _)| *p == path) {
                if check {
                    stale.push(path);
                } else if std::fs::remove_file(entry.path()).is_ok() {
                    println!("removed {path}");
                }
            }
        }
    }
    for (path, text) in documents {
        let path = path.as_str();
        let file = root.join(path);
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        if current == text {
            continue;
        }
        if check {
            stale.push(path.to_string());
            continue;
        }
        if let Some(dir) = file.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("egress-milter-docs: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&file, text) {
            eprintln!("egress-milter-docs: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {path}");
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "stale, made from the code: {}; run `cargo run --bin egress-milter-docs`",
            stale.join(", ")
        );
        ExitCode::FAILURE
    }
}
