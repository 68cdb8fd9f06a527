//! Milter sessions: random sequences of the MTA's commands (connect, HELO,
//! MAIL, RCPT, header, end of headers, body, end of message, abort, close,
//! a new login) with random arguments, against the daemon's transaction
//! code, with every check on: content rules, header scrubbing, local rate
//! limits and Ed25519 signing. No panic, no hang, and an accepted end of
//! message only ever inserts headers the milter owns.
#![no_main]
use egress_milter::session::{Answer, Connection, HeaderAction, Macros};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static SHARED: LazyLock<Arc<egress_milter::Shared>> = LazyLock::new(|| {
    let (pem, _) = egress_milter::dkim::generate("ed25519", 0).expect("key");
    let path = std::env::temp_dir().join(format!("egress-fuzz-{}.pem", std::process::id()));
    std::fs::write(&path, pem).expect("key file");
    let text = format!(
        "listen: inet:127.0.0.1:1
local_domains: [example.com, \"*.example.org\"]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_addresses: [noreply@example.com] }}
  - {{ name: staff, auth: any, login_match: true }}
internal_networks: [10.0.0.0/8]
headers: {{ strip_internal_received: true, remove: [X-Originating-IP] }}
recipients: {{ max_per_message: 5 }}
content: {{ max_message_size: 64KB, custom: [{{ name: l, subject: \"(?i)lottery\", body: \"(?i)you have won\", score: 5 }}] }}
rate_limits: {{ messages_per_sender: 1000/s, recipients_per_sender: 1000/s, concurrent_per_client: 50 }}
dkim: {{ keys: [{{ domain: example.com, selector: f, file: {} }}] }}
",
        path.display()
    );
    let config = egress_milter::config::Config::parse(std::path::Path::new("fuzz.yaml"), &text);
    // The key is read while the configuration is parsed.
    let _ = std::fs::remove_file(&path);
    let config = config.expect("fuzz config");
    egress_milter::Shared::new(config)
});

const OURS: [&str; 5] = [
    "DKIM-Signature",
    "X-Egress-Score",
    "X-Egress-Rules",
    "X-Spam-Score",
    "X-Spam-Symbols",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    RUNTIME.block_on(async {
        let ip = match first % 3 {
            0 => "10.1.2.3",
            1 => "192.0.2.7",
            _ => "2001:db8::1",
        };
        let mut conn = Connection::new(SHARED.clone(), "fuzz".into(), ip.parse().ok());
        let mut macros = Macros::default();
        while let [op, len, tail @ ..] = rest {
            let n = (*len as usize).min(tail.len());
            let (arg, next) = tail.split_at(n);
            rest = next;
            match op % 11 {
                0 => {
                    conn.connect().await;
                }
                1 => conn.helo(&String::from_utf8_lossy(arg)),
                2 => {
                    conn.mail(arg, &macros).await;
                }
                3 => {
                    conn.rcpt(arg, &macros).await;
                }
                4 => {
                    let (name, value) = match arg.iter().position(|&b| b == b':') {
                        Some(i) => (&arg[..i], &arg[i + 1..]),
                        None => (arg, &b""[..]),
                    };
                    conn.header(name, value);
                }
                5 => {
                    conn.end_of_headers(&macros).await;
                }
                6 => {
                    conn.body(bytes::Bytes::copy_from_slice(arg));
                }
                7 => {
                    let (answer, actions) = conn.end_of_message(&macros).await;
                    if answer == Answer::Continue {
                        for a in actions {
                            if let HeaderAction::Insert { name, .. } = a {
                                assert!(OURS.contains(&name), "inserted {name}");
                            }
                        }
                    }
                }
                8 => conn.abort(),
                9 => conn.close(),
                _ => {
                    macros.auth_login =
                        (!arg.is_empty()).then(|| String::from_utf8_lossy(arg).into_owned());
                }
            }
        }
        conn.close();
    });
});
