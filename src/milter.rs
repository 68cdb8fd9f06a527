//! indymilter callbacks. They never decide: each turns a milter call into a
//! `Connection` method and its `Answer` into a milter status and reply. A
//! panic inside a stage is caught and answered as `on_error` says, so one
//! connection's bug never takes the daemon down nor leaves the MTA waiting.
//!
//! When the MTA offers it (Postfix, Sendmail 8.14 and later do), headers
//! and HELO are taken without an answer to each: that saves the MTA one
//! round trip per header. A refusal decided on a header (the message grew
//! past `max_message_size`) is then given at end of headers.

use crate::session::{Answer, Connection, HeaderAction, Macros, Stage};
use crate::state::Shared;
use futures_util::FutureExt;
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use std::{
    ffi::{CStr, CString},
    net::IpAddr,
    panic::AssertUnwindSafe,
    sync::Arc,
};
use tracing::{error, warn};

/// The macros requested from the MTA, by stage. Postfix sends those named in
/// its `milter_*_macros` settings and those a milter asks for here.
const MACROS: &[(MacroStage, &str)] = &[
    (
        MacroStage::Connect,
        // {daemon_port}: this list replaces main.cf's for this milter, and
        // the port is what tells submission (587) from relay (25).
        "j {daemon_name} {daemon_addr} {daemon_port} {client_addr}",
    ),
    (MacroStage::Mail, "i {auth_authen} {auth_type} {mail_addr}"),
    (MacroStage::Rcpt, "i {rcpt_addr} {rcpt_mailer}"),
    (MacroStage::Eoh, "i"),
    (MacroStage::Eom, "i"),
];

/// One milter session: what the MTA agreed to at negotiation, and the SMTP
/// connection once the MTA has sent it.
pub struct Session {
    conn: Option<Connection>,
    /// HELO comes without waiting for an answer (SMFIP_NR_HELO).
    quiet_helo: bool,
    /// Headers come without waiting for an answer (SMFIP_NR_HDR).
    quiet_headers: bool,
    /// A refusal decided on a header, given at end of headers.
    deferred: Option<Answer>,
}

impl Session {
    fn new(quiet: ProtoOpts) -> Self {
        Session {
            conn: None,
            quiet_helo: quiet.contains(ProtoOpts::NOREPLY_HELO),
            quiet_headers: quiet.contains(ProtoOpts::NOREPLY_HEADER),
            deferred: None,
        }
    }
}

/// The answers egress-milter can do without: it never refuses at HELO, and
/// a refusal on a header can wait for end of headers.
const NO_REPLY: ProtoOpts = ProtoOpts::NOREPLY_HELO.union(ProtoOpts::NOREPLY_HEADER);

pub fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    let on_connect = shared.clone();
    Callbacks::new()
        .on_negotiate(|cx, _, offered| Box::pin(handle_negotiate(cx, offered)))
        .on_connect(move |cx, hostname, socket| {
            let shared = on_connect.clone();
            Box::pin(handle_connect(cx, shared, hostname, socket))
        })
        .on_unexpected(move |cx, command| {
            let shared = shared.clone();
            Box::pin(handle_unexpected(cx, shared, command))
        })
        .on_helo(|cx, name| Box::pin(handle_helo(cx, name)))
        .on_mail(|cx, args| Box::pin(handle_mail(cx, args)))
        .on_rcpt(|cx, args| Box::pin(handle_rcpt(cx, args)))
        .on_header(|cx, name, value| Box::pin(handle_header(cx, name, value)))
        .on_eoh(|cx| Box::pin(handle_eoh(cx)))
        .on_body(|cx, chunk| Box::pin(handle_body(cx, chunk)))
        .on_eom(|cx| Box::pin(handle_eom(cx)))
        .on_abort(|cx| Box::pin(handle_abort(cx)))
        .on_close(|cx| Box::pin(handle_close(cx)))
}

async fn handle_negotiate(cx: &mut NegotiateContext<Session>, offered: ProtoOpts) -> Status {
    // DKIM-Signature and X-Egress-* headers are added, Received: lines and
    // configured headers changed or removed, at end of message.
    // A message from a key with an open incident is held (quarantined).
    cx.requested_actions |= Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::QUARANTINE;
    // Only what the MTA offers: indymilter does not fake the others.
    let quiet = offered & NO_REPLY;
    cx.requested_opts |= quiet;
    // Recipients the MTA itself rejects are evidence for the incident
    // signals (`mta_rejected_recipients`), when the MTA can send them.
    cx.requested_opts |= offered & ProtoOpts::REJECTED_RCPT;
    cx.data = Some(Session::new(quiet));
    for (stage, names) in MACROS {
        if let Ok(names) = CString::new(*names) {
            cx.requested_macros.insert(*stage, names);
        }
    }
    Status::Continue
}

async fn handle_connect(
    cx: &mut Context<Session>,
    shared: Arc<Shared>,
    hostname: CString,
    socket: SocketInfo,
) -> Status {
    let ip: Option<IpAddr> = match socket {
        SocketInfo::Inet(addr) => Some(addr.ip()),
        _ => None,
    };
    let mut conn = Connection::new(shared, hostname.to_string_lossy().into_owned(), ip);
    // Which of the MTA's listeners took the connection (port 25, the
    // submission port 587...).
    let get = |m: &CStr| cx.macros.get(m).map(|v| v.to_string_lossy().into_owned());
    conn.daemon = match (get(c"{daemon_addr}"), get(c"{daemon_port}")) {
        (Some(addr), Some(port)) => Some(format!("{addr}:{port}")),
        (addr, port) => addr.or(port),
    };
    let answer = guarded!(&mut conn, Stage::Connect, |c| c.connect().await);
    // A second connect on one session (not sent by Postfix nor Sendmail)
    // starts it afresh.
    let session = cx
        .data
        .get_or_insert_with(|| Session::new(ProtoOpts::empty()));
    session.deferred = None;
    session.conn = Some(conn);
    reply(&mut cx.reply, answer)
}

async fn handle_helo(cx: &mut Context<Session>, name: CString) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    if let Some(conn) = session.conn.as_mut() {
        conn.helo(&name.to_string_lossy());
    }
    // HELO is never refused here (the sender's checks come at MAIL FROM);
    // when the MTA agreed to send it without waiting, no answer is due.
    if session.quiet_helo {
        Status::Noreply
    } else {
        Status::Continue
    }
}

async fn handle_mail(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let macros = macros(&cx.macros);
    let sender = args.first().map(|a| a.as_bytes()).unwrap_or_default();
    stage!(cx, Stage::Mail, |conn| conn.mail(sender, &macros).await)
}

async fn handle_rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let macros = macros(&cx.macros);
    let rcpt = args.first().map(|a| a.as_bytes()).unwrap_or_default();
    stage!(cx, Stage::Rcpt, |conn| conn.rcpt(rcpt, &macros).await)
}

async fn handle_header(cx: &mut Context<Session>, name: CString, value: CString) -> Status {
    let quiet = cx.data.as_ref().is_some_and(|s| s.quiet_headers);
    if !quiet {
        return stage!(cx, Stage::Header, |conn| conn
            .header(name.as_bytes(), value.as_bytes()));
    }
    if let Some(session) = cx.data.as_mut() {
        if let Some(conn) = session.conn.as_mut() {
            let answer = guarded!(conn, Stage::Header, |c| c
                .header(name.as_bytes(), value.as_bytes()));
            if matches!(answer, Answer::Refuse(_)) && session.deferred.is_none() {
                session.deferred = Some(answer);
            }
        }
    }
    Status::Noreply
}

async fn handle_eoh(cx: &mut Context<Session>) -> Status {
    if let Some(answer) = cx.data.as_mut().and_then(|s| s.deferred.take()) {
        return reply(&mut cx.reply, answer);
    }
    let macros = macros(&cx.macros);
    stage!(cx, Stage::Eoh, |conn| conn.end_of_headers(&macros).await)
}

async fn handle_eom(cx: &mut EomContext<Session>) -> Status {
    let macros = macros(&cx.macros);
    let EomContext {
        data,
        actions,
        reply: smtp,
        ..
    } = cx;
    let Some(conn) = data.as_mut().and_then(|s| s.conn.as_mut()) else {
        return Status::Continue;
    };
    let answer = guarded!(conn, Stage::Eom, |c| {
        let (mut answer, edits) = c.end_of_message(&macros).await;
        for edit in edits {
            let result = match &edit {
                // Index 0: above every header, where a receiver looks first.
                HeaderAction::Insert { name, value } => {
                    actions.insert_header(0, *name, value.as_str()).await
                }
                HeaderAction::Change(e) => {
                    let index = i32::try_from(e.index).unwrap_or(i32::MAX);
                    actions
                        .change_header(e.name.as_str(), index, e.value.as_deref())
                        .await
                }
                HeaderAction::Quarantine(reason) => actions.quarantine(reason.as_str()).await,
            };
            if let Err(e) = result {
                error!(conn_id = c.id, "cannot apply {edit:?}: {e}");
                answer = c.internal_error(Stage::Eom);
                break;
            }
        }
        answer
    });
    reply(smtp, answer)
}

async fn handle_body(cx: &mut Context<Session>, chunk: bytes::Bytes) -> Status {
    stage!(cx, Stage::Body, |conn| conn.body(chunk.clone()))
}

/// A command out of order (a header after the body, a recipient before the
/// sender): the library hands it to no stage, but the MTA awaits an answer,
/// which `on_error` gives.
async fn handle_unexpected(
    cx: &mut Context<Session>,
    shared: Arc<Shared>,
    command: &'static str,
) -> Status {
    match cx.data.as_mut().and_then(|s| s.conn.as_mut()) {
        Some(conn) => {
            let answer = conn.out_of_order(command);
            reply(&mut cx.reply, answer)
        }
        None => {
            warn!(
                command,
                "MTA sent a milter command out of order, before connect"
            );
            match shared.config().on_error {
                crate::config::OnError::Accept => Status::Continue,
                crate::config::OnError::Tempfail => reply(
                    &mut cx.reply,
                    Answer::Refuse(crate::reply::out_of_order().reply),
                ),
            }
        }
    }
}

async fn handle_abort(cx: &mut Context<Session>) -> Status {
    if let Some(s) = cx.data.as_mut() {
        s.deferred = None;
    }
    stage!(cx, Stage::Abort, |conn| {
        conn.abort();
        Answer::Continue
    })
}

async fn handle_close(cx: &mut Context<Session>) -> Status {
    stage!(cx, Stage::Close, |conn| {
        conn.close();
        Answer::Continue
    })
}

/// Runs a stage's body on a connection (`|c| body`, where the body may
/// `.await`), counting its time and catching a panic, which is answered as
/// `on_error` says.
macro_rules! guarded {
    ($conn:expr, $stage:expr, |$c:ident| $body:expr) => {{
        let conn: &mut Connection = $conn;
        conn.begin_stage($stage);
        let result = {
            let $c = &mut *conn;
            AssertUnwindSafe(async move { $body }).catch_unwind().await
        };
        conn.end_stage();
        match result {
            Ok(answer) => answer,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(
                    conn_id = conn.id,
                    stage = $stage.as_str(),
                    "internal error in policy: {what}"
                );
                conn.internal_error($stage)
            }
        }
    }};
}
use guarded;

/// Runs one stage on the connection of a context and turns its answer into
/// a status.
macro_rules! stage {
    ($cx:expr, $name:expr, |$c:ident| $body:expr) => {{
        let cx: &mut Context<Session> = $cx;
        match cx.data.as_mut().and_then(|s| s.conn.as_mut()) {
            Some(conn) => {
                let answer = guarded!(conn, $name, |$c| $body);
                reply(&mut cx.reply, answer)
            }
            None => {
                // No connect stage seen (the MTA did not send it): nothing
                // to judge.
                warn!(
                    stage = $name.as_str(),
                    "milter command before connect; continuing"
                );
                Status::Continue
            }
        }
    }};
}
use stage;

fn reply(smtp: &mut indymilter::SmtpReply, answer: Answer) -> Status {
    match answer {
        Answer::Continue => Status::Continue,
        Answer::Refuse(r) => {
            if let Err(e) = smtp.set_error_reply(r.code, Some(r.enhanced), [r.text.as_str()]) {
                // Our own reply table is wrong: still refuse, with the MTA's
                // default text.
                error!("cannot set SMTP reply \"{r}\": {e}");
            }
            if r.is_permanent() {
                Status::Reject
            } else {
                Status::Tempfail
            }
        }
    }
}

fn macros(m: &indymilter::Macros) -> Macros {
    let get = |name: &CStr| {
        m.get(name)
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
    };
    Macros {
        queue_id: get(c"i"),
        auth_login: get(c"{auth_authen}"),
        rcpt_mailer: get(c"{rcpt_mailer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, OnError};
    use std::path::Path;

    fn connection(on_error: OnError) -> Connection {
        let mut config = Config::parse(
            Path::new("t.yaml"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nclasses: [{name: app, clients: [10.0.0.0/8]}]\n",
        )
        .unwrap();
        config.on_error = on_error;
        Connection::new(
            Shared::new(config),
            "client".into(),
            "10.1.1.1".parse().ok(),
        )
    }

    fn bug() -> Answer {
        panic!("bug")
    }

    #[tokio::test]
    async fn a_panic_in_a_stage_tempfails_by_default() {
        let mut conn = connection(OnError::Tempfail);
        let answer = guarded!(&mut conn, Stage::Mail, |_c| bug());
        let Answer::Refuse(reply) = answer else {
            panic!("a failed check was let through")
        };
        assert_eq!(reply.to_string(), "451 4.3.0 Temporary policy failure");
        assert_eq!(conn.shared().metrics.errors(), 1);
        // The connection goes on: the next message is judged normally.
        let answer = guarded!(&mut conn, Stage::Mail, |c| c
            .mail(b"<a@example.com>", &Macros::default())
            .await);
        assert_eq!(answer, Answer::Continue);
    }

    #[tokio::test]
    async fn a_panic_in_a_stage_accepts_with_on_error_accept() {
        let mut conn = connection(OnError::Accept);
        assert_eq!(
            guarded!(&mut conn, Stage::Eoh, |_c| bug()),
            Answer::Continue
        );
        assert_eq!(conn.shared().metrics.errors(), 1);
    }
}
