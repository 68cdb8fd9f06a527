//! `egress-milter probe`: speaks SMTP to the running gateway from where it
//! runs, down every path of `paths.rs`, and compares each answer with what
//! the policy (the configuration given, run offline through the daemon's
//! own transaction code) predicts for a client at this address. A unit
//! test of the policy cannot see a gateway where the milter is not
//! consulted at all; this can.
//!
//! Nothing leaves but to the operator's address: a path whose recipients
//! are not all `--rcpt` stops after RCPT TO (RSET, never DATA).

pub mod diagnosis;
pub mod paths;

use crate::config::Config;
use crate::explain::{judge, offline_config, Request};
use crate::session::{Answer, Stage};
use crate::state::Shared;
use lettre::transport::smtp::{
    authentication::{Credentials, Mechanism},
    client::{AsyncSmtpConnection, TlsParameters},
    extension::ClientId,
};
use paths::ProbePath;
use std::{fmt::Write as _, net::IpAddr, time::Duration};

pub struct Options {
    /// HOST:PORT of the gateway's SMTP service.
    pub server: String,
    /// The operator's address: the only one a message is ever sent to.
    pub rcpt: String,
    /// The local address to connect from.
    pub source: Option<IpAddr>,
    /// The client address the gateway sees, when not the local address
    /// (NAT).
    pub as_client: Option<IpAddr>,
    pub helo: String,
    /// The submission service, the login and its password.
    pub submission: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
}

/// One SMTP step as the gateway answered it: "accept" or the reply.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Said {
    Accept,
    Refuse(String),
}

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Said::Accept => f.write_str("accept"),
            Said::Refuse(r) => f.write_str(r),
        }
    }
}

/// A path's steps: MAIL FROM, each RCPT TO, the end of DATA (when sent).
#[derive(Clone, Debug, Default)]
pub struct Steps {
    pub mail: Option<Said>,
    pub rcpts: Vec<(String, Said)>,
    pub data: Option<Said>,
}

/// What came of one path.
pub struct Outcome {
    pub path: ProbePath,
    pub expected: Steps,
    pub got: Result<Steps, String>,
    /// For each step that differs: what was expected, got, and what it
    /// means.
    pub mismatches: Vec<String>,
    /// Refused as predicted, but by the MTA's own rule first.
    pub notes: Vec<String>,
}

fn said(a: &Answer) -> Said {
    match a {
        Answer::Continue => Said::Accept,
        Answer::Refuse(r) => Said::Refuse(r.to_string()),
    }
}

/// What the policy predicts for a path.
fn predicted(path: &ProbePath, report: &crate::explain::Report) -> Steps {
    let mut s = Steps::default();
    if report.stage == Stage::Mail || report.stage == Stage::Connect {
        s.mail = Some(said(&report.answer));
        return s;
    }
    s.mail = Some(Said::Accept);
    s.rcpts = report
        .rcpts
        .iter()
        .map(|(r, a)| (r.clone(), said(a)))
        .collect();
    if path.message.is_some() && s.rcpts.iter().any(|(_, a)| *a == Said::Accept) {
        s.data = Some(match report.stage {
            Stage::Rcpt => Said::Accept,
            _ => said(&report.answer),
        });
    }
    s
}

/// A negative reply as the client saw it: `550 5.7.1 text`.
fn refusal(e: &lettre::transport::smtp::Error) -> Said {
    match (e.status(), std::error::Error::source(e)) {
        (Some(code), Some(text)) => Said::Refuse(format!("{code} {text}")),
        _ => Said::Refuse(e.to_string()),
    }
}

async fn connect(
    server: &str,
    helo: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<AsyncSmtpConnection, String> {
    AsyncSmtpConnection::connect_tokio1(
        server,
        Some(timeout),
        &ClientId::Domain(helo.to_string()),
        None,
        source,
    )
    .await
    .map_err(|e| format!("cannot connect to {server}: {e}"))
}

/// Walks a path against the gateway.
async fn walk(opts: &Options, path: &ProbePath) -> Result<Steps, String> {
    let server = if path.login {
        opts.submission.as_deref().unwrap_or(&opts.server)
    } else {
        &opts.server
    };
    let mut conn = connect(server, &path.helo, opts.source, opts.timeout).await?;
    if path.login {
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
        if conn.can_starttls() {
            let tls = TlsParameters::new(host.to_string()).map_err(|e| format!("TLS: {e}"))?;
            conn.starttls(tls, &ClientId::Domain(path.helo.clone()))
                .await
                .map_err(|e| format!("STARTTLS with {server}: {e}"))?;
        }
        let creds = Credentials::new(
            opts.login.clone().unwrap_or_default(),
            opts.password.clone().unwrap_or_default(),
        );
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
            .map_err(|e| {
                format!(
                    "AUTH as {} refused: {e}",
                    opts.login.as_deref().unwrap_or("")
                )
            })?;
    }
    let mut steps = Steps::default();
    let result = async {
        match conn.command(format!("MAIL FROM:<{}>\r\n", path.from)).await {
            Ok(_) => steps.mail = Some(Said::Accept),
            Err(e) if e.status().is_some() => {
                steps.mail = Some(refusal(&e));
                return Ok(());
            }
            Err(e) => return Err(format!("MAIL FROM: {e}")),
        }
        for r in &path.rcpts {
            let a = match conn.command(format!("RCPT TO:<{r}>\r\n")).await {
                Ok(_) => Said::Accept,
                Err(e) if e.status().is_some() => refusal(&e),
                Err(e) => return Err(format!("RCPT TO: {e}")),
            };
            steps.rcpts.push((r.clone(), a));
        }
        let accepted: Vec<&String> = steps
            .rcpts
            .iter()
            .filter(|(_, a)| *a == Said::Accept)
            .map(|(r, _)| r)
            .collect();
        // Only ever to the operator's address.
        let only_ours = !accepted.is_empty() && accepted.iter().all(|r| **r == opts.rcpt);
        match (&path.message, only_ours) {
            (Some(m), true) => {
                conn.command("DATA\r\n")
                    .await
                    .map_err(|e| format!("DATA: {e}"))?;
                steps.data = Some(match conn.message(m).await {
                    Ok(_) => Said::Accept,
                    Err(e) if e.status().is_some() => refusal(&e),
                    Err(e) => return Err(format!("end of DATA: {e}")),
                });
            }
            _ => {
                let _ = conn.command("RSET\r\n").await;
            }
        }
        Ok(())
    }
    .await;
    let _ = conn.quit().await;
    result.map(|()| steps)
}

/// Compares a step: a mismatch line, or a note when both refuse with
/// different replies (the MTA refused first). What the mismatches mean
/// together is `diagnosis`'s to say.
fn compare(step: &str, want: &Said, got: &Said, out: &mut Outcome) {
    match (want, got) {
        (Said::Accept, Said::Accept) => {}
        (a, b) if a == b => {}
        (Said::Refuse(_), Said::Refuse(g)) if !diagnosis::milter_unreachable_reply(g) => {
            out.notes.push(format!("{step}: \"{g}\""));
        }
        (Said::Refuse(_), Said::Accept) => out
            .mismatches
            .push(format!("{step}: expected \"{want}\", got accepted")),
        _ => out
            .mismatches
            .push(format!("{step}: expected \"{want}\", got \"{got}\"")),
    }
}

/// A whole probe: the client address the gateway saw, each path, and what
/// the mismatches mean together.
pub struct Report {
    pub client: IpAddr,
    pub outcomes: Vec<Outcome>,
    pub findings: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.mismatches.is_empty())
    }
}

/// Runs every path: the predictions first (offline, each in a fresh
/// state), then the gateway.
pub async fn run(config: Config, opts: &Options) -> Result<Report, String> {
    // Where the gateway sees us from, and its own address.
    let (local, server_ip) = local_and_peer(&opts.server, opts.source, opts.timeout).await?;
    let client = opts.as_client.unwrap_or(local);
    let listen = config.listen.clone();
    let config = offline_config(config, false);
    let shared = Shared::new(config.clone());
    let class = crate::class::resolve(&config, &shared.lists(false), Some(client), None)
        .await
        .map_err(|e| format!("the client's class: {e}"))?
        .map(|(_, c)| c);
    let paths = paths::paths(
        &config,
        class,
        server_ip,
        &opts.rcpt,
        &opts.helo,
        opts.login.as_deref().filter(|_| opts.password.is_some()),
    );
    let mut out = Vec::new();
    for path in paths {
        let req = Request {
            client,
            helo: path.helo.clone(),
            auth: path.login.then(|| opts.login.clone()).flatten(),
            from: path.from.clone(),
            rcpts: path.rcpts.clone(),
            message: path.message.clone(),
        };
        let report = judge(Shared::new(config.clone()), &req).await;
        let expected = predicted(&path, &report);
        let got = walk(opts, &path).await;
        let mut o = Outcome {
            path,
            expected: expected.clone(),
            got: got.clone(),
            mismatches: Vec::new(),
            notes: Vec::new(),
        };
        match &got {
            Err(e) => o.mismatches.push(format!("could not be tried: {e}")),
            Ok(g) => {
                if let (Some(w), Some(x)) = (&expected.mail, &g.mail) {
                    compare("MAIL FROM", w, x, &mut o);
                }
                if g.mail == Some(Said::Accept) && expected.mail == Some(Said::Accept) {
                    for ((r, w), (_, x)) in expected.rcpts.iter().zip(&g.rcpts) {
                        compare(&format!("RCPT TO:<{r}>"), w, x, &mut o);
                    }
                    if let (Some(w), Some(x)) = (&expected.data, &g.data) {
                        compare("end of DATA", w, x, &mut o);
                    }
                }
            }
        }
        out.push(o);
    }
    let reach = diagnosis::reach(&listen, Duration::from_secs(2)).await;
    let findings = diagnosis::diagnose(&out, &listen, reach);
    Ok(Report {
        client,
        outcomes: out,
        findings,
    })
}

/// The local address of a connection to the server (the client address
/// the gateway sees, unless NAT is in between) and the server's address.
async fn local_and_peer(
    server: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(IpAddr, IpAddr), String> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| format!("{server}: no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(ip) = source {
        socket
            .bind(std::net::SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| format!("{server}: no answer within {timeout:?}"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?.ip();
    Ok((local, addr.ip()))
}

/// The report: a line per path, the mismatches and notes under it, what
/// they mean, the summary last.
pub fn render(report: &Report) -> String {
    let outcomes = &report.outcomes;
    let mut out = String::new();
    let _ = writeln!(out, "probing as client {}\n", report.client);
    let bad = outcomes.iter().filter(|o| !o.mismatches.is_empty()).count();
    for o in outcomes {
        let status = if !o.mismatches.is_empty() {
            "MISMATCH"
        } else {
            "ok"
        };
        let summary = match &o.got {
            Ok(g) => match (&g.mail, g.data.as_ref()) {
                (Some(Said::Refuse(r)), _) => format!("MAIL FROM refused: {r}"),
                (_, Some(d)) => format!("message: {d}"),
                _ => {
                    let refused = g.rcpts.iter().filter(|(_, a)| *a != Said::Accept).count();
                    format!("{refused} of {} recipients refused", g.rcpts.len())
                }
            },
            Err(e) => e.clone(),
        };
        let _ = writeln!(out, "{status:<9} {}  [{summary}]", o.path.name);
        for m in &o.mismatches {
            let _ = writeln!(out, "          - {m}");
        }
        if let Some(first) = o.notes.first() {
            let _ = writeln!(
                out,
                "          note: {} step(s) refused as predicted, but by the MTA's own rule first, e.g. {first}",
                o.notes.len()
            );
        }
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "\nWhat it means:");
        for f in &report.findings {
            let _ = writeln!(out, "  * {f}");
        }
    }
    let _ = writeln!(
        out,
        "\n{} path(s): {} as predicted, {bad} mismatch(es)",
        outcomes.len(),
        outcomes.len() - bad
    );
    out
}

/// `egress-milter probe`: the exit code (0 all as predicted, 1 a mismatch,
/// 2 an error).
pub fn command(config: &std::path::Path, opts: &Options) -> u8 {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: cannot start a runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(run(config, opts)) {
        Ok(report) => {
            print!("{}", render(&report));
            u8::from(!report.passed())
        }
        Err(e) => {
            eprintln!("egress-milter: {e}");
            2
        }
    }
}
