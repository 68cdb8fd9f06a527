//! The commands behind `egress-milter`'s subcommands, each answering in
//! one exit-code rule ([`Exit`]): 0 done (or everything passed), 1 the
//! command ran and something failed (a case, a check, a refused message,
//! the daemon's answer), 2 it could not run as asked (usage, an invalid
//! or unreadable configuration or input file).

use crate::config::{AdminSettings, Config};
use std::path::{Path, PathBuf};

pub use crate::cli::Exit;

/// Loads a configuration, printing every error.
fn load(path: &Path) -> Result<Config, Exit> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        Exit::Usage
    })
}

/// A single-threaded runtime for the commands that talk to the network once.
fn small_runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("egress-milter: cannot start the runtime: {e}");
            Exit::Failed
        })
}

/// `run`: the daemon, in the foreground.
pub fn run(path: &Path) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    crate::log::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: cannot start the runtime: {e}");
            return Exit::Failed;
        }
    };
    match runtime.block_on(crate::server::serve(config)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            // Once: the log goes to stderr too.
            tracing::error!("egress-milter not started: {e}");
            Exit::Failed
        }
    }
}

/// `check-config`: "ok" and the warnings, or every error; as `user` (with
/// its groups) when given, as the daemon will read the files.
pub fn check_config(path: &Path, user: Option<&str>) -> Exit {
    if let Some(user) = user {
        if let Err(e) = become_user(user) {
            eprintln!("egress-milter: --user {user}: {e}");
            return Exit::Usage;
        }
    }
    match load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("ok");
            Exit::Ok
        }
        Err(e) => e,
    }
}

/// Drops to a user and its groups (for `check-config --user`).
fn become_user(name: &str) -> Result<(), String> {
    use nix::unistd::{initgroups, setgid, setuid, User};
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up the user: {e}"))?
        .ok_or("no such user")?;
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    initgroups(&cname, user.gid).map_err(|e| format!("cannot take its groups (not root?): {e}"))?;
    setgid(user.gid).map_err(|e| format!("cannot take its group: {e}"))?;
    setuid(user.uid).map_err(|e| format!("cannot become it: {e}"))?;
    Ok(())
}

/// `selfcheck`: the table; failed when a row fails.
pub fn selfcheck(path: &Path) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    match runtime.block_on(crate::selfcheck::run(&config)) {
        Ok(rows) => {
            print!("{}", crate::selfcheck::render(&rows));
            Exit::passed(
                !rows
                    .iter()
                    .any(|r| r.status == crate::selfcheck::Status::Fail),
            )
        }
        Err(e) => {
            eprintln!("egress-milter: {e}");
            Exit::Failed
        }
    }
}

/// `explain`: failed when the message would be refused.
pub fn explain(
    path: &Path,
    mut req: crate::explain::Request,
    message: Option<PathBuf>,
    offline: bool,
) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Some(p) = message {
        match std::fs::read(&p) {
            Ok(m) => req.message = Some(m),
            Err(e) => {
                eprintln!("egress-milter: cannot read {}: {e}", p.display());
                return Exit::Usage;
            }
        }
    }
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    let report = runtime.block_on(crate::explain::explain(config, &req, offline));
    print!("{}", crate::explain::render(&req, &report));
    Exit::passed(report.accepted())
}

/// Recipients as given: repeated `--rcpt` or comma-separated.
pub fn rcpt_list(rcpts: &[String]) -> Vec<String> {
    rcpts
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| r.trim().trim_matches(['<', '>']).to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// `test`: failed when a case fails; with `generate`, a starter file.
pub fn test(path: &Path, cases: Option<&Path>, generate: bool, offline: bool) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    if generate {
        print!(
            "{}",
            runtime.block_on(crate::cases::generate::generate(&config))
        );
        return Exit::Ok;
    }
    let Some(cases) = cases else {
        eprintln!("egress-milter: a cases file is needed (or --generate)");
        return Exit::Usage;
    };
    let file = match crate::cases::load(cases) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage;
        }
    };
    let base = cases.parent().unwrap_or(Path::new("."));
    match runtime.block_on(crate::cases::run(config, &file, base, offline)) {
        Ok(results) => {
            print!("{}", crate::cases::render(&results));
            Exit::passed(results.iter().all(|r| r.diff.is_empty()))
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Usage
        }
    }
}

/// `dkim-keygen`: writes the private key (mode 0600, never over an
/// existing file) and prints the TXT record to publish.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: usize,
    out: Option<PathBuf>,
) -> Exit {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let domain = match crate::address::Domain::parse(domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("egress-milter: invalid domain: {e}");
            return Exit::Usage;
        }
    };
    let (pem, record) = match crate::dkim::generate(algorithm, bits) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Usage;
        }
    };
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    // create_new: an existing key is never overwritten; 0600: the key is
    // readable by its owner only (chown it to the daemon's user).
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(pem.as_bytes()));
    if let Err(e) = written {
        eprintln!("egress-milter: cannot write {}: {e}", path.display());
        return Exit::Failed;
    }
    eprintln!("private key written to {}", path.display());
    eprintln!("publish this TXT record, then add the key to dkim.keys:");
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        crate::dkim::txt_strings(&record)
    );
    Exit::Ok
}

/// `limits`, `incidents`, `cache`, `senders`: one request to the running
/// daemon's admin endpoint; its answer printed.
pub fn admin(path: &Path, request: crate::admin::Request) -> Exit {
    let settings = match AdminSettings::load(path) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return Exit::Usage;
        }
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    match runtime.block_on(crate::admin::request(&settings, request)) {
        Ok(crate::admin::Answer::Ok(text)) => {
            print!("{text}");
            Exit::Ok
        }
        Ok(crate::admin::Answer::Error(e)) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
        Err(e) => {
            eprintln!(
                "egress-milter: cannot reach the daemon at {}: {e}",
                crate::admin::describe(&settings)
            );
            Exit::Failed
        }
    }
}

/// `probe`: the options as given on the command line.
pub fn probe(
    path: &Path,
    mut opts: crate::probe::Options,
    timeout: &str,
    password_file: Option<PathBuf>,
) -> Exit {
    let Some(timeout) = crate::config::parse_duration(timeout) else {
        eprintln!("egress-milter: --timeout {timeout}: expected a duration such as 30s");
        return Exit::Usage;
    };
    opts.timeout = timeout;
    if let Some(p) = password_file {
        match std::fs::read_to_string(&p) {
            Ok(s) => opts.password = Some(s.lines().next().unwrap_or_default().to_string()),
            Err(e) => {
                eprintln!("egress-milter: cannot read {}: {e}", p.display());
                return Exit::Usage;
            }
        }
    }
    match crate::probe::command(path, &opts) {
        0 => Exit::Ok,
        1 => Exit::Failed,
        _ => Exit::Usage,
    }
}

/// `console-user add NAME --role ROLE [--file F]`: the password from
/// standard input (asked twice, unechoed, on a terminal).
pub fn console_user_add(config: &Path, file: Option<&Path>, name: &str, role: &str) -> Exit {
    use crate::users::{self, Role};
    use std::io::IsTerminal;
    let Some(role) = Role::parse(role) else {
        eprintln!("egress-milter: --role must be admin or viewer");
        return Exit::Usage;
    };
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => match crate::config::console_users_file(config) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("egress-milter: {e}");
                return Exit::Usage;
            }
        },
    };
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "));
        let again = rpassword::prompt_password("the same again: ");
        match (first, again) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("egress-milter: the two passwords differ");
                return Exit::Usage;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("egress-milter: cannot read the password: {e}");
                return Exit::Usage;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("egress-milter: cannot read the password from standard input: {e}");
            return Exit::Usage;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    match users::add(&path, name, role, &password) {
        Ok(new) => {
            println!(
                "{} {name} ({}) in {}",
                if new { "added" } else { "changed" },
                role.as_str(),
                path.display()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("egress-milter: {e}");
            Exit::Usage
        }
    }
}

/// `queue-helper`: one console request on held mail, from standard input
/// to standard output, done as this process may (root, under
/// egress-milter-queue.socket).
pub fn queue_helper(path: &Path) -> Exit {
    use crate::console::queue::{self, Reply, Request};
    use std::io::{BufRead, Read, Write};
    let answer = |reply: Reply| {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &reply);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    };
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => {
            answer(Reply::Error(format!(
                "the queue helper cannot read {}",
                path.display()
            )));
            return e;
        }
    };
    let Some(mut settings) = config.console.clone() else {
        answer(Reply::Error(format!(
            "{}: no console section",
            path.display()
        )));
        return Exit::Usage;
    };
    // Done here, as this process: never handed on again.
    settings.queue_socket = None;
    settings.sudo = false;
    let mut line = String::new();
    let read = std::io::stdin().lock().take(64 * 1024).read_line(&mut line);
    let request = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(line.trim()).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            answer(Reply::Error(format!("not a queue request: {e}")));
            return Exit::Usage;
        }
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    let reply = runtime.block_on(queue::answer(&settings, request));
    let failed = matches!(reply, Reply::Error(_));
    answer(reply);
    if failed {
        Exit::Failed
    } else {
        Exit::Ok
    }
}
