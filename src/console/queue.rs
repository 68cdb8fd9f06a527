//! Held mail in the MTA's queue: listed, read, released and deleted
//! (by the daemon itself, or, when `console.queue_socket` is set, by the
//! queue helper running as root, asked over that socket)
//! through the MTA's own commands (Postfix: `postqueue -j`, `postcat`,
//! `postsuper -H` then `postqueue -i`, `postsuper -d ... hold`), or in
//! Sendmail's quarantine (`hf` files read from the queue directory,
//! released with `sendmail -Q -qQ -qI`, then delivered with `sendmail -qI`).

use crate::config::{ConsoleMta, ConsoleSettings};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A held message as the queue lists it.
#[derive(Clone, Debug, Default, Eq, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Queued {
    pub id: String,
    /// Seconds since the epoch.
    pub arrival: u64,
    pub size: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Sendmail's quarantine reason (Postfix keeps none).
    pub reason: Option<String>,
}

/// The most of a message read for the preview.
pub const MAX_READ: usize = 1 << 20;
/// How long an MTA command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A queue id as both MTAs write them: letters and digits.
pub fn valid_id(id: &str) -> bool {
    (5..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Runs an MTA command (through `sudo -n` when asked); its output, or why
/// it failed.
async fn run(settings: &ConsoleSettings, program: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut cmd = if settings.sudo {
        let mut c = tokio::process::Command::new("sudo");
        c.arg("-n").arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{} {}", program.display(), args.join(" "));
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("{shown}: no answer in {}s", COMMAND_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{shown}: {}", err.trim()));
    }
    Ok(out.stdout)
}

fn postfix_command(name: &str) -> std::path::PathBuf {
    Path::new("/usr/sbin").join(name)
}

fn config_dir(settings: &ConsoleSettings) -> String {
    settings.postfix_config.display().to_string()
}

/// The held messages, oldest first.
async fn local_list(settings: &ConsoleSettings) -> Result<Vec<Queued>, String> {
    match settings.mta {
        ConsoleMta::Postfix => {
            let dir = config_dir(settings);
            let out = run(settings, &postfix_command("postqueue"), &["-c", &dir, "-j"]).await?;
            let mut held = Vec::new();
            for line in String::from_utf8_lossy(&out).lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["queue_name"].as_str() != Some("hold") {
                    continue;
                }
                held.push(Queued {
                    id: v["queue_id"].as_str().unwrap_or_default().to_string(),
                    arrival: v["arrival_time"].as_u64().unwrap_or(0),
                    size: v["message_size"].as_u64().unwrap_or(0),
                    sender: v["sender"].as_str().unwrap_or_default().to_string(),
                    recipients: v["recipients"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x["address"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    reason: None,
                });
            }
            held.sort_by_key(|q| q.arrival);
            Ok(held)
        }
        ConsoleMta::Sendmail => {
            let dir = settings.sendmail_queue.clone();
            tokio::task::spawn_blocking(move || sendmail_list(&dir))
                .await
                .map_err(|e| e.to_string())?
        }
    }
}

/// One held message, if it is (still) held.
pub async fn find(settings: &ConsoleSettings, id: &str) -> Result<Option<Queued>, String> {
    Ok(list(settings).await?.into_iter().find(|q| q.id == id))
}

/// The held messages, oldest first (through the helper when there is one).
pub async fn list(settings: &ConsoleSettings) -> Result<Vec<Queued>, String> {
    match &settings.queue_socket {
        Some(path) => match ask(path, &Request::List).await? {
            Reply::Held(held) => Ok(held),
            other => Err(unexpected(&other)),
        },
        None => local_list(settings).await,
    }
}

/// The message as it will leave, at most [`MAX_READ`] bytes of it.
pub async fn content(settings: &ConsoleSettings, id: &str) -> Result<Vec<u8>, String> {
    match &settings.queue_socket {
        Some(path) => match ask(path, &Request::Content { id: id.into() }).await? {
            Reply::Content(b64) => STANDARD
                .decode(b64)
                .map_err(|e| format!("the queue helper's answer: {e}")),
            other => Err(unexpected(&other)),
        },
        None => local_content(settings, id).await,
    }
}

/// Lets a held message go (it leaves at once).
pub async fn release(settings: &ConsoleSettings, id: &str) -> Result<(), String> {
    match &settings.queue_socket {
        Some(path) => done(ask(path, &Request::Release { id: id.into() }).await?),
        None => local_release(settings, id).await,
    }
}

/// Deletes a held message (only held mail is ever touched).
pub async fn delete(settings: &ConsoleSettings, id: &str) -> Result<(), String> {
    match &settings.queue_socket {
        Some(path) => done(ask(path, &Request::Delete { id: id.into() }).await?),
        None => local_delete(settings, id).await,
    }
}

/// What the console asks the queue helper (`egress-milter queue-helper`,
/// run as root on `console.queue_socket`): one JSON line each way.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    List,
    Content { id: String },
    Release { id: String },
    Delete { id: String },
}

/// The helper's answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Held(Vec<Queued>),
    /// The message, base64.
    Content(String),
    Done,
    Error(String),
}

fn unexpected(r: &Reply) -> String {
    match r {
        Reply::Error(e) => e.clone(),
        other => format!("the queue helper answered out of turn: {other:?}"),
    }
}

fn done(r: Reply) -> Result<(), String> {
    match r {
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The most a helper's answer may hold (a listing of a large hold queue,
/// a message in base64).
const MAX_ANSWER: u64 = 64 << 20;

/// One request to the helper on `path`, its answer.
async fn ask(path: &Path, request: &Request) -> Result<Reply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| {
                format!(
                    "the queue helper at {}: {e} (is egress-milter-queue.socket running? systemctl enable --now egress-milter-queue.socket)",
                    path.display()
                )
            })?;
        let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        s.write_all(&line).await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("the queue helper at {}: {e}", path.display()))?;
        serde_json::from_slice::<Reply>(&answer).map_err(|e| {
            format!(
                "the queue helper at {} gave no answer ({e}): is egress-milter-queue.socket running?",
                path.display()
            )
        })
    };
    tokio::time::timeout(COMMAND_TIMEOUT * 2, talk)
        .await
        .map_err(|_| format!("the queue helper at {}: no answer", path.display()))?
}

/// The helper's side: does `request` on this host's queue.
pub async fn answer(settings: &ConsoleSettings, request: Request) -> Reply {
    let reply = |r: Result<Reply, String>| r.unwrap_or_else(Reply::Error);
    match request {
        Request::List => reply(local_list(settings).await.map(Reply::Held)),
        Request::Content { id } => reply(
            local_content(settings, &id)
                .await
                .map(|c| Reply::Content(STANDARD.encode(c))),
        ),
        Request::Release { id } => reply(local_release(settings, &id).await.map(|()| Reply::Done)),
        Request::Delete { id } => reply(local_delete(settings, &id).await.map(|()| Reply::Done)),
    }
}

/// The message as it will leave (header and body), at most [`MAX_READ`]
/// bytes of it.
async fn local_content(settings: &ConsoleSettings, id: &str) -> Result<Vec<u8>, String> {
    if !valid_id(id) {
        return Err(format!("\"{id}\" is not a queue id"));
    }
    match settings.mta {
        ConsoleMta::Postfix => {
            let dir = config_dir(settings);
            let mut out = run(
                settings,
                &postfix_command("postcat"),
                &["-c", &dir, "-bh", "-q", id],
            )
            .await?;
            out.truncate(MAX_READ);
            Ok(out)
        }
        ConsoleMta::Sendmail => {
            let dir = settings.sendmail_queue.clone();
            let id = id.to_string();
            tokio::task::spawn_blocking(move || sendmail_content(&dir, &id))
                .await
                .map_err(|e| e.to_string())?
        }
    }
}

/// Lets a held message go (it leaves at once).
async fn local_release(settings: &ConsoleSettings, id: &str) -> Result<(), String> {
    if !valid_id(id) {
        return Err(format!("\"{id}\" is not a queue id"));
    }
    match settings.mta {
        ConsoleMta::Postfix => {
            let dir = config_dir(settings);
            let out = run(
                settings,
                &postfix_command("postsuper"),
                &["-c", &dir, "-H", id],
            )
            .await?;
            // postsuper says nothing it did on standard output; a message
            // not on hold is not an error to it: look.
            let _ = out;
            // Delivered now rather than at the next queue run.
            run(
                settings,
                &postfix_command("postqueue"),
                &["-c", &dir, "-i", id],
            )
            .await
            .map(|_| ())
        }
        ConsoleMta::Sendmail => {
            let sendmail = settings.sendmail.clone();
            // Out of the quarantine (-Q without a reason, on the
            // quarantined jobs: -qQ), then run.
            run(settings, &sendmail, &["-Q", "-qQ", &format!("-qI{id}")]).await?;
            run(settings, &sendmail, &[&format!("-qI{id}")])
                .await
                .map(|_| ())
        }
    }
}

/// Deletes a held message (only from the hold queue or the quarantine:
/// mail on its way is never touched).
async fn local_delete(settings: &ConsoleSettings, id: &str) -> Result<(), String> {
    if !valid_id(id) {
        return Err(format!("\"{id}\" is not a queue id"));
    }
    match settings.mta {
        ConsoleMta::Postfix => {
            let dir = config_dir(settings);
            run(
                settings,
                &postfix_command("postsuper"),
                &["-c", &dir, "-d", id, "hold"],
            )
            .await
            .map(|_| ())
        }
        ConsoleMta::Sendmail => {
            let dir = settings.sendmail_queue.clone();
            let id = id.to_string();
            tokio::task::spawn_blocking(move || {
                let hf = dir.join(format!("hf{id}"));
                if !hf.exists() {
                    return Err(format!("{id} is not in the quarantine"));
                }
                std::fs::remove_file(&hf).map_err(|e| format!("{}: {e}", hf.display()))?;
                for prefix in ["df", "xf"] {
                    let _ = std::fs::remove_file(dir.join(format!("{prefix}{id}")));
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}

/// Sendmail's quarantined jobs: the `hf` control files of the queue
/// directory.
fn sendmail_list(dir: &Path) -> Result<Vec<Queued>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut held = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("hf") else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        let Ok(bytes) = crate::files::read_bounded(&e.path(), MAX_READ as u64) else {
            continue;
        };
        let control = parse_control(&String::from_utf8_lossy(&bytes));
        let size = std::fs::metadata(dir.join(format!("df{id}"))).map_or(0, |m| m.len());
        held.push(Queued {
            id: id.to_string(),
            arrival: control.arrival,
            size,
            sender: control.sender,
            recipients: control.recipients,
            reason: control.reason,
        });
    }
    held.sort_by_key(|q| q.arrival);
    Ok(held)
}

/// The header lines of a Sendmail control file and its data file, as one
/// message.
fn sendmail_content(dir: &Path, id: &str) -> Result<Vec<u8>, String> {
    let hf = dir.join(format!("hf{id}"));
    let bytes = crate::files::read_bounded(&hf, MAX_READ as u64)
        .map_err(|e| format!("{id} is not in the quarantine: {e}"))?;
    let control = parse_control(&String::from_utf8_lossy(&bytes));
    let mut out = control.headers.into_bytes();
    out.extend_from_slice(b"\n");
    let df = dir.join(format!("df{id}"));
    let body = crate::files::read_bounded(&df, (MAX_READ * 64) as u64)
        .map_err(|e| format!("{}: {e}", df.display()))?;
    out.extend_from_slice(&body[..body.len().min(MAX_READ)]);
    out.truncate(MAX_READ);
    Ok(out)
}

#[derive(Default)]
struct Control {
    arrival: u64,
    sender: String,
    recipients: Vec<String>,
    reason: Option<String>,
    headers: String,
}

/// A Sendmail queue control file: `T` the arrival, `S` the sender, `R`
/// a recipient (`RFLAGS:address`), `q` the quarantine reason, `H` a header
/// (`H??flags??Name: value`, continued on lines that begin with a tab).
fn parse_control(text: &str) -> Control {
    let mut c = Control::default();
    let mut in_header = false;
    for line in text.lines() {
        if line.starts_with(['\t', ' ']) {
            if in_header {
                c.headers.push_str(line);
                c.headers.push('\n');
            }
            continue;
        }
        in_header = false;
        let Some(kind) = line.chars().next() else {
            continue;
        };
        let rest = &line[kind.len_utf8()..];
        match kind {
            'T' => c.arrival = rest.parse().unwrap_or(0),
            'S' => c.sender = rest.trim_matches(['<', '>']).to_string(),
            'R' => {
                let address = rest.split_once(':').map_or(rest, |(_, a)| a);
                c.recipients
                    .push(address.trim_matches(['<', '>']).to_string());
            }
            'q' => c.reason = Some(rest.to_string()),
            'H' => {
                // H?flags?Name: value
                let header = match rest.strip_prefix('?') {
                    Some(r) => r.split_once('?').map_or(r, |(_, h)| h),
                    None => rest,
                };
                c.headers.push_str(header);
                c.headers.push('\n');
                in_header = true;
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sendmail_control_file_is_read() {
        let c = parse_control(
            "V8\nT1764921600\nK0\nqheld by egress-milter: incident sender:a@x.test\nS<a@x.test>\nRPFD:<b@y.test>\nrRFC822; b@y.test\nH??Received: from x\n\tby y\nH?F?From: A <a@x.test>\nH??Subject: hi\n.\n",
        );
        assert_eq!(c.arrival, 1764921600);
        assert_eq!(c.sender, "a@x.test");
        assert_eq!(c.recipients, ["b@y.test"]);
        assert_eq!(
            c.reason.as_deref(),
            Some("held by egress-milter: incident sender:a@x.test")
        );
        assert_eq!(
            c.headers,
            "Received: from x\n\tby y\nFrom: A <a@x.test>\nSubject: hi\n"
        );
    }

    #[test]
    fn queue_ids_are_letters_and_digits() {
        assert!(valid_id("4dQx3b1vZ2z9yR"));
        assert!(valid_id("5B3AB1FA2E"));
        assert!(!valid_id("-d ALL"));
        assert!(!valid_id("../../x"));
        assert!(!valid_id("ALL;"));
    }
}
