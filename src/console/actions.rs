//! What an administrator may do from the console or a link: release or
//! delete held mail (one message, or all of an incident's), close or
//! reopen an incident, reset a limit key, remove a suppression. Held mail
//! is acted on through the MTA only; the rest through the same requests
//! the admin commands send. Every action goes to the audit log.

use super::pages::{self, Page};
use super::{auth, queue, App, AuditEntry};
use crate::admin::{self, Answer, Request};
use crate::links;
use crate::state::Shared;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use std::sync::Arc;

/// The actions, as forms and links name them.
pub const ACTIONS: &[&str] = &[
    "release",
    "delete",
    "close",
    "reopen",
    "reset",
    "unsuppress",
];

#[derive(Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
}

/// The held messages a target names: `message:ID`, or `incident:KIND:KEY`
/// (those noted for it, and those of its record, still on hold).
async fn held_of(shared: &Shared, target: &str) -> Result<Vec<queue::Queued>, String> {
    let config = shared.config();
    let settings = config
        .console
        .as_ref()
        .ok_or("the console is not configured")?;
    let held = queue::list(settings).await?;
    if let Some(id) = target.strip_prefix("message:") {
        return match held.into_iter().find(|q| q.id == id) {
            Some(q) => Ok(vec![q]),
            None => Err(format!("{id} is not held (released or deleted already?)")),
        };
    }
    let Some(key) = target.strip_prefix("incident:") else {
        return Err(format!("\"{target}\" names no held mail"));
    };
    let ids = pages::incident_held_ids(shared, key).await;
    Ok(held.into_iter().filter(|q| ids.contains(&q.id)).collect())
}

/// Does `action` on `target` as `user`; what was done, or why not.
pub async fn perform(shared: &Shared, action: &str, target: &str) -> Result<String, String> {
    let config = shared.config();
    let settings = config
        .console
        .as_ref()
        .ok_or("the console is not configured")?;
    let ask = |request: Request| async move {
        match admin::answer(shared, request).await {
            Answer::Ok(text) => Ok(text.trim_end().to_string()),
            Answer::Error(e) => Err(e),
        }
    };
    let key = |prefix: &str| {
        target
            .strip_prefix(prefix)
            .map(str::to_string)
            .ok_or_else(|| format!("\"{target}\" is not a {}", prefix.trim_end_matches(':')))
    };
    match action {
        "release" | "delete" => {
            let held = held_of(shared, target).await?;
            if held.is_empty() {
                return Err(format!("{target}: no message of it is held"));
            }
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for q in &held {
                let r = if action == "release" {
                    queue::release(settings, &q.id).await
                } else {
                    queue::delete(settings, &q.id).await
                };
                match r {
                    Ok(()) => done.push(q.id.clone()),
                    Err(e) => failed.push(e),
                }
            }
            let verb = if action == "release" {
                "released"
            } else {
                "deleted"
            };
            if failed.is_empty() {
                Ok(format!("{verb} {}", done.join(" ")))
            } else if done.is_empty() {
                Err(failed.join("; "))
            } else {
                Err(format!(
                    "{verb} {}; failed: {}",
                    done.join(" "),
                    failed.join("; ")
                ))
            }
        }
        "close" => {
            ask(Request::Incidents(admin::Incidents::Close {
                key: key("incident:")?,
            }))
            .await
        }
        "reopen" => {
            ask(Request::Incidents(admin::Incidents::Open {
                key: key("incident:")?,
                duration: None,
                action: None,
            }))
            .await
        }
        "reset" => {
            let rest = key("limit:")?;
            let (limit, k) = rest
                .split_once(':')
                .ok_or_else(|| format!("\"{target}\" is not limit:NAME:KEY"))?;
            ask(Request::Limits(admin::Limits::Reset {
                key: k.to_string(),
                limit: Some(limit.to_string()),
            }))
            .await
        }
        "unsuppress" => {
            ask(Request::Suppressions(admin::Suppressions::Remove {
                address: key("address:")?,
            }))
            .await
        }
        _ => Err(format!("no action \"{action}\"")),
    }
}

/// Does it, counts it and writes it in the audit log.
async fn audited(app: &App, user: &str, action: &str, target: &str) -> Result<String, String> {
    let result = perform(&app.shared, action, target).await;
    if let Some(a) = ACTIONS.iter().find(|a| **a == action) {
        app.shared.metrics.console_action(a);
    }
    app.audit.record(AuditEntry {
        at: crate::incidents::now_ms() / 1000,
        user: user.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        result: match &result {
            Ok(done) => format!("ok: {done}"),
            Err(e) => format!("failed: {e}"),
        },
    });
    result
}

/// Where to go back to after an action on `target`.
fn back(target: &str) -> String {
    match target.split_once(':') {
        Some(("message", _)) => "/held".into(),
        Some(("incident", key)) => format!("/incident?key={}", pages::query_escape(key)),
        Some(("limit", _)) => "/limits".into(),
        Some(("address", _)) => "/suppressions".into(),
        _ => "/".into(),
    }
}

/// `POST /act`: an admin's action, with the session's CSRF token.
pub async fn act(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Form(form): Form<ActForm>,
) -> Response {
    let me = match pages::me(&app, &jar) {
        Some(me) => me,
        None => return pages::refused(403, "log in first"),
    };
    if !auth::same(&form.csrf, &me.csrf) {
        return pages::refused(403, "this form is stale or was not made by the console (no valid CSRF token); reload the page and try again");
    }
    if me.role != crate::users::Role::Admin {
        return pages::refused(403, "viewers may look, not act");
    }
    if !ACTIONS.contains(&form.action.as_str()) {
        return pages::refused(400, "no such action");
    }
    let result = audited(&app, &me.user, &form.action, &form.target).await;
    pages::render(Page::Done(pages::Done {
        me: Some(me),
        action: form.action.clone(),
        target: form.target.clone(),
        result,
        back: back(&form.target),
    }))
}

fn link_secret(shared: &Shared) -> Option<Vec<u8>> {
    shared.config().console.as_ref()?.link_secret.clone()
}

/// Opens a link, or the page that says why it cannot be used.
fn open_link(app: &App, token: &str) -> Result<links::Link, (u16, String)> {
    let now = crate::incidents::now_ms() / 1000;
    let secret = link_secret(&app.shared).ok_or((404, "links are off".to_string()))?;
    let link = links::open(&secret, token, now).map_err(|e| (403, e.to_string()))?;
    if app.used_links.was_used(&link) {
        return Err((403, links::Refused::Used.to_string()));
    }
    if !matches!(link.action.as_str(), "release" | "delete") {
        return Err((403, links::Refused::Forged.to_string()));
    }
    Ok(link)
}

/// `GET /l/TOKEN`: what the link will do, and the button that does it.
pub async fn link_form(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let shared = &app.shared;
    let link = match open_link(&app, &token) {
        Ok(l) => l,
        Err((status, why)) => return pages::refused(status, &why),
    };
    // Links name incidents: their held mail, with why each was held.
    let held = match link.target.strip_prefix("incident:") {
        Some(key) => super::rows::held_rows(shared, Some(key)).await,
        None => Err(format!("\"{}\" names no incident", link.target)),
    };
    pages::render(Page::Link(pages::LinkPage {
        me: None,
        action: link.action,
        target: link.target,
        held,
        token,
    }))
}

/// `POST /l/TOKEN`: does it, once.
pub async fn link_act(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let link = match open_link(&app, &token) {
        Ok(l) => l,
        Err((status, why)) => return pages::refused(status, &why),
    };
    if !app
        .used_links
        .take(&link, crate::incidents::now_ms() / 1000)
    {
        return pages::refused(403, &links::Refused::Used.to_string());
    }
    let result = audited(&app, "link", &link.action, &link.target).await;
    pages::render(Page::Done(pages::Done {
        me: None,
        action: link.action,
        target: link.target,
        result,
        back: String::new(),
    }))
    .into_response()
}
