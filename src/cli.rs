//! The command line's words: every command, its arguments and their help,
//! as clap reads them. The commands themselves are in `commands`; the
//! manual pages are made from these definitions (`manual`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "egress-milter",
    version,
    about = "Outbound policy milter for Postfix and Sendmail"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config`, for a command and every subcommand of it.
#[derive(clap::Args)]
pub struct ConfigFile {
    #[arg(
        long = "config",
        short = 'c',
        value_name = "CONFIG",
        default_value = "/etc/egress-milter/milter.yaml",
        global = true
    )]
    pub path: PathBuf,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the milter in the foreground.
    Run {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file: prints "ok" or every error; exit 0 or 2.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
        /// Check as this user (with its groups), as the daemon will read the
        /// files: a key or password file it cannot read is named. Needs
        /// root; the package's reload runs the check as the service's user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Print the JSON Schema of the configuration file (as shipped in
    /// milter.schema.json), for editors and validators.
    ConfigSchema,
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
    /// DKIM keys that rotate themselves (`dkim.rotation`): their state,
    /// a rotation now, and the records DNS must hold. Reads and writes
    /// `dkim.rotation.key_dir`, or Redis with `rate_limits.backend: redis`
    /// (the state the gateways share); the daemon follows at its next
    /// step.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Look at or reset a key's rate-limit budgets in the running daemon
    /// (through its admin endpoint, `admin.listen`).
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// List, show, open or close incidents (compromised accounts and
    /// hosts) in the running daemon (through `admin.listen`).
    Incidents {
        #[command(subcommand)]
        action: IncidentsAction,
        #[command(flatten)]
        config: ConfigFile,
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
    Probe(ProbeArgs),
    /// The envelope senders and From: addresses a class was seen using
    /// while in monitor mode (learning mode), as a ready
    /// `sender_addresses` list (`--format yaml`) or a file source
    /// (`--format file`), through `admin.listen`.
    Senders {
        #[command(subcommand)]
        action: Option<SendersAction>,
        /// The class (`senders --class CLASS`: the same as `senders show
        /// CLASS`).
        #[arg(long)]
        class: Option<String>,
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "file"])]
        format: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// What the reputation watch knows (through `admin.listen`): every
    /// watched address and domain on every list and since when, the
    /// records that are not as they should be, the last changes.
    Reputation {
        /// Run one round now (every list asked at once), then show.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// The recipients refused after hard bounces (`bounces`), in the
    /// running daemon (through `admin.listen`).
    Suppressions {
        #[command(subcommand)]
        action: SuppressionsAction,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Serve one request of the console on held mail, read as a JSON line
    /// from standard input, answered on standard output: what
    /// egress-milter-queue.socket runs as root for each connection, so that
    /// the daemon itself needs no privilege.
    QueueHelper {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// The web console's users (`console.users_file`).
    ConsoleUser {
        #[command(subcommand)]
        action: ConsoleUserAction,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Look at or clear the cached answers of sources and callouts in the
    /// running daemon (through `admin.listen`).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        #[command(flatten)]
        config: ConfigFile,
    },
}

#[derive(Subcommand)]
pub enum SendersAction {
    /// What learning mode saw CLASS use.
    Show {
        class: String,
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "file"])]
        format: String,
    },
}

#[derive(Subcommand)]
pub enum SuppressionsAction {
    /// Every recipient refused now, with the status that got it refused
    /// and until when.
    List,
    /// One recipient (any spelling): its hard failures and whether it is
    /// refused.
    Show { address: String },
    /// Forgets a recipient: mail to it goes again.
    Remove { address: String },
    /// Refuses a recipient by hand.
    Add {
        address: String,
        /// How long, e.g. 90d (default: bounces.suppress.for).
        #[arg(long = "for")]
        duration: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ConsoleUserAction {
    /// Adds a user, or gives one a new password and role. The password is
    /// read from standard input (asked twice, unechoed, on a terminal);
    /// the hash (Argon2id) is written, never the password.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// The users file (default: `console.users_file` of the
        /// configuration).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum CacheAction {
    /// The cached answer for KEY (an address, a domain, a login, an IP)
    /// in every cache, with the time it has left.
    Show { key: String },
    /// Forgets KEY's cached answers, or every cached answer: the next
    /// lookup asks the directory or the mail store again.
    Flush { key: Option<String> },
}

#[derive(Subcommand)]
pub enum IncidentsAction {
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

/// `probe`'s arguments.
#[derive(clap::Args)]
pub struct ProbeArgs {
    #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
    pub config: PathBuf,
    /// The gateway's SMTP service, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The only address a message is sent to (yours).
    #[arg(long)]
    pub rcpt: String,
    /// Connect from this local address.
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
    /// The client address the gateway sees, when NAT is in between.
    #[arg(long)]
    pub as_client: Option<std::net::IpAddr>,
    #[arg(long, default_value = "probe.invalid")]
    pub helo: String,
    /// The submission service (HOST:587), for the login's paths.
    #[arg(long)]
    pub submission: Option<String>,
    #[arg(long, requires = "password_file")]
    pub login: Option<String>,
    /// A file whose first line is the login's password.
    #[arg(long, requires = "login")]
    pub password_file: Option<PathBuf>,
    /// The longest wait for one SMTP session.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

/// `explain`'s arguments.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
    pub config: PathBuf,
    /// The client's IP address, as the MTA would give it.
    #[arg(long)]
    pub client: std::net::IpAddr,
    /// The SASL login the client authenticated as.
    #[arg(long)]
    pub auth: Option<String>,
    #[arg(long, default_value = "client.invalid")]
    pub helo: String,
    /// The envelope sender (MAIL FROM); "" for the null sender.
    #[arg(long)]
    pub from: String,
    /// An envelope recipient (RCPT TO); repeat it, or separate with commas.
    #[arg(long, required = true)]
    pub rcpt: Vec<String>,
    /// The message (.eml: headers, an empty line, the body); without it
    /// a minimal message whose From: is the sender.
    pub message: Option<PathBuf>,
    /// Ask nothing of the network: no SPF, existing-signature checks,
    /// rspamd, clamd or callouts (they are shown as off).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Subcommand)]
pub enum LimitsAction {
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

#[derive(Subcommand)]
pub enum DkimAction {
    /// Per domain and algorithm, each key: selector, state (pending,
    /// active, retiring, revoked), age, and its next step or what it waits
    /// for; shared through Redis, also the gateway that drives. Exit 1
    /// when a key has been pending for more than a day, is older than
    /// `every`, or should sign and has no private key (shared: none that
    /// opens with this gateway's `secret_file`).
    Status,
    /// A new key now, for one domain or every rotated one, switched to as
    /// soon as DNS serves its record (the old key signs until then); the
    /// records to publish are printed. With --now the replaced key is
    /// revoked as soon as the new one signs, not kept for `retire_after`
    /// (a key that leaked). Shared through Redis, the request is saved
    /// there and the keys are made at once when no gateway drives, else by
    /// the driving gateway at its next step.
    Rotate {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        now: bool,
    },
    /// The TXT records DNS must hold now, a line each (name, then value),
    /// or with --zone as a zone-file fragment.
    Records {
        #[arg(long)]
        zone: bool,
    },
}

/// How a command ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Exit {
    /// Done; every case or check passed; the message would be accepted.
    Ok,
    /// Ran, and something failed.
    Failed,
    /// Could not run as asked: usage, configuration, input.
    Usage,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Ok => std::process::ExitCode::SUCCESS,
            Exit::Failed => std::process::ExitCode::from(1),
            Exit::Usage => std::process::ExitCode::from(2),
        }
    }
}

impl Exit {
    pub fn passed(ok: bool) -> Self {
        if ok {
            Exit::Ok
        } else {
            Exit::Failed
        }
    }
}
