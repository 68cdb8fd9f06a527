//! Virus scanning's own cost: 2 KB and 100 KB messages scanned by a real
//! clamd through egress-milter's client, against the same messages sent
//! straight to the same clamd by a minimal client of this bench's own (one
//! session, INSTREAM, blocking). The difference is what egress-milter adds
//! per scan over clamd's own time.
//!
//!     cargo bench --bench antivirus
//!
//! Needs /usr/sbin/clamd (started here with a one-signature database on a
//! unix socket); without it the figures are skipped with a note.

use egress_milter::config::Config;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const ROUNDS: usize = 400;

/// A plain message of about `size` bytes (text a scanner must read whole).
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: report\r\n\r\n".to_vec();
    let mut i = 0u64;
    while m.len() < size {
        m.extend_from_slice(
            format!(
                "line {i} of the quarterly figures, nothing to see {}\r\n",
                i * 7919 % 1000
            )
            .as_bytes(),
        );
        i += 1;
    }
    m
}

/// The bench's own client: one IDSESSION, INSTREAM in one write.
struct Raw(UnixStream);

impl Raw {
    fn open(path: &Path) -> Raw {
        let mut s = UnixStream::connect(path).expect("clamd socket");
        s.write_all(b"zIDSESSION\0").expect("session");
        Raw(s)
    }

    fn scan(&mut self, m: &[u8]) -> String {
        let mut req = b"zINSTREAM\0".to_vec();
        req.extend_from_slice(&(m.len() as u32).to_be_bytes());
        req.extend_from_slice(m);
        req.extend_from_slice(&[0, 0, 0, 0]);
        self.0.write_all(&req).expect("write");
        let mut answer = Vec::new();
        let mut b = [0u8; 1];
        while self.0.read(&mut b).expect("read") == 1 && b[0] != 0 {
            answer.push(b[0]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !Path::new("/usr/sbin/clamd").exists() {
        println!("antivirus: skipped (no /usr/sbin/clamd)");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("db");
    std::fs::create_dir(&db).expect("db");
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("test.ndb"),
        format!("Egress.Test.EICAR:0:*:{hex}\n"),
    )
    .expect("ndb");
    let sock = dir.path().join("clamd.ctl");
    let conf = dir.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "DatabaseDirectory {}\nLocalSocket {}\nForeground yes\nUser root\nLogFile {}/clamd.log\n",
            db.display(),
            sock.display(),
            dir.path().display()
        ),
    )
    .expect("conf");
    let mut clamd = Command::new("/usr/sbin/clamd")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("clamd");
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "clamd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = Config::parse(
        Path::new("bench.yaml"),
        &format!(
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nantivirus: {{ clamd: [\"unix:{}\"] }}\n",
            sock.display()
        ),
    )
    .expect("config");
    let settings = config.antivirus.clone().expect("antivirus");
    let client = egress_milter::content::clamd::Client::new(&settings);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut raw = Raw::open(&sock);
    for size in [2_000, 100_000] {
        let m = message(size);
        // Warm both paths up.
        for _ in 0..20 {
            raw.scan(&m);
            rt.block_on(client.scan(&m, &settings)).expect("scan");
        }
        let (mut alone, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let a = raw.scan(&m);
            alone.push(t.elapsed());
            assert!(a.ends_with("stream: OK"), "{a}");
            let t = Instant::now();
            let (s, _) = rt.block_on(client.scan(&m, &settings)).expect("scan");
            ours.push(t.elapsed());
            assert_eq!(s, egress_milter::content::clamd::Scan::Clean);
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
        let (ma, mo) = (mean(&alone), mean(&ours));
        println!(
            "antivirus {} KB: clamd alone p50 {:.3} ms mean {:.3} ms; through egress-milter p50 {:.3} ms mean {:.3} ms; overhead {:.3} ms per scan",
            size / 1000,
            percentile(&mut alone, 0.5).as_secs_f64() * 1e3,
            ma.as_secs_f64() * 1e3,
            percentile(&mut ours, 0.5).as_secs_f64() * 1e3,
            mo.as_secs_f64() * 1e3,
            (mo.as_secs_f64() - ma.as_secs_f64()) * 1e3
        );
    }
    let _ = clamd.kill();
    let _ = clamd.wait();
}
