//! `egress-milter test`: policy cases as code. A file of cases, each a
//! client, an envelope, a message and the outcome expected, run offline
//! through the daemon's own transaction code (what `explain` runs); one
//! line per case, a diff for each failure, a summary; success only when
//! every case passes. `generate.rs` writes a starter file from the
//! configuration itself.

pub mod generate;

use crate::config::Config;
use crate::explain::{judge, offline_config, Report, Request};
use crate::session::{Answer, HeaderAction};
use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A cases file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// Turns the network checks off for the whole file (as `--offline`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    pub cases: Vec<Case>,
}

/// One path through the gateway and what must come of it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The client's IP, as the MTA gives it.
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    /// The SASL login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The envelope sender; "" for the null sender.
    pub from: String,
    pub rcpt: Vec<String>,
    /// Header fields, `Name: value`, in order; without them (and without
    /// `message`) a minimal message whose From: is the envelope sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A whole message (.eml), relative to the cases file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<PathBuf>,
    /// Rate limits and incident signals start afresh for this case (they
    /// are shared by the cases of a file otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    pub expect: Expect,
}

/// What must come of a case. Every field given must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// accept, reject (5xx), tempfail (4xx) or hold (accepted, held for
    /// review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The exact reply, `550 5.7.1 ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The stage that decided: connect, mail, rcpt, header, eoh, body, eom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The answer to a recipient: `accept` or its reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<BTreeMap<String, String>>,
    /// The domain a DKIM signature added is made for (`d=`); "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// A reply monitor mode let through (logged as would_reject or
    /// would_tempfail), anywhere in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    /// Header fields added (names), changed or removed (`Name #n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adds: Option<Vec<String>>,
}

/// Why a cases file could not be run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CasesError(pub String);

/// Reads and checks a cases file: YAML errors name the file and the line.
pub fn load(path: &Path) -> Result<CasesFile, CasesError> {
    let bytes = crate::files::read_bounded(path, 16 << 20)
        .map_err(|e| CasesError(format!("{}: cannot read: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CasesError(format!("{}: not UTF-8 text", path.display())))?;
    let file: CasesFile = serde_saphyr::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("invalid YAML").to_string();
        CasesError(format!("{}:{line}: {first}", path.display()))
    })?;
    for (i, c) in file.cases.iter().enumerate() {
        if c.client.parse::<std::net::IpAddr>().is_err() {
            return Err(CasesError(format!(
                "{}: cases[{i}] ({}): client \"{}\" is not an IP address",
                path.display(),
                c.name,
                c.client
            )));
        }
        if c.rcpt.is_empty() {
            return Err(CasesError(format!(
                "{}: cases[{i}] ({}): at least one rcpt is needed",
                path.display(),
                c.name
            )));
        }
        if let Some(r) = &c.expect.result {
            if !["accept", "reject", "tempfail", "hold"].contains(&r.as_str()) {
                return Err(CasesError(format!(
                    "{}: cases[{i}] ({}): expect.result \"{r}\": accept, reject, tempfail or hold",
                    path.display(),
                    c.name
                )));
            }
        }
    }
    Ok(file)
}

/// What a case got, in the terms a case expects.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Got {
    pub result: String,
    pub reply: Option<String>,
    pub stage: String,
    pub rcpt: BTreeMap<String, String>,
    pub signed_by: Vec<String>,
    pub adds: Vec<String>,
    /// The replies monitor mode let through.
    pub would: Vec<String>,
}

fn answer_text(a: &Answer) -> String {
    match a {
        Answer::Continue => "accept".into(),
        Answer::Refuse(r) => r.to_string(),
    }
}

impl Got {
    fn of(report: &Report) -> Self {
        let held = report
            .headers
            .iter()
            .any(|h| matches!(h, HeaderAction::Quarantine(_)));
        let (result, reply) = match &report.answer {
            Answer::Continue if held => ("hold".to_string(), None),
            Answer::Continue => ("accept".to_string(), None),
            Answer::Refuse(r) if r.is_permanent() => ("reject".to_string(), Some(r.to_string())),
            Answer::Refuse(r) => ("tempfail".to_string(), Some(r.to_string())),
        };
        let mut signed_by = Vec::new();
        let mut adds = Vec::new();
        for h in &report.headers {
            match h {
                HeaderAction::Insert { name, value } => {
                    adds.push(name.to_string());
                    if name.eq_ignore_ascii_case("DKIM-Signature") {
                        if let Some(d) = value.split(';').find_map(|t| t.trim().strip_prefix("d="))
                        {
                            signed_by.push(d.trim().to_string());
                        }
                    }
                }
                HeaderAction::Change(e) => adds.push(format!("{} #{}", e.name, e.index)),
                HeaderAction::Quarantine(_) => {}
            }
        }
        let would = report
            .steps
            .iter()
            .filter(|s| s.check == "decision" && s.outcome.starts_with("would_"))
            .filter_map(|s| s.outcome.split_once("): ").map(|(_, r)| r.to_string()))
            .collect();
        Got {
            would,
            result,
            reply,
            stage: if report.answer == Answer::Continue {
                "-".into()
            } else {
                report.stage.as_str().to_string()
            },
            rcpt: report
                .rcpts
                .iter()
                .map(|(r, a)| (r.clone(), answer_text(a)))
                .collect(),
            signed_by,
            adds,
        }
    }

    /// The differences from what was expected, one line each.
    pub fn diff(&self, want: &Expect) -> Vec<String> {
        let mut out = Vec::new();
        let show = |o: &Option<String>| {
            o.as_deref()
                .map_or("none".to_string(), |s| format!("\"{s}\""))
        };
        if let Some(r) = &want.result {
            if *r != self.result {
                out.push(format!("result: expected {r}, got {}", self.result));
            }
        }
        if let Some(r) = &want.reply {
            if Some(r) != self.reply.as_ref() {
                out.push(format!(
                    "reply:  expected \"{r}\", got {}",
                    show(&self.reply)
                ));
            }
        }
        if let Some(s) = &want.stage {
            if *s != self.stage {
                out.push(format!("stage:  expected {s}, got {}", self.stage));
            }
        }
        for (addr, a) in want.rcpt.iter().flatten() {
            let got = self.rcpt.get(addr).map_or("not sent", String::as_str);
            if got != a {
                out.push(format!("rcpt {addr}: expected \"{a}\", got \"{got}\""));
            }
        }
        if let Some(d) = &want.signed_by {
            let ok = if d.is_empty() {
                self.signed_by.is_empty()
            } else {
                self.signed_by.iter().any(|s| s.eq_ignore_ascii_case(d))
            };
            if !ok {
                out.push(format!(
                    "signed_by: expected {}, got {}",
                    if d.is_empty() { "no signature" } else { d },
                    if self.signed_by.is_empty() {
                        "no signature".to_string()
                    } else {
                        self.signed_by.join(", ")
                    }
                ));
            }
        }
        if let Some(w) = &want.would {
            if !self.would.contains(w) {
                out.push(format!(
                    "would:  expected \"{w}\" (let through by monitor mode), got [{}]",
                    self.would.join("; ")
                ));
            }
        }
        for name in want.adds.iter().flatten() {
            if !self.adds.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                out.push(format!(
                    "adds: expected {name}, got [{}]",
                    self.adds.join(", ")
                ));
            }
        }
        out
    }
}

/// The outcome of one case.
pub struct CaseResult {
    pub name: String,
    pub diff: Vec<String>,
    pub got: Got,
}

/// Turns a case into the request `explain` runs.
fn request(case: &Case, base: &Path) -> Result<Request, CasesError> {
    let client = case
        .client
        .parse()
        .map_err(|_| CasesError(format!("{}: client is not an IP address", case.name)))?;
    let message = match (&case.message, &case.headers) {
        (Some(p), _) => {
            let path = base.join(p);
            Some(crate::files::read_bounded(&path, 64 << 20).map_err(|e| {
                CasesError(format!(
                    "{}: cannot read {}: {e}",
                    case.name,
                    path.display()
                ))
            })?)
        }
        (None, Some(h)) => {
            let mut m = String::new();
            for field in h {
                m.push_str(field);
                m.push_str("\r\n");
            }
            m.push_str("\r\n");
            m.push_str(case.body.as_deref().unwrap_or("A test message.\r\n"));
            Some(m.into_bytes())
        }
        (None, None) => None,
    };
    Ok(Request {
        client,
        helo: case.helo.clone().unwrap_or_else(|| "client.invalid".into()),
        auth: case.login.clone(),
        from: case
            .from
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        rcpts: case.rcpt.clone(),
        message,
    })
}

/// Runs every case of a file against a configuration: rate limits and
/// incidents in one fresh in-process state for the file (and a fresh one
/// for each case marked `fresh`).
pub async fn run(
    config: Config,
    file: &CasesFile,
    base: &Path,
    offline: bool,
) -> Result<Vec<CaseResult>, CasesError> {
    let offline = offline || file.offline;
    let config = offline_config(config, offline);
    let fresh = || {
        let shared = Shared::new(config.clone());
        if offline {
            shared.sources.go_offline();
        }
        shared
    };
    let shared: Arc<Shared> = fresh();
    let mut out = Vec::new();
    for case in &file.cases {
        let req = request(case, base)?;
        let report = if case.fresh {
            judge(fresh(), &req).await
        } else {
            judge(shared.clone(), &req).await
        };
        let got = Got::of(&report);
        out.push(CaseResult {
            name: case.name.clone(),
            diff: got.diff(&case.expect),
            got,
        });
    }
    Ok(out)
}

/// The report printed: a line per case, the diff under each failure, the
/// summary last.
pub fn render(results: &[CaseResult]) -> String {
    let mut out = String::new();
    let failed = results.iter().filter(|r| !r.diff.is_empty()).count();
    for r in results {
        if r.diff.is_empty() {
            let _ = writeln!(out, "ok    {}", r.name);
        } else {
            let _ = writeln!(out, "FAIL  {}", r.name);
            for d in &r.diff {
                let _ = writeln!(out, "        {d}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} case(s): {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    out
}
