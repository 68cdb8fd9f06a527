//! `incidents list|show|open|close`: the open incidents, one in full,
//! one opened or closed by hand.

use super::Answer;
use crate::address::Address;
use crate::config::{IncidentAction, KeyKind};
use crate::incidents::{now_ms, rfc3339, sendmail_release, Incident};
use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::{fmt::Write as _, net::IpAddr};

/// An `incidents` request. KEY is `KIND:KEY` (client, user, sender,
/// class), or the key alone when one open incident has it.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incidents {
    /// The open incidents, one a line.
    List,
    /// One incident: its figures, what it held, how to release it.
    Show { key: String },
    /// Mail from the key goes through again.
    Close { key: String },
    /// Opened by hand, for `duration` (default `incidents.block_for`)
    /// with `action` (default `incidents.action`), as the operator wrote
    /// them.
    Open {
        key: String,
        duration: Option<String>,
        action: Option<String>,
    },
}

/// `kind:key`, or a bare key: an IP (or an IPv6 network) is a client;
/// anything else must match one open incident's key. Keys are spelt as the
/// daemon counts them (`rate_limits.keys`, `incidents.ipv6_prefix`), so
/// `user:Walt` is the incident of `walt` and `sender:boss+1@x` that of
/// `boss@x`.
async fn incident_key(
    shared: &Shared,
    text: &str,
    open: bool,
) -> Result<(KeyKind, String), String> {
    let config = shared.config();
    let keys = &config.rate_limits.keys;
    let client = |key: &str| -> Result<String, String> {
        let ip = match (key.parse::<IpAddr>(), key.parse::<ipnet::IpNet>()) {
            (Ok(ip), _) => ip,
            (_, Ok(net)) => net.network(),
            _ => return Err(format!("\"{key}\" is not an IP address or network")),
        };
        Ok(crate::address::client_key(ip, config.incidents.ipv6_prefix))
    };
    if let Some((kind, key)) = text.split_once(':') {
        if let Some(kind) = KeyKind::parse(kind) {
            let key = match kind {
                KeyKind::Client => client(key)?,
                KeyKind::Sender => Address::parse(key)
                    .map(|a| keys.address(&a))
                    .map_err(|_| format!("\"{key}\" is not an address"))?,
                KeyKind::User => keys.login(key),
                KeyKind::Class => key.to_string(),
            };
            return Ok((kind, key));
        }
    }
    if let Ok(key) = client(text) {
        return Ok((KeyKind::Client, key));
    }
    if !open {
        let login = keys.login(text);
        let address = Address::parse(text).ok().map(|a| keys.address(&a));
        let matching: Vec<Incident> = shared
            .incidents
            .list(shared.limiter.redis.as_ref(), now_ms())
            .await
            .into_iter()
            .filter(|i| {
                i.key == text
                    || (i.kind == KeyKind::User && i.key == login)
                    || (i.kind == KeyKind::Sender && address.as_deref() == Some(i.key.as_str()))
                    || (i.kind == KeyKind::Class && i.key.eq_ignore_ascii_case(text))
            })
            .collect();
        if let [one] = matching.as_slice() {
            return Ok((one.kind, one.key.clone()));
        }
    }
    Err(format!(
        "give the key as KIND:KEY (KIND is client, user, sender or class), e.g. user:{text}"
    ))
}

pub(super) async fn answer(shared: &Shared, request: Incidents) -> Answer {
    let redis = shared.limiter.redis.as_ref();
    let config = shared.config();
    let settings = &config.incidents;
    let now = now_ms();
    match request {
        Incidents::List => {
            let open = shared.incidents.list(redis, now).await;
            if open.is_empty() {
                return Answer::Ok("no open incident\n".into());
            }
            let mut out = format!(
                "{:<40} {:<16} {:<9} {:>8} {:>6}  {}\n",
                "incident", "signal", "action", "messages", "held", "until"
            );
            for i in open {
                let action = if i.monitor {
                    format!("{}*", i.action.as_str())
                } else {
                    i.action.as_str().to_string()
                };
                let _ = writeln!(
                    out,
                    "{:<40} {:<16} {:<9} {:>8} {:>6}  {}",
                    i.name(),
                    i.signal,
                    action,
                    i.messages,
                    i.held.len(),
                    rfc3339(i.until)
                );
            }
            Answer::Ok(out)
        }
        Incidents::Show { key: k } => match incident_key(shared, &k, false).await {
            Ok((kind, key)) => {
                let found = shared
                    .incidents
                    .list(redis, now)
                    .await
                    .into_iter()
                    .find(|i| i.kind == kind && i.key == key);
                match found {
                    Some(i) => Answer::Ok(show(&i)),
                    None => Answer::error(format!("no open incident for {}:{key}", kind.as_str())),
                }
            }
            Err(e) => Answer::error(e),
        },
        Incidents::Close { key: k } => match incident_key(shared, &k, false).await {
            Ok((kind, key)) => match shared.incidents.close(redis, kind, &key, settings).await {
                Some(i) => {
                    let mut out = format!("closed {}: mail from it goes through again\n", i.name());
                    if !i.held.is_empty() {
                        let _ = write!(
                            out,
                            "held meanwhile: {}\nrelease with:  postsuper -H {}\n       or:     {}\n",
                            i.held.join(" "),
                            i.held.join(" "),
                            sendmail_release(&i.held)
                        );
                    }
                    Answer::Ok(out)
                }
                None => Answer::error(format!("no open incident for {}:{key}", kind.as_str())),
            },
            Err(e) => Answer::error(e),
        },
        Incidents::Open {
            key: k,
            duration: given_duration,
            action: given_action,
        } => {
            let (kind, key) = match incident_key(shared, &k, true).await {
                Ok(k) => k,
                Err(e) => return Answer::error(e),
            };
            let duration = match given_duration.as_deref().map(crate::config::parse_duration) {
                None => settings.block_for,
                Some(Some(d)) if !d.is_zero() => d,
                Some(_) => {
                    return Answer::error(format!(
                        "invalid duration \"{}\" (e.g. 30m, 2h)",
                        given_duration.unwrap_or_default()
                    ))
                }
            };
            let action = match given_action.as_deref().map(IncidentAction::parse) {
                None => None,
                Some(Some(a)) => Some(a),
                Some(None) => {
                    return Answer::error(format!(
                        "invalid action \"{}\" (hold, tempfail, reject or monitor)",
                        given_action.unwrap_or_default()
                    ))
                }
            };
            let before = shared
                .incidents
                .find(redis, now, &crate::incidents::keys_of(kind, &key))
                .await;
            let i = shared
                .incidents
                .open_by_hand(redis, kind, &key, duration, action, settings)
                .await;
            let said = match &before {
                None => "opened".to_string(),
                Some(b) if b.action != i.action => {
                    format!("action changed from {} on", b.action.as_str())
                }
                Some(_) => "already open".to_string(),
            };
            Answer::Ok(format!(
                "{said} {}: {} until {}\n",
                i.name(),
                i.action.as_str(),
                rfc3339(i.until)
            ))
        }
    }
}

fn show(i: &Incident) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "incident  {}", i.name());
    let _ = writeln!(out, "signal    {}", i.signal);
    let _ = writeln!(out, "figures   {}", i.figures);
    let _ = writeln!(
        out,
        "action    {}{}",
        i.action.as_str(),
        if i.monitor {
            " (monitor mode: nothing held)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "opened    {}", rfc3339(i.opened));
    let _ = writeln!(out, "until     {}", rfc3339(i.until));
    let _ = writeln!(out, "messages  {}", i.messages);
    if !i.earlier.is_empty() {
        let _ = writeln!(
            out,
            "earlier   {}  (accepted in the window before it opened)",
            i.earlier.join(" ")
        );
    }
    if i.held.is_empty() {
        let _ = writeln!(out, "held      none");
    } else {
        let _ = writeln!(out, "held      {}", i.held.join(" "));
        let _ = writeln!(out, "release   postsuper -H {}", i.held.join(" "));
        let _ = writeln!(out, "          {}  (Sendmail)", sendmail_release(&i.held));
    }
    out
}
