//! The egress-milter command line: its arguments, each subcommand handed
//! to its function in `egress_milter::commands`.

use clap::Parser;
use egress_milter::cli::*;
use std::process::ExitCode;

/// mimalloc instead of the C library's allocator: every milter stage
/// allocates and frees small buffers, and glibc's malloc spent twice the
/// time on them under load (free-list consolidation, arena locks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use egress_milter::admin::{Cache, Incidents, Limits, Request, Senders, Suppressions};
    use egress_milter::commands::{self, Exit};
    let exit: Exit = match Cli::parse().command {
        Command::Run { config } => commands::run(&config),
        Command::CheckConfig { config, user } => commands::check_config(&config, user.as_deref()),
        Command::ConfigSchema => {
            print!("{}", egress_milter::config::schema());
            Exit::Ok
        }
        Command::Selfcheck { config } => commands::selfcheck(&config),
        Command::Explain(a) => commands::explain(
            &a.config,
            egress_milter::explain::Request {
                client: a.client,
                helo: a.helo,
                auth: a.auth,
                from: a.from,
                rcpts: commands::rcpt_list(&a.rcpt),
                message: None,
            },
            a.message,
            a.offline,
        ),
        Command::Test {
            config,
            cases,
            generate,
            offline,
        } => commands::test(&config, cases.as_deref(), generate, offline),
        Command::DkimKeygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => commands::keygen(&domain, &selector, &algorithm, bits, out),
        Command::Probe(a) => commands::probe(
            &a.config,
            egress_milter::probe::Options {
                server: a.server,
                rcpt: a.rcpt,
                source: a.source,
                as_client: a.as_client,
                helo: a.helo,
                submission: a.submission,
                login: a.login,
                password: None,
                timeout: std::time::Duration::ZERO,
            },
            &a.timeout,
            a.password_file,
        ),
        Command::Dkim { action, config } => {
            egress_milter::rotation::command::run(&config.path, action)
        }
        Command::Limits { action, config } => commands::admin(
            &config.path,
            Request::Limits(match action {
                LimitsAction::Show { key, limit } => Limits::Show { key, limit },
                LimitsAction::Reset { key, limit } => Limits::Reset { key, limit },
            }),
        ),
        Command::Incidents { action, config } => commands::admin(
            &config.path,
            Request::Incidents(match action {
                IncidentsAction::List => Incidents::List,
                IncidentsAction::Show { key } => Incidents::Show { key },
                IncidentsAction::Close { key } => Incidents::Close { key },
                IncidentsAction::Open {
                    key,
                    duration,
                    action,
                } => Incidents::Open {
                    key,
                    duration,
                    action,
                },
            }),
        ),
        Command::Reputation { check, config } => commands::admin(
            &config.path,
            Request::Reputation(egress_milter::admin::Reputation { check }),
        ),
        Command::QueueHelper { config } => commands::queue_helper(&config.path),
        Command::ConsoleUser {
            action: ConsoleUserAction::Add { name, role, file },
            config,
        } => commands::console_user_add(&config.path, file.as_deref(), &name, &role),
        Command::Suppressions { action, config } => commands::admin(
            &config.path,
            Request::Suppressions(match action {
                SuppressionsAction::List => Suppressions::List,
                SuppressionsAction::Show { address } => Suppressions::Show { address },
                SuppressionsAction::Remove { address } => Suppressions::Remove { address },
                SuppressionsAction::Add { address, duration } => Suppressions::Add {
                    address,
                    for_: duration,
                },
            }),
        ),
        Command::Cache { action, config } => commands::admin(
            &config.path,
            Request::Cache(match action {
                CacheAction::Show { key } => Cache::Show { key },
                CacheAction::Flush { key } => Cache::Flush { key },
            }),
        ),
        Command::Senders {
            action,
            class,
            format,
            config,
        } => {
            let (class, format) = match action {
                Some(SendersAction::Show { class, format }) => (class, format),
                // `senders --class CLASS`, the first spelling.
                None => match class {
                    Some(class) => (class, format),
                    None => {
                        eprintln!("egress-milter: senders show CLASS (or senders --class CLASS)");
                        return Exit::Usage.into();
                    }
                },
            };
            let format = match format.as_str() {
                "file" => egress_milter::learning::Format::File,
                _ => egress_milter::learning::Format::Yaml,
            };
            commands::admin(&config.path, Request::Senders(Senders { class, format }))
        }
    };
    exit.into()
}
