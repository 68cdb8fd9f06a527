//! A Redis Sentinel set on loopback ports: one master, one replica and
//! three sentinels (Debian's `redis-sentinel`), each a process of its own
//! with its config in a temporary directory, all killed when dropped.
//! Plain, or secure: TLS only (a test CA), an ACL user on the data nodes
//! and a password on the sentinels.

use super::child::{ready, Guard};
use redis::Commands as _;
use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The name the sentinels monitor the master by.
pub const MASTER_NAME: &str = "egress";
/// How long the master may be silent before a sentinel thinks it down.
pub const DOWN_AFTER_MS: u64 = 1000;
/// The secure set's ACL user on the data nodes, its password, and the
/// sentinels' password.
pub const USER: &str = "egress";
pub const PASSWORD: &str = "node-pw";
pub const SENTINEL_PASSWORD: &str = "sentinel-pw";

pub struct SentinelSet {
    dir: tempfile::TempDir,
    /// The data nodes: [0] starts as master, [1] as its replica.
    pub nodes: [u16; 2],
    pub sentinels: [u16; 3],
    children: Vec<(u16, Guard)>,
    secure: bool,
}

fn port() -> u16 {
    super::free_port()
}

fn wait_listening(port: u16) {
    ready(Duration::from_secs(10), "did not listen: ", || {
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("port {port}: {e}"))
    });
}

impl SentinelSet {
    /// Starts the five processes and waits until every sentinel knows the
    /// master, its replica and the two other sentinels, and the replica is
    /// in sync: a failover is then possible.
    pub fn start() -> SentinelSet {
        Self::start_with(false)
    }

    /// TLS only, with [`USER`] on the data nodes and [`SENTINEL_PASSWORD`]
    /// on the sentinels; the CA in [`Self::file`]`("ca.pem")`, the
    /// passwords in `"password"` and `"sentinel-password"`.
    pub fn start_secure() -> SentinelSet {
        Self::start_with(true)
    }

    fn start_with(secure: bool) -> SentinelSet {
        assert!(
            std::path::Path::new("/usr/bin/redis-sentinel").exists(),
            "redis-sentinel is not installed: run scripts/test.sh, which installs it"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = [port(), port()];
        let sentinels = [port(), port(), port()];
        if secure {
            super::tls::make_certs(dir.path());
            std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).expect("password");
            std::fs::write(
                dir.path().join("sentinel-password"),
                format!("{SENTINEL_PASSWORD}\n"),
            )
            .expect("password");
        }
        let mut set = SentinelSet {
            dir,
            nodes,
            sentinels,
            children: Vec::new(),
            secure,
        };
        set.start_node(0, None);
        set.start_node(1, Some(nodes[0]));
        for i in 0..3 {
            set.start_sentinel(i);
        }
        set.wait_ready();
        set
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file of the set's: `ca.pem`, `password`, `sentinel-password`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    /// How a process listens: `port P`, or for the secure set TLS only.
    fn listen(&self, port: u16) -> String {
        if !self.secure {
            return format!("port {port}\nbind 127.0.0.1\n");
        }
        let d = |f: &str| self.path(f).display().to_string();
        format!(
            "port 0\nbind 127.0.0.1\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
            d("cert.pem"),
            d("key.pem"),
            d("ca.pem")
        )
    }

    /// A connection to the process on `port`, as the harness's client.
    fn open(&self, port: u16, sentinel: bool) -> redis::RedisResult<redis::Connection> {
        if !self.secure {
            return redis::Client::open(format!("redis://127.0.0.1:{port}"))?
                .get_connection_with_timeout(Duration::from_secs(1));
        }
        let url = if sentinel {
            format!("rediss://:{SENTINEL_PASSWORD}@127.0.0.1:{port}")
        } else {
            format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{port}")
        };
        let ca = std::fs::read(self.path("ca.pem")).expect("ca.pem");
        redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )?
        .get_connection_with_timeout(Duration::from_secs(1))
    }

    /// Starts data node `i` (again, on its port), a replica of `of` if
    /// given. Its config file is kept, so that a restarted node comes back
    /// as what the sentinels last made it.
    pub fn start_node(&mut self, i: usize, of: Option<u16>) {
        let port = self.nodes[i];
        let conf = self.path(&format!("node{i}.conf"));
        if !conf.exists() {
            let replica = of
                .map(|p| format!("replicaof 127.0.0.1 {p}\n"))
                .unwrap_or_default();
            let acl = if self.secure {
                format!(
                    "user default off\nuser {USER} on >{PASSWORD} ~* &* +@all\n\
                     masteruser {USER}\nmasterauth {PASSWORD}\n"
                )
            } else {
                String::new()
            };
            std::fs::write(
                &conf,
                format!(
                    "{}save \"\"\nappendonly no\ndir {}\n{acl}{replica}",
                    self.listen(port),
                    self.dir.path().display()
                ),
            )
            .expect("node conf");
        }
        self.spawn("/usr/bin/redis-server", &conf, port);
    }

    fn start_sentinel(&mut self, i: usize) {
        let port = self.sentinels[i];
        let conf = self.path(&format!("sentinel{i}.conf"));
        // Sentinel rewrites its config file as it learns: it must be
        // writable, one per sentinel.
        let auth = if self.secure {
            format!(
                "requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                 sentinel auth-user {MASTER_NAME} {USER}\nsentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
            )
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            format!(
                "{listen}dir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
                listen = self.listen(port),
                dir = self.dir.path().display(),
                master = self.nodes[0],
            ),
        )
        .expect("sentinel conf");
        self.spawn("/usr/bin/redis-sentinel", &conf, port);
    }

    /// Starts `program` on its config file, kept to be stopped with the
    /// set, and waits until it listens on `port`.
    fn spawn(&mut self, program: &str, conf: &std::path::Path, port: u16) {
        let what = if program.ends_with("sentinel") {
            "redis-sentinel"
        } else {
            "redis-server"
        };
        let child = Guard::spawn(
            what,
            Command::new(program)
                .arg(conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.children.push((port, child));
        wait_listening(port);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.sentinels.iter().all(|&s| {
                let master = self.sentinel_query(s, "MASTER");
                let field = |k: &str| {
                    master
                        .iter()
                        .position(|f| f == k)
                        .and_then(|i| master.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                field("num-slaves") == "1" && field("num-other-sentinels") == "2"
            }) && self.in_sync();
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the whole set"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True when the replica has every write the master has.
    pub fn in_sync(&self) -> bool {
        let offset = |port: u16, key: &str| -> Option<String> {
            let mut c = self.open(port, false).ok()?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        let master = self.master_port();
        let replica = if master == self.nodes[0] {
            self.nodes[1]
        } else {
            self.nodes[0]
        };
        matches!(
            (offset(master, "master_repl_offset:"), offset(replica, "slave_repl_offset:")),
            (Some(a), Some(b)) if a == b
        )
    }

    /// The master's port, as the first sentinel names it.
    pub fn master_port(&self) -> u16 {
        self.sentinel_master_port(self.sentinels[0]).unwrap_or(0)
    }

    /// The master's port as the sentinel on `port` names it.
    pub fn sentinel_master_port(&self, port: u16) -> Option<u16> {
        self.sentinel_query(port, "GET-MASTER-ADDR-BY-NAME")
            .get(1)
            .and_then(|p| p.parse().ok())
    }

    /// `SENTINEL <what> egress` from the sentinel on `port`, flattened.
    fn sentinel_query(&self, port: u16, what: &str) -> Vec<String> {
        let r: redis::RedisResult<Vec<String>> = (|| {
            let mut c = self.open(port, true)?;
            redis::cmd("SENTINEL")
                .arg(what)
                .arg(MASTER_NAME)
                .query(&mut c)
        })();
        r.unwrap_or_default()
    }

    /// The sentinels' addresses for `rate_limits.redis.sentinel.nodes`.
    pub fn node_list(&self) -> String {
        let scheme = if self.secure { "rediss://" } else { "" };
        self.sentinels
            .iter()
            .map(|p| format!("\"{scheme}127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Kills the process on `port` (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self, port: u16) {
        self.children.retain(|(p, _)| *p != port);
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process on `port`: frozen,
    /// its port still accepts connections but nothing answers, like a
    /// hung machine.
    pub fn freeze(&self, port: u16, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        for (p, c) in &self.children {
            if *p == port {
                c.signal(signal);
            }
        }
    }

    /// A key's value read from the data node on `port`.
    pub fn get(&self, port: u16, key: &str) -> Option<String> {
        self.open(port, false).ok()?.get(key).ok()?
    }
}
