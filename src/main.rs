//! The egress-milter command: arguments, logging set-up, exit codes.

use clap::{Parser, Subcommand};
use egress_milter::config::Config;
use std::{path::PathBuf, process::ExitCode};

/// mimalloc instead of the C library's allocator: every milter stage
/// allocates and frees small buffers, and glibc's malloc spent twice the
/// time on them under load (free-list consolidation, arena locks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "egress-milter",
    version,
    about = "Outbound policy milter for Postfix and Sendmail"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the milter in the foreground.
    Run {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file: prints "ok" or every error; exit 0 or 1.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
        /// Check as this user (with its groups), as the daemon will read the
        /// files: a key or password file it cannot read is named. Needs
        /// root; the package's reload runs the check as the service's user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Run one message through the whole policy and print, check by check,
    /// what matched and why, the final SMTP reply and the header changes;
    /// exit 0 if it would be accepted, 1 if refused, 2 on a configuration
    /// error. It touches no running daemon and no shared state (limits start
    /// full, in process); SPF, existing signatures, rspamd, clamd and
    /// callouts are asked as configured unless --offline.
    Explain(ExplainArgs),
    /// Check what receivers will check (SPF, DKIM keys, DMARC, host name,
    /// reverse DNS, DNS blocklists) and print a table with a fix per
    /// failure; exit 1 if anything fails.
    Selfcheck {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
    /// Generate a DKIM key: writes the private key (mode 0600, never over
    /// an existing file) and prints the DNS TXT record to publish.
    DkimKeygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        /// RSA key size.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the key; default ./<domain>.<selector>.pem.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Look at or reset a key's rate-limit budgets in the running daemon
    /// (through its admin endpoint, `admin.listen`).
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
        #[arg(
            long,
            short,
            default_value = "/etc/egress-milter/milter.yaml",
            global = true
        )]
        config: PathBuf,
    },
    /// List, show, open or close incidents (compromised accounts and
    /// hosts) in the running daemon (through `admin.listen`).
    Incidents {
        #[command(subcommand)]
        action: IncidentsAction,
        #[arg(
            long,
            short,
            default_value = "/etc/egress-milter/milter.yaml",
            global = true
        )]
        config: PathBuf,
    },
    /// Runs a file of policy cases through the daemon's own transaction code,
    /// touching no running daemon and no shared state (SPF, signatures,
    /// rspamd, clamd and callouts asked as configured unless --offline): a line per case, a diff for each failure; exit 0
    /// when every case passes, 1 when one fails, 2 on an error in the
    /// configuration or the cases file. With --generate, writes a starter
    /// cases file derived from the configuration instead.
    Test {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
        /// The cases file (YAML).
        #[arg(required_unless_present = "generate")]
        cases: Option<PathBuf>,
        /// Print a starter cases file for this configuration.
        #[arg(long, conflicts_with = "cases")]
        generate: bool,
        /// Ask nothing of the network: no SPF, existing-signature checks,
        /// rspamd, clamd, callouts or LDAP (lookups then fail, and
        /// on_error decides).
        #[arg(long)]
        offline: bool,
    },
    /// Speaks SMTP to the running gateway down every path (relay tricks,
    /// forged senders, a spoofed From:, a client mimicking an internal
    /// server, with a login the submission paths) and compares each answer
    /// with what the configuration predicts for a client at this address.
    /// A message is only ever sent to --rcpt. Exit 0 when every path
    /// answered as predicted, 1 on a mismatch, 2 on an error.
    Probe {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
        /// The gateway's SMTP service, HOST:PORT.
        #[arg(long)]
        server: String,
        /// The only address a message is sent to (yours).
        #[arg(long)]
        rcpt: String,
        /// Connect from this local address.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// The client address the gateway sees, when NAT is in between.
        #[arg(long)]
        as_client: Option<std::net::IpAddr>,
        #[arg(long, default_value = "probe.invalid")]
        helo: String,
        /// The submission service (HOST:587), for the login's paths.
        #[arg(long)]
        submission: Option<String>,
        #[arg(long, requires = "password_file")]
        login: Option<String>,
        /// A file whose first line is the login's password.
        #[arg(long, requires = "login")]
        password_file: Option<PathBuf>,
        /// The longest wait for one SMTP session.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// The envelope senders and From: addresses a class was seen using
    /// while in monitor mode (learning mode), as a ready
    /// `sender_addresses` list (`--format yaml`) or a file source
    /// (`--format file`), through `admin.listen`.
    Senders {
        #[arg(long)]
        class: String,
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "file"])]
        format: String,
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
    /// Look at or clear the cached answers of sources and callouts in the
    /// running daemon (through `admin.listen`).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        #[arg(
            long,
            short,
            default_value = "/etc/egress-milter/milter.yaml",
            global = true
        )]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// The cached answer for KEY (an address, a domain, a login, an IP)
    /// in every cache, with the time it has left.
    Show { key: String },
    /// Forgets KEY's cached answers, or every cached answer: the next
    /// lookup asks the directory or the mail store again.
    Flush { key: Option<String> },
}

#[derive(Subcommand)]
enum IncidentsAction {
    /// The open incidents, one a line.
    List,
    /// One incident: its figures, the messages held and the command that
    /// releases them. KEY is KIND:KEY (client, user, sender, class), or
    /// the key alone when one open incident has it.
    Show { key: String },
    /// Closes an incident: mail from the key goes through again (held
    /// messages stay held until released).
    Close { key: String },
    /// Opens an incident by hand.
    Open {
        key: String,
        /// How long, e.g. 2h (default: incidents.block_for).
        #[arg(long = "for")]
        duration: Option<String>,
        /// hold, tempfail, reject or monitor (default: incidents.action).
        #[arg(long, value_parser = ["hold", "tempfail", "reject", "monitor"])]
        action: Option<String>,
    },
}

/// `explain`'s arguments.
#[derive(clap::Args)]
struct ExplainArgs {
    #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
    config: PathBuf,
    /// The client's IP address, as the MTA would give it.
    #[arg(long)]
    client: std::net::IpAddr,
    /// The SASL login the client authenticated as.
    #[arg(long)]
    auth: Option<String>,
    #[arg(long, default_value = "client.invalid")]
    helo: String,
    /// The envelope sender (MAIL FROM); "" for the null sender.
    #[arg(long)]
    from: String,
    /// An envelope recipient (RCPT TO); repeat it, or separate with commas.
    #[arg(long, required = true)]
    rcpt: Vec<String>,
    /// The message (.eml: headers, an empty line, the body); without it
    /// a minimal message whose From: is the sender.
    message: Option<PathBuf>,
    /// Ask nothing of the network: no SPF, existing-signature checks,
    /// rspamd, clamd or callouts (they are shown as off).
    #[arg(long)]
    offline: bool,
}

#[derive(Subcommand)]
enum LimitsAction {
    /// Per limit: the rate, the budget left and the time until it is full.
    /// KEY is a client IP, an address (sender or recipient), a domain, a
    /// network or a login, or KIND:KEY to say which (client, network,
    /// sender, recipient, user, domain); an unknown KIND is an error.
    Show {
        key: String,
        /// Only this limit (an unknown name is an error).
        #[arg(long)]
        limit: Option<String>,
    },
    /// Gives KEY a full budget again under every limit (or --limit).
    Reset {
        key: String,
        #[arg(long)]
        limit: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Selfcheck { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = match small_runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(egress_milter::selfcheck::run(&config)) {
                Ok(rows) => {
                    print!("{}", egress_milter::selfcheck::render(&rows));
                    if rows
                        .iter()
                        .any(|r| r.status == egress_milter::selfcheck::Status::Fail)
                    {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("egress-milter: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain(args) => explain(args),
        Command::DkimKeygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => keygen(&domain, &selector, &algorithm, bits, out),
        Command::CheckConfig { config, user } => {
            if let Some(user) = user {
                if let Err(e) = become_user(&user) {
                    eprintln!("egress-milter: --user {user}: {e}");
                    return ExitCode::from(2);
                }
            }
            check_config(&config)
        }
        Command::Limits { action, config } => {
            let request = match action {
                LimitsAction::Show { key, limit } => limits_request("show", &key, limit),
                LimitsAction::Reset { key, limit } => limits_request("reset", &key, limit),
            };
            admin_request(&config, &request)
        }
        Command::Test {
            config,
            cases,
            generate,
            offline,
        } => run_cases(&config, cases.as_deref(), generate, offline),
        Command::Probe {
            config,
            server,
            rcpt,
            source,
            as_client,
            helo,
            submission,
            login,
            password_file,
            timeout,
        } => {
            let Some(timeout) = egress_milter::config::parse_duration(&timeout) else {
                eprintln!("egress-milter: --timeout {timeout}: expected a duration such as 30s");
                return ExitCode::from(2);
            };
            let password =
                match password_file.map(|p| std::fs::read_to_string(&p).map_err(|e| (p, e))) {
                    None => None,
                    Some(Ok(s)) => Some(s.lines().next().unwrap_or_default().to_string()),
                    Some(Err((p, e))) => {
                        eprintln!("egress-milter: cannot read {}: {e}", p.display());
                        return ExitCode::from(2);
                    }
                };
            ExitCode::from(egress_milter::probe::command(
                &config,
                &egress_milter::probe::Options {
                    server,
                    rcpt,
                    source,
                    as_client,
                    helo,
                    submission,
                    login,
                    password,
                    timeout,
                },
            ))
        }
        Command::Senders {
            class,
            format,
            config,
        } => admin_request(&config, &format!("senders {class} {format}")),
        Command::Cache { action, config } => {
            let request = match action {
                CacheAction::Show { key } => format!("cache show {key}"),
                CacheAction::Flush { key } => format!("cache flush {}", key.unwrap_or_default()),
            };
            admin_request(&config, request.trim_end())
        }
        Command::Incidents { action, config } => {
            let request = match action {
                IncidentsAction::List => "incidents list".to_string(),
                IncidentsAction::Show { key } => format!("incidents show {key}"),
                IncidentsAction::Close { key } => format!("incidents close {key}"),
                IncidentsAction::Open {
                    key,
                    duration,
                    action,
                } => {
                    let mut r = format!("incidents open {key}");
                    if let Some(d) = duration {
                        r.push_str(&format!(" --for {d}"));
                    }
                    if let Some(a) = action {
                        r.push_str(&format!(" --action {a}"));
                    }
                    r
                }
            };
            admin_request(&config, &request)
        }
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            egress_milter::log::init(config.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("egress-milter: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(egress_milter::server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Once: the log goes to stderr too.
                    tracing::error!("egress-milter not started: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: usize,
    out: Option<PathBuf>,
) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let domain = match egress_milter::address::Domain::parse(domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("egress-milter: invalid domain: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (pem, record) = match egress_milter::dkim::generate(algorithm, bits) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return ExitCode::FAILURE;
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
        return ExitCode::FAILURE;
    }
    eprintln!("private key written to {}", path.display());
    eprintln!("publish this TXT record, then add the key to dkim.keys:");
    // A TXT string holds 255 bytes at most: longer records (RSA keys) are
    // written as several strings, which DNS joins back.
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    );
    ExitCode::SUCCESS
}

/// Loads a configuration, printing every error.
fn explain(args: ExplainArgs) -> ExitCode {
    let ExplainArgs {
        config,
        client,
        auth,
        helo,
        from,
        rcpt: rcpts,
        message,
        offline,
    } = args;
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let message = match message
        .map(|p| std::fs::read(&p).map_err(|e| (p, e)))
        .transpose()
    {
        Ok(m) => m,
        Err((p, e)) => {
            eprintln!("egress-milter: cannot read {}: {e}", p.display());
            return ExitCode::from(2);
        }
    };
    let req = egress_milter::explain::Request {
        client,
        helo,
        auth,
        from,
        rcpts: rcpt_list(rcpts),
        message,
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = runtime.block_on(egress_milter::explain::explain(config, &req, offline));
    print!("{}", egress_milter::explain::render(&req, &report));
    if report.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Recipients as given: repeated `--rcpt` or comma-separated.
fn rcpt_list(rcpts: Vec<String>) -> Vec<String> {
    rcpts
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| r.trim().trim_matches(['<', '>']).to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// Sends one request to the daemon's admin endpoint and prints its answer.
fn admin_request(config: &std::path::Path, request: &str) -> ExitCode {
    let settings = match egress_milter::config::AdminSettings::load(config) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(egress_milter::admin::request(&settings, request)) {
        Ok(answer) if answer.starts_with("error:") => {
            eprint!("{answer}");
            ExitCode::FAILURE
        }
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "egress-milter: cannot reach the daemon at {}: {e}",
                egress_milter::admin::describe(&settings)
            );
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// A single-threaded runtime for the commands that talk to the network once.
/// `egress-milter test`.
fn run_cases(
    config_path: &std::path::Path,
    cases: Option<&std::path::Path>,
    generate: bool,
    offline: bool,
) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let runtime = match small_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    if generate {
        print!(
            "{}",
            runtime.block_on(egress_milter::cases::generate::generate(&config))
        );
        return ExitCode::SUCCESS;
    }
    let Some(path) = cases else {
        eprintln!("egress-milter: a cases file is needed (or --generate)");
        return ExitCode::from(2);
    };
    let file = match egress_milter::cases::load(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    match runtime.block_on(egress_milter::cases::run(config, &file, base, offline)) {
        Ok(results) => {
            print!("{}", egress_milter::cases::render(&results));
            if results.iter().all(|r| r.diff.is_empty()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn small_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("egress-milter: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
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

/// `check-config`: "ok" and the warnings, or every error.
fn check_config(config: &std::path::Path) -> ExitCode {
    match Config::load(config) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// A `limits` request as the admin endpoint reads it.
fn limits_request(verb: &str, key: &str, limit: Option<String>) -> String {
    match limit {
        Some(l) => format!("{verb} {key} --limit {l}"),
        None => format!("{verb} {key}"),
    }
}
