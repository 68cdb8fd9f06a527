//! The delayed-ACK check through a real MTA over TCP: the daemon (the real
//! binary) on a TCP port, `smtp-source` sending through the MTA, and the
//! summary lines' `elapsed_ms`, which runs from MAIL FROM to end of
//! message: a stall of the MTA's writes behind our delayed ACK shows in it
//! on every message (~40 ms, or more where it happens several times).

use super::process::Running;

/// The daemon on a free loopback TCP port, loopback clients in one class
/// sending as example.com; returns it, its port and the directory of its
/// configuration (kept as long as the daemon runs).
pub fn daemon() -> (Running, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = super::free_port();
    let config = dir.path().join("milter.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: inet:127.0.0.1:{port}
local_domains: [example.com]
classes:
  - {{ name: app, clients: [127.0.0.0/8], sender_domains: [example.com] }}
"
        ),
    )
    .expect("write the configuration");
    let d = Running::start(&config);
    d.wait_for("egress-milter started");
    (d, port, dir)
}

/// Sends `n` messages of 2 KB over 5 sessions to the MTA's SMTP port with
/// Postfix's `smtp-source`; every one must be accepted.
pub async fn send(smtp_port: u16, n: usize) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/sbin/smtp-source")
            .args(["-s", "5", "-m", &n.to_string(), "-l", "2048"])
            .args(["-f", "noreply@example.com", "-t", "someone@example.net"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .output()
            .expect("smtp-source (Postfix's) is not installed: run scripts/test.sh")
    })
    .await
    .expect("smtp-source task");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads the `n` summary lines and fails if messages waited for a delayed
/// ACK: loose against a loaded machine (up to a quarter of the messages may
/// be slow), sharp against a stall (it hits every message: through Postfix
/// the median is then 48 ms, through Sendmail 132 ms).
pub fn assert_no_stall(d: &Running, n: usize) {
    let mut elapsed = super::summary_elapsed_ms(d, n);
    elapsed.sort_by(f64::total_cmp);
    let median = elapsed[n / 2];
    let stalled = elapsed.iter().filter(|&&ms| ms >= 40.0).count();
    eprintln!(
        "elapsed_ms: median {median}, p90 {}, max {}; {stalled} of {n} at 40 ms or more",
        elapsed[n * 9 / 10],
        elapsed[n - 1]
    );
    assert!(
        stalled * 4 < n,
        "messages wait for a delayed ACK: median {median} ms, {stalled} of {n} at 40 ms or more"
    );
}
