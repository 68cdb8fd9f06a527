//! egress-milter-load: plays the MTA's side of the milter protocol against
//! any milter, with N concurrent connections sending full transactions
//! (connect, HELO, MAIL, RCPT, headers, end of headers, body, end of
//! message), and prints messages per second and the p50/p99/p999 latency of
//! each stage.

use clap::Parser;
use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Parser, Clone)]
#[command(
    name = "egress-milter-load",
    version,
    about = "Milter load generator: full transactions, N connections, per-stage latency"
)]
struct Args {
    /// The milter: inet:HOST:PORT or unix:/PATH.
    #[arg(long)]
    milter: String,
    /// Concurrent milter connections.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Messages in all.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    messages: usize,
    /// Messages per milter connection (SMTP session) before it is closed
    /// and a new one opened.
    #[arg(long, default_value_t = 10)]
    per_session: usize,
    /// Body size in bytes (sent in chunks of 64 KB, as MTAs do).
    #[arg(long, short = 's', default_value_t = 2048)]
    size: usize,
    /// Client address given at connect.
    #[arg(long, default_value = "127.0.0.2")]
    client: std::net::IpAddr,
    #[arg(long, default_value = "app.example.com")]
    helo: String,
    /// Envelope sender, also the From: header.
    #[arg(long, default_value = "noreply@example.com")]
    from: String,
    /// Envelope recipient, also the To: header.
    #[arg(long, default_value = "someone@example.net")]
    rcpt: String,
    /// Give every message its own envelope sender (s<N>@ the --from
    /// domain): a flood of distinct senders for the rate limiter.
    #[arg(long)]
    vary_sender: bool,
    /// SASL login sent as the {auth_authen} macro at MAIL FROM.
    #[arg(long)]
    auth: Option<String>,
    /// Pace the whole run at this many messages per second (a steady load,
    /// for soak runs); 0: as fast as the milter answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many seconds even if messages are left (soak runs:
    /// give a large --messages).
    #[arg(long)]
    duration: Option<f64>,
    /// Exit 1 if the milter refuses any message.
    #[arg(long)]
    expect_accept: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

const STAGES: [&str; 9] = [
    "connect", "helo", "mail", "rcpt", "header", "eoh", "body", "eom", "message",
];

/// Latencies per stage, in nanoseconds; a stage's time is the round trip of
/// its command (all headers of one message together for "header", all body
/// chunks for "body"; "connect" includes opening the socket and the
/// negotiation); "message" is MAIL FROM to end of message.
#[derive(Default)]
struct Samples {
    by_stage: [Vec<u64>; STAGES.len()],
    accepted: usize,
    refused: usize,
    first_refusal: Option<String>,
}

impl Samples {
    fn add(&mut self, stage: usize, took: Duration) {
        self.by_stage[stage].push(took.as_nanos() as u64);
    }

    fn merge(&mut self, other: Samples) {
        for (a, b) in self.by_stage.iter_mut().zip(other.by_stage) {
            a.extend(b);
        }
        self.accepted += other.accepted;
        self.refused += other.refused;
        if self.first_refusal.is_none() {
            self.first_refusal = other.first_refusal;
        }
    }
}

enum Target {
    Inet(String),
    Unix(std::path::PathBuf),
}

fn target(s: &str) -> Result<Target, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        return Ok(Target::Unix(p.into()));
    }
    if let Some(a) = s.strip_prefix("inet:") {
        return Ok(Target::Inet(a.to_string()));
    }
    Err(format!(
        "--milter: expected inet:HOST:PORT or unix:/PATH, got {s:?}"
    ))
}

/// The MTA's end of one milter connection, as Postfix's milter8 client
/// plays it: version 6 negotiation offering every action and protocol
/// option, stages and replies the milter declined skipped, macros written
/// in the same flush as the command they go with, TCP_NODELAY set.
struct Client {
    reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    out: Vec<u8>,
    /// Protocol options the milter chose: SMFIP_NO* and SMFIP_NR_* bits.
    opts: u32,
}

/// A final answer from the milter.
#[derive(Debug, PartialEq)]
enum Status {
    Continue,
    Accept,
    Refused(String),
}

// Protocol option bits (libmilter's mfdef.h).
const NOCONNECT: u32 = 0x1;
const NOHELO: u32 = 0x2;
const NOMAIL: u32 = 0x4;
const NORCPT: u32 = 0x8;
const NOBODY: u32 = 0x10;
const NOHDRS: u32 = 0x20;
const NOEOH: u32 = 0x40;
const NR_HDR: u32 = 0x80;
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_EOH: u32 = 0x40000;
const NR_BODY: u32 = 0x80000;
/// Every action and every option we can honour.
const ACTIONS: u32 = 0x1ff;
const OFFERED: u32 = 0x1f_ffff;
const MAX_PACKET: usize = 64 << 20;

type Io<T> = Result<T, String>;

impl Client {
    async fn open(t: &Target) -> Io<Self> {
        let (reader, writer): (
            Box<dyn AsyncRead + Unpin + Send>,
            Box<dyn AsyncWrite + Unpin + Send>,
        ) = match t {
            Target::Inet(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to {a}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Target::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", p.display()))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        let mut c = Client {
            reader: BufReader::with_capacity(16 * 1024, reader),
            writer,
            out: Vec::with_capacity(80 * 1024),
            opts: 0,
        };
        let mut neg = Vec::with_capacity(12);
        neg.extend_from_slice(&6u32.to_be_bytes());
        neg.extend_from_slice(&ACTIONS.to_be_bytes());
        neg.extend_from_slice(&OFFERED.to_be_bytes());
        c.queue(b'O', &[&neg]);
        c.flush().await?;
        let (cmd, data) = c.read_packet().await?;
        if cmd != b'O' || data.len() < 12 {
            return Err(format!("bad negotiation reply {:?}", cmd as char));
        }
        c.opts = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        Ok(c)
    }

    fn queue(&mut self, cmd: u8, parts: &[&[u8]]) {
        let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        self.out.extend_from_slice(&(len as u32).to_be_bytes());
        self.out.push(cmd);
        for p in parts {
            self.out.extend_from_slice(p);
        }
    }

    async fn flush(&mut self) -> Io<()> {
        self.writer
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.out.clear();
        Ok(())
    }

    async fn read_packet(&mut self) -> Io<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.reader
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(format!("bad packet length {len}"));
        }
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let cmd = buf.remove(0);
        Ok((cmd, buf))
    }

    /// Reads replies up to a final one (modifications and progress skipped).
    async fn status(&mut self) -> Io<Status> {
        loop {
            let (cmd, data) = self.read_packet().await?;
            return Ok(match cmd {
                b'c' | b's' => Status::Continue,
                b'a' => Status::Accept,
                b'r' => Status::Refused("reject".into()),
                b't' => Status::Refused("tempfail".into()),
                b'd' => Status::Refused("discard".into()),
                b'y' => Status::Refused(
                    String::from_utf8_lossy(data.strip_suffix(b"\0").unwrap_or(&data)).into_owned(),
                ),
                b'h' | b'i' | b'm' | b'+' | b'-' | b'2' | b'e' | b'b' | b'q' | b'p' => continue,
                other => return Err(format!("unexpected reply {:?}", other as char)),
            });
        }
    }

    /// Sends a command (after any queued macros); waits for the answer
    /// unless the milter skipped the stage or declined to reply.
    async fn command(&mut self, cmd: u8, parts: &[&[u8]], skip: u32, no_reply: u32) -> Io<Status> {
        if self.opts & skip != 0 {
            self.out.clear();
            return Ok(Status::Continue);
        }
        self.queue(cmd, parts);
        self.flush().await?;
        if self.opts & no_reply != 0 {
            return Ok(Status::Continue);
        }
        self.status().await
    }

    fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) {
        let mut data = vec![stage];
        for (k, v) in pairs {
            data.extend_from_slice(k.as_bytes());
            data.push(0);
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
        self.queue(b'D', &[&data]);
    }

    async fn connect(&mut self, host: &str, addr: SocketAddr) -> Io<Status> {
        let family = if addr.is_ipv4() { b"4" } else { b"6" };
        self.command(
            b'C',
            &[
                host.as_bytes(),
                b"\0",
                family,
                &addr.port().to_be_bytes(),
                addr.ip().to_string().as_bytes(),
                b"\0",
            ],
            NOCONNECT,
            NR_CONN,
        )
        .await
    }

    async fn abort(&mut self) -> Io<()> {
        self.queue(b'A', &[]);
        self.flush().await
    }

    async fn quit(mut self) -> Io<()> {
        self.queue(b'Q', &[]);
        self.flush().await
    }
}

fn refusal(status: &Status) -> Option<String> {
    match status {
        Status::Continue | Status::Accept => None,
        Status::Refused(r) => Some(r.clone()),
    }
}

/// The message every transaction sends: headers and a body of `size` bytes
/// of text lines.
struct Message {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn message(args: &Args) -> Message {
    let headers = vec![
        ("From".into(), format!("App <{}>", args.from)),
        ("To".into(), format!("<{}>", args.rcpt)),
        ("Subject".into(), "Your order has shipped".into()),
        ("Date".into(), "Mon, 23 Nov 2026 01:00:00 +0000".into()),
        ("Message-ID".into(), "<load@example.com>".into()),
        ("MIME-Version".into(), "1.0".into()),
        ("Content-Type".into(), "text/plain; charset=utf-8".into()),
    ];
    let line = b"Your order 4711 has shipped and will arrive on Thursday. Thank you.\r\n";
    let mut body = Vec::with_capacity(args.size + line.len());
    while body.len() < args.size {
        body.extend_from_slice(line);
    }
    body.truncate(args.size);
    Message { headers, body }
}

/// Sends one message on an open session; false when the milter refused it
/// (the session then stays usable: the MTA would send RSET, an abort).
async fn transaction(c: &mut Client, args: &Args, msg: &Message, s: &mut Samples) -> Io<bool> {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sender = if args.vary_sender {
        let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let domain = args.from.rsplit_once('@').map_or("example.com", |(_, d)| d);
        format!("s{n}@{domain}")
    } else {
        args.from.clone()
    };
    let refused = |s: &mut Samples, status: &Status| -> bool {
        if let Some(r) = refusal(status) {
            s.refused += 1;
            s.first_refusal.get_or_insert(r);
            return true;
        }
        false
    };
    let start = Instant::now();
    let mut macros = vec![("i", "LOADTEST"), ("{mail_addr}", sender.as_str())];
    if let Some(a) = &args.auth {
        macros.push(("{auth_authen}", a.as_str()));
    }
    c.macros(b'M', &macros);
    let from = format!("<{sender}>\0");
    let status = c.command(b'M', &[from.as_bytes()], NOMAIL, NR_MAIL).await?;
    s.add(2, start.elapsed());
    if refused(s, &status) {
        c.abort().await?;
        return Ok(false);
    }
    let t = Instant::now();
    c.macros(b'R', &[("{rcpt_addr}", args.rcpt.as_str())]);
    let rcpt = format!("<{}>\0", args.rcpt);
    let status = c.command(b'R', &[rcpt.as_bytes()], NORCPT, NR_RCPT).await?;
    s.add(3, t.elapsed());
    if refused(s, &status) {
        c.abort().await?;
        return Ok(false);
    }
    let t = Instant::now();
    for (n, v) in &msg.headers {
        let status = c
            .command(
                b'L',
                &[n.as_bytes(), b"\0", v.as_bytes(), b"\0"],
                NOHDRS,
                NR_HDR,
            )
            .await?;
        if refused(s, &status) {
            c.abort().await?;
            return Ok(false);
        }
    }
    s.add(4, t.elapsed());
    let t = Instant::now();
    let status = c.command(b'N', &[], NOEOH, NR_EOH).await?;
    s.add(5, t.elapsed());
    if refused(s, &status) {
        c.abort().await?;
        return Ok(false);
    }
    let t = Instant::now();
    for chunk in msg.body.chunks(65_535) {
        let status = c.command(b'B', &[chunk], NOBODY, NR_BODY).await?;
        if refused(s, &status) {
            c.abort().await?;
            return Ok(false);
        }
    }
    s.add(6, t.elapsed());
    let t = Instant::now();
    let status = c.command(b'E', &[], 0, 0).await?;
    s.add(7, t.elapsed());
    s.add(8, start.elapsed());
    if refused(s, &status) {
        return Ok(false);
    }
    s.accepted += 1;
    Ok(true)
}

/// One connection's share: sessions of `per_session` messages each.
async fn worker(
    args: Arc<Args>,
    msg: Arc<Message>,
    target: Arc<Target>,
    count: usize,
) -> Io<Samples> {
    let mut s = Samples::default();
    let mut left = count;
    let client = SocketAddr::new(args.client, 40_000);
    let started = Instant::now();
    // With --rate, this worker sends one message every `gap`.
    let gap = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.connections.max(1) as f64 / args.rate));
    let mut sent: u32 = 0;
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    while left > 0 && deadline.is_none_or(|d| Instant::now() < d) {
        let t = Instant::now();
        let mut c = Client::open(&target).await?;
        let status = c.connect(&args.helo, client).await?;
        s.add(0, t.elapsed());
        if let Some(r) = refusal(&status) {
            return Err(format!("the milter refused the connection: {r}"));
        }
        let t = Instant::now();
        let helo = format!("{}\0", args.helo);
        c.command(b'H', &[helo.as_bytes()], NOHELO, NR_HELO).await?;
        s.add(1, t.elapsed());
        let n = left.min(args.per_session.max(1));
        for _ in 0..n {
            if let Some(gap) = gap {
                let due = started + gap * sent;
                tokio::time::sleep_until(due.into()).await;
                sent += 1;
            }
            transaction(&mut c, &args, &msg, &mut s).await?;
            left -= 1;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        c.quit().await?;
    }
    Ok(s)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = match target(&args.milter) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("egress-milter-load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter-load: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let connections = args.connections.clamp(1, args.messages.max(1));
    let msg = Arc::new(message(&args));
    let args = Arc::new(args);
    let target = Arc::new(target);
    let started = Instant::now();
    let result: Result<Samples, String> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..connections {
            let share = args.messages / connections + usize::from(i < args.messages % connections);
            tasks.push(tokio::spawn(worker(
                args.clone(),
                msg.clone(),
                target.clone(),
                share,
            )));
        }
        let mut all = Samples::default();
        for t in tasks {
            all.merge(t.await.map_err(|e| format!("worker failed: {e}"))??);
        }
        Ok(all)
    });
    let secs = started.elapsed().as_secs_f64();
    let mut samples = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("egress-milter-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = samples.accepted + samples.refused;
    let rate = done as f64 / secs;
    for v in &mut samples.by_stage {
        v.sort_unstable();
    }
    if args.json {
        let stages: serde_json::Map<String, serde_json::Value> = STAGES
            .iter()
            .zip(&samples.by_stage)
            .map(|(name, v)| {
                (
                    name.to_string(),
                    serde_json::json!({
                        "p50_us": percentile(v, 0.50),
                        "p99_us": percentile(v, 0.99),
                        "p999_us": percentile(v, 0.999),
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "milter": args.milter,
                "connections": connections,
                "messages": done,
                "accepted": samples.accepted,
                "refused": samples.refused,
                "seconds": secs,
                "messages_per_second": rate,
                "size": args.size,
                "stages": stages,
            })
        );
    } else {
        println!(
            "{} messages of {} bytes over {} connections to {} in {:.2} s: {:.0} msg/s ({} accepted, {} refused)",
            done, args.size, connections, args.milter, secs, rate, samples.accepted, samples.refused
        );
        println!(
            "{:<8} {:>10} {:>10} {:>10}",
            "stage", "p50 µs", "p99 µs", "p999 µs"
        );
        for (name, v) in STAGES.iter().zip(&samples.by_stage) {
            println!(
                "{:<8} {:>10.0} {:>10.0} {:>10.0}",
                name,
                percentile(v, 0.50),
                percentile(v, 0.99),
                percentile(v, 0.999)
            );
        }
    }
    if let Some(r) = &samples.first_refusal {
        eprintln!("first refusal: {r}");
    }
    if args.expect_accept && samples.refused > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
