//! The console's pages: rendered on the server from `templates/console/`
//! (every field escaped by the template engine), no script. A page needs
//! a session; a viewer sees every page and no buttons.

use super::auth::{self, COOKIE};
use super::rows::{HeldRow, IncidentRow};
use super::App;
use crate::incidents::now_ms;
use crate::users::{Role, Users};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use std::sync::Arc;

pub use super::rows::{incident_held_ids, query_escape, when, LimitRow};

/// The user of a request, with the CSRF token its forms carry.
#[derive(Clone, Debug)]
pub struct Me {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

impl Me {
    pub fn admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The session of the request's cookie, if it is one and its user is
/// still in the users file with the same role (a removed or demoted user
/// is out at the next request).
pub fn me(app: &App, jar: &CookieJar) -> Option<Me> {
    let shared = &app.shared;
    let token = jar.get(COOKIE)?.value().to_string();
    let session = app.sessions.get(&token)?;
    let config = shared.config();
    let users = Users::read(&config.console.as_ref()?.users_file).ok()?;
    match users.find(&session.user) {
        Some(u) if u.role == session.role => Some(Me {
            user: session.user,
            role: session.role,
            csrf: session.csrf,
        }),
        _ => {
            app.sessions.end_user(&session.user);
            None
        }
    }
}

/// Every page.
pub enum Page {
    Login(Login),
    Incidents(Incidents),
    Incident(IncidentPage),
    Held(Held),
    Message(Message),
    Limits(Limits),
    Text(TextPage),
    Suppressions(Suppressions),
    Decisions(Decisions),
    Audit(Audit),
    Done(Done),
    Link(LinkPage),
    Refused(Refused),
}

pub fn render(page: Page) -> Response {
    let (status, html) = match page {
        Page::Login(p) => (StatusCode::OK, p.render()),
        Page::Incidents(p) => (StatusCode::OK, p.render()),
        Page::Incident(p) => (StatusCode::OK, p.render()),
        Page::Held(p) => (StatusCode::OK, p.render()),
        Page::Message(p) => (StatusCode::OK, p.render()),
        Page::Limits(p) => (StatusCode::OK, p.render()),
        Page::Text(p) => (StatusCode::OK, p.render()),
        Page::Suppressions(p) => (StatusCode::OK, p.render()),
        Page::Decisions(p) => (StatusCode::OK, p.render()),
        Page::Audit(p) => (StatusCode::OK, p.render()),
        Page::Done(p) => (
            if p.result.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            },
            p.render(),
        ),
        Page::Link(p) => (StatusCode::OK, p.render()),
        Page::Refused(p) => (
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::FORBIDDEN),
            p.render(),
        ),
    };
    match html {
        Ok(h) => (status, Html(h)).into_response(),
        Err(e) => {
            tracing::error!(target: "egress_milter::console", "a page could not be rendered: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A refusal page with `status`.
pub fn refused(status: u16, why: &str) -> Response {
    render(Page::Refused(Refused {
        me: None,
        status,
        why: why.to_string(),
    }))
}

/// Every page but the login's: its session, or the way to the login.
fn page(app: &App, jar: &CookieJar) -> Result<Me, Redirect> {
    me(app, jar).ok_or_else(|| Redirect::to("/login"))
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct Login {
    pub me: Option<Me>,
    pub token: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/incidents.html")]
pub struct Incidents {
    pub me: Option<Me>,
    pub open: Vec<IncidentRow>,
    pub closed: Vec<IncidentRow>,
}

#[derive(Template)]
#[template(path = "console/incident.html")]
pub struct IncidentPage {
    pub me: Option<Me>,
    pub key: String,
    pub row: Option<IncidentRow>,
    pub held: Vec<HeldRow>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/held.html")]
pub struct Held {
    pub me: Option<Me>,
    pub rows: Vec<HeldRow>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub struct Message {
    pub me: Option<Me>,
    pub row: HeldRow,
    pub preview: super::preview::Preview,
}

#[derive(Template)]
#[template(path = "console/limits.html")]
pub struct Limits {
    pub me: Option<Me>,
    pub rows: Vec<LimitRow>,
}

#[derive(Template)]
#[template(path = "console/text.html")]
pub struct TextPage {
    pub me: Option<Me>,
    pub title: String,
    pub text: String,
}

pub struct SuppressionRow {
    pub address: String,
    pub status: String,
    pub hard: u32,
    pub first: String,
    pub last: String,
    pub until: String,
}

#[derive(Template)]
#[template(path = "console/suppressions.html")]
pub struct Suppressions {
    pub me: Option<Me>,
    pub rows: Vec<SuppressionRow>,
    pub off: bool,
}

#[derive(Template)]
#[template(path = "console/decisions.html")]
pub struct Decisions {
    pub me: Option<Me>,
    pub q: String,
    pub rows: Vec<crate::history::DecisionLine>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct Audit {
    pub me: Option<Me>,
    pub rows: Vec<super::AuditEntry>,
}

#[derive(Template)]
#[template(path = "console/done.html")]
pub struct Done {
    pub me: Option<Me>,
    pub action: String,
    pub target: String,
    pub result: Result<String, String>,
    pub back: String,
}

#[derive(Template)]
#[template(path = "console/link.html")]
pub struct LinkPage {
    pub me: Option<Me>,
    pub action: String,
    pub target: String,
    pub held: Result<Vec<HeldRow>, String>,
    pub token: String,
}

#[derive(Template)]
#[template(path = "console/refused.html")]
pub struct Refused {
    pub me: Option<Me>,
    pub status: u16,
    pub why: String,
}

pub async fn home(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    match page(&app, &jar) {
        Ok(_) => Redirect::to("/incidents").into_response(),
        Err(r) => r.into_response(),
    }
}

pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console/style.css"),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    refused(404, "no such page")
}

pub async fn login_form(State(app): State<Arc<App>>) -> Response {
    render(Page::Login(Login {
        me: None,
        token: app.sessions.login_token(now_ms() / 1000),
        error: None,
    }))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

pub async fn login(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let shared = &app.shared;
    let now = now_ms() / 1000;
    let sessions = &app.sessions;
    let again = |status: StatusCode, error: &str| {
        let mut r = render(Page::Login(Login {
            me: None,
            token: sessions.login_token(now),
            error: Some(error.to_string()),
        }));
        *r.status_mut() = status;
        r
    };
    if !sessions.login_token_ok(&form.token, now) {
        return again(
            StatusCode::FORBIDDEN,
            "the login form was stale or not the console's; try again",
        );
    }
    if !sessions.may_try(&form.user) {
        tracing::warn!(target: "egress_milter::console", user = %form.user.escape_debug(), "console login refused: too many attempts");
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts; wait a minute",
        );
    }
    let config = shared.config();
    let Some(settings) = config.console.as_ref() else {
        return refused(404, "the console is off");
    };
    let users = match Users::read(&settings.users_file) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(target: "egress_milter::console", "{e}");
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                "the users file cannot be read; see the log",
            );
        }
    };
    let user = users.find(&form.user).cloned();
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || match &user {
        Some(u) => u.verify(&password).then_some(u.role),
        None => {
            crate::users::verify_nobody(&password);
            None
        }
    })
    .await
    .ok()
    .flatten();
    let Some(role) = verified else {
        tracing::warn!(target: "egress_milter::console", user = %form.user.escape_debug(), "console login failed");
        return again(StatusCode::UNAUTHORIZED, "wrong user name or password");
    };
    tracing::info!(target: "egress_milter::console", user = %form.user, role = role.as_str(), "console login");
    let token = sessions.start(&form.user, role);
    let cookie = Cookie::build((COOKIE, token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .build();
    (jar.add(cookie), Redirect::to("/incidents")).into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(me) = me(&app, &jar) else {
        return Redirect::to("/login").into_response();
    };
    if !auth::same(&form.csrf, &me.csrf) {
        return refused(403, "no valid CSRF token");
    }
    if let Some(c) = jar.get(COOKIE) {
        app.sessions.end(c.value());
    }
    let gone = Cookie::build((COOKIE, "")).path("/").build();
    (jar.remove(gone), Redirect::to("/login")).into_response()
}

pub async fn incidents(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let open = shared
        .incidents
        .list(shared.limiter.redis.as_ref(), now_ms())
        .await;
    let closed = shared.incidents.recently_closed();
    render(Page::Incidents(Incidents {
        me: Some(me),
        open: open.iter().map(|i| IncidentRow::of(i, None)).collect(),
        closed: closed
            .iter()
            .map(|(i, at, why)| IncidentRow::of(i, Some((*at, why))))
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct KeyQuery {
    #[serde(default)]
    key: String,
}

pub async fn incident(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Query(q): Query<KeyQuery>,
) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let row = super::rows::find_incident(shared, &q.key).await;
    let (held, error) = match super::rows::held_rows(shared, Some(&q.key)).await {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    render(Page::Incident(IncidentPage {
        me: Some(me),
        key: q.key,
        row,
        held,
        error,
    }))
}

pub async fn held(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let (rows, error) = match super::rows::held_rows(shared, None).await {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    render(Page::Held(Held {
        me: Some(me),
        rows,
        error,
    }))
}

pub async fn message(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Path(id): Path<String>,
) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match super::rows::message(shared, &id).await {
        Ok(Some((row, preview))) => render(Page::Message(Message {
            me: Some(me),
            row,
            preview,
        })),
        Ok(None) => refused(404, "no such held message (released or deleted?)"),
        Err(e) => refused(502, &e),
    }
}

pub async fn limits(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let rows = super::rows::limit_rows(shared).await;
    render(Page::Limits(Limits { me: Some(me), rows }))
}

pub async fn reputation(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let text = match crate::admin::answer(
        shared,
        crate::admin::Request::Reputation(crate::admin::Reputation { check: false }),
    )
    .await
    {
        crate::admin::Answer::Ok(t) | crate::admin::Answer::Error(t) => t,
    };
    render(Page::Text(TextPage {
        me: Some(me),
        title: "Reputation".into(),
        text,
    }))
}

pub async fn suppressions(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let off = shared.config().bounces.is_none();
    let rows = shared
        .suppressions
        .list(now_ms() / 1000)
        .into_iter()
        .map(|(address, e)| SuppressionRow {
            address,
            status: e.status,
            hard: e.hard,
            first: when(e.first),
            last: when(e.last),
            until: when(e.until),
        })
        .collect();
    render(Page::Suppressions(Suppressions {
        me: Some(me),
        rows,
        off,
    }))
}

#[derive(Deserialize)]
pub struct FilterQuery {
    #[serde(default)]
    q: String,
}

pub async fn decisions(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Query(f): Query<FilterQuery>,
) -> Response {
    let shared = &app.shared;
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let q: String = f.q.chars().take(200).collect();
    let rows = shared.history.decisions(&q, 500);
    render(Page::Decisions(Decisions {
        me: Some(me),
        q,
        rows,
    }))
}

pub async fn audit(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let me = match page(&app, &jar) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    render(Page::Audit(Audit {
        me: Some(me),
        rows: app.audit.recent(500),
    }))
}
