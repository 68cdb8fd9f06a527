//! A milter that accepts everything: the ceiling the benches compare
//! egress-milter with. It registers the same stages egress-milter does (so
//! the MTA sends it the same commands) and answers each at once.
//!
//! With `--quiet` it also takes HELO and headers without an answer, as
//! egress-milter does when the MTA offers it: the same commands and the same
//! replies as egress-milter.
//!
//!     cargo run --release --example null-milter -- inet:127.0.0.1:7399
//!     cargo run --release --example null-milter -- unix:/tmp/null.sock --quiet

use indymilter::{Callbacks, ProtoOpts, Status};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: null-milter inet:HOST:PORT | unix:/PATH [--quiet]");
        return ExitCode::from(2);
    };
    let quiet = std::env::args().nth(2).as_deref() == Some("--quiet");
    let no_reply = ProtoOpts::NOREPLY_HELO | ProtoOpts::NOREPLY_HEADER;
    let (helo, header) = if quiet {
        (Status::Noreply, Status::Noreply)
    } else {
        (Status::Continue, Status::Continue)
    };
    let listen = if let Some(p) = addr.strip_prefix("unix:") {
        egress_milter::config::Listen::Unix(p.into())
    } else if let Some(a) = addr.strip_prefix("inet:") {
        egress_milter::config::Listen::Inet(a.to_string())
    } else {
        eprintln!("null-milter: expected inet:HOST:PORT or unix:/PATH, got {addr:?}");
        return ExitCode::from(2);
    };
    // The same listener egress-milter uses (TCP_NODELAY set), so that the
    // comparison is of the milters, not of the sockets.
    let listener = match egress_milter::server::bind(&listen, 0o666).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("null-milter: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let callbacks = Callbacks::<()>::new()
        .on_negotiate(move |cx, _, offered| {
            if quiet {
                cx.requested_opts |= offered & no_reply;
            }
            Box::pin(async { Status::Continue })
        })
        .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
        .on_helo(move |_, _| Box::pin(async move { helo }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_header(move |_, _, _| Box::pin(async move { header }))
        .on_eoh(|_| Box::pin(async { Status::Continue }))
        .on_body(|_, _| Box::pin(async { Status::Continue }))
        .on_eom(|_| Box::pin(async { Status::Continue }));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    let stop = async {
        tokio::select! {
            _ = shutdown => {},
            _ = term => {},
        }
    };
    match indymilter::run(listener, callbacks, Default::default(), stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null-milter: {e}");
            ExitCode::FAILURE
        }
    }
}
