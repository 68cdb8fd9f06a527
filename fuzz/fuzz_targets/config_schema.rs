//! The configuration loader, fed documents built from milter.yaml's schema:
//! every section and key, each value drawn from a pool of good values or a
//! pool of bad ones, and now and then a value of the wrong type, an unknown
//! key or a missing required one. The generator knows which values are bad,
//! so the loader's verdict is checked, not only its survival:
//! - a document with no bad value loads;
//! - a document with a bad value is refused;
//! - when every bad value is one the loader checks itself (not a YAML type
//!   error), each one is reported under its key, and on the line the value
//!   was written on wherever that line is known.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::LazyLock;

/// A YAML node; scalars carry the expectation they were generated with.
enum Y {
    Map(Vec<(String, Y)>),
    Seq(Vec<Y>),
    /// Written double-quoted.
    Str(String, Mark),
    /// Written as is (numbers, booleans).
    Plain(String, Mark),
}

/// What the loader must say about one scalar.
enum Mark {
    Good,
    /// Refused under this key, on the scalar's line.
    Bad(String),
}

/// A refusal the loader must report: key, and line when it is known.
struct Expected {
    key: String,
    line: Option<u64>,
}

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    /// Refusals not tied to one scalar (cross-field checks).
    expected: Vec<Expected>,
    /// A YAML type error, unknown key or missing field was written: the
    /// loader stops at the first, so only a refusal is checked.
    type_error: bool,
}

const DOMAINS: &[&str] = &[
    "example.com",
    "*.example.org",
    "mail.example.net",
    "EXAMPLE.COM",
    "example.com.",
    "bücher.example",
    "xn--bcher-kva.example",
    "a-b.example",
    "localhost",
];
const BAD_DOMAINS: &[&str] = &[
    "",
    ".",
    "a..b",
    "-bad.example",
    "bad-.example",
    "*.",
    "exa mple.com",
    "ex@mple.com",
    "*.*.example.com",
];
const NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "192.0.2.7",
    "192.0.2.0/24",
    "2001:db8::/32",
    "::1",
    "0.0.0.0/0",
];
const BAD_NETWORKS: &[&str] = &[
    "10.1.2.7/24",
    "300.1.1.1",
    "10.0.0.0/33",
    "host.example",
    "",
    "2001:db8::1/129",
];
const IPS: &[&str] = &["192.0.2.1", "2001:db8::25", "127.0.0.1"];
const BAD_IPS: &[&str] = &["192.0.2.0/24", "192.0.2", "mx.example.com", ""];
const DURATIONS: &[&str] = &["30s", "5m", "2h", "1d", "250ms", "10", " 7s "];
const BAD_DURATIONS: &[&str] = &["0", "0s", "0ms", "", "5x", "-1s", "99999999999999999999d"];
const SIZES: &[&str] = &[
    "25MB", "512 KiB", "1000", "64KB", "1GB", "2mib", "3 g", "2000 B",
];
const BAD_SIZES: &[&str] = &["999", "0", "25XB", "", "-5MB", "99999999999999999999GB"];
const RATES: &[&str] = &[
    "100/h",
    "10/min",
    "5/2m",
    "1000/s",
    "unlimited",
    "UNLIMITED",
    "-1/h",
    "3/day",
    "7/week",
    "1/10s",
    "60/M",
    "2/hour",
    "1/second",
    "4/minute",
    "9/d",
    "8/w",
    "6/sec",
];
const BAD_RATES: &[&str] = &[
    "0/h",
    "100",
    "100/x",
    "/h",
    "abc/h",
    "5/0m",
    "",
    "5/99999999999999w",
];
const CONCURRENT: &[&str] = &["50", "1", "unlimited", "-1", "4294967295"];
const BAD_CONCURRENT: &[&str] = &["0", "many", "", "4294967296", "5/s"];
const LISTEN: &[&str] = &[
    "inet:127.0.0.1:8891",
    "unix:/run/egress-milter/milter.sock",
    "inet:8891@127.0.0.1",
    "inet:8891@::1",
    "inet:[::1]:8891",
    "inet:localhost:8891",
];
const BAD_LISTEN: &[&str] = &[
    "tcp:1",
    "unix:relative/path",
    "inet:127.0.0.1",
    "inet::1",
    "inet:host:99999",
    "",
    "local:/run/m.sock",
];
const SOCKET_MODES: &[&str] = &["0660", "660", "0o600", "0777", "0"];
const BAD_SOCKET_MODES: &[&str] = &["0999", "1000", "rw", "-1", ""];
const SOCKET_ADDRS: &[&str] = &["127.0.0.1:9100", "[::1]:9100", "0.0.0.0:9100"];
const BAD_SOCKET_ADDRS: &[&str] = &["127.0.0.1", "localhost:9100", ":9100", ""];
const LOOPBACK_ADDRS: &[&str] = &["127.0.0.1:8899", "[::1]:8899", "127.0.0.2:1"];
const BAD_ADMIN_ADDRS: &[&str] = &["0.0.0.0:8899", "192.0.2.1:8899", "localhost:8899", "8899"];
const REDIS_URLS: &[&str] = &[
    "redis://127.0.0.1:6379",
    "rediss://redis.example:6380/2",
    "unix:///run/redis.sock",
    "redis+unix:///run/redis.sock",
];
const BAD_REDIS_URLS: &[&str] = &["127.0.0.1:6379", "http://redis", ""];
const SENTINEL_NODES: &[&str] = &[
    "127.0.0.1:26379",
    "redis://10.0.5.2:26379",
    "[::1]:26380",
    "sentinel.example:26379",
    "rediss://10.0.5.3:26379",
];
const BAD_SENTINEL_NODES: &[&str] = &[
    "127.0.0.1",
    "http://s:26379",
    "",
    "redis://u:pw@127.0.0.1:26379",
    "unix:///run/s.sock",
];
const WARN_LEVELS: &[&str] = &["80%", "50 %", "99%", "1%", "92.5%"];
const BAD_WARN_LEVELS: &[&str] = &["100%", "0%", "80", "x%", ""];
const HTTP_URLS: &[&str] = &["http://127.0.0.1:11333", "https://rspamd.example"];
const BAD_HTTP_URLS: &[&str] = &["127.0.0.1:11333", "ftp://x", ""];
const NAMESERVERS: &[&str] = &["127.0.0.1", "127.0.0.1:5353", "[::1]:53", "2001:db8::53"];
const BAD_NAMESERVERS: &[&str] = &["ns.example.com", "127.0.0.1:", "127.0.0.1:99999", ""];
const HOSTNAMES: &[&str] = &["mx1.example.com", "gw.example.org."];
const BAD_HOSTNAMES: &[&str] = &["localhost", "mx1", "", "a..b.example", "-x.example"];
const ZONES: &[&str] = &["zen.spamhaus.org", "bl.example.net"];
const BAD_ZONES: &[&str] = &["*.spamhaus.org", "", "a..b"];
const SELECTORS: &[&str] = &["s1", "2026-11", "mail_key", "a.b"];
const BAD_SELECTORS: &[&str] = &["", "a..b", "sel ector", "s/1", ".s"];
const REGEXES: &[&str] = &[
    "(?i)lottery",
    r"^\s*$",
    "you have won",
    "[a-z]{3,}\\d+",
    "(?x) a # b",
];
const BAD_REGEXES: &[&str] = &["(", "[a-", "(?<n", "a{2,1}", "\\"];
const EXTENSIONS: &[&str] = &["exe", ".scr", " JS ", "tar.gz"];
const BAD_EXTENSIONS: &[&str] = &["", ".", "a/b", "a b", "a\\b", "  "];
const LOGINS: &[&str] = &["alice", "bob@example.com", "übung", "x"];
const HEADERS_SIGNED: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "from",
    "X-List",
];
const HEADERS_REMOVED: &[&str] = &["X-Originating-IP", "X-Mailer", "Received", "x-php-script"];
const BAD_HEADER_NAMES: &[&str] = &["", "X Bad", "X-Colon:", "Bad\u{e9}"];
const CLASS_NAMES: &[&str] = &["app", "staff", "c1", "web-servers"];
const BAD_CLASS_NAMES: &[&str] = &["", "two words", "tab\there"];
const MODES: &[&str] = &["enforce", "monitor"];
const ON_ERROR: &[&str] = &["tempfail", "accept"];
const UNKNOWN_CLIENTS: &[&str] = &["relay_deny", "reject"];
const LOG_FORMATS: &[&str] = &["text", "json"];
const BACKENDS: &[&str] = &["local", "redis"];
const ON_FAILURE: &[&str] = &["local", "accept", "tempfail"];
const SIGN: &[&str] = &["from_domain", "off"];
const ON_UNSIGNED: &[&str] = &["accept", "tempfail"];
const CHECK_MODES: &[&str] = &["off", "warn", "reject"];
const LIMITS: [&str; 7] = [
    "connections_per_client",
    "concurrent_per_client",
    "messages_per_client",
    "messages_per_sender",
    "messages_per_user",
    "messages_per_recipient",
    "recipients_per_sender",
];
/// Values of the wrong type for a section. (Not `~`, `{}` or `[]`: an
/// empty section is a valid one when all its keys are optional.)
const WRONG_TYPES: &[&str] = &["yes", "-3", "1.5", "\"x\"", "{a: 1}", "[[1]]"];

/// DKIM key files written once per process; renamed into place so that
/// parallel fuzzing processes never read a half-written file.
struct Keys {
    good: Vec<&'static str>,
    bad: Vec<&'static str>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join("egress-milter-fuzz-keys");
    std::fs::create_dir_all(&dir).expect("key directory");
    let put = |name: &str, text: &str, mode: u32| -> &'static str {
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        std::fs::write(&tmp, text).expect("key file");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).expect("rename");
        path.display().to_string().leak()
    };
    let (ed, _) = egress_milter::dkim::generate("ed25519", 0).expect("ed25519 key");
    let pkcs8 = |k: &rsa::RsaPrivateKey| {
        use rsa::pkcs8::EncodePrivateKey;
        k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem")
            .to_string()
    };
    let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let short = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).expect("rsa key");
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        rsa.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("pem")
            .to_string()
    };
    Keys {
        good: vec![
            put("ed25519.pem", &ed, 0o600),
            put("rsa.pem", &pkcs8(&rsa), 0o640),
            put("rsa-pkcs1.pem", &pkcs1, 0o600),
            // Loads, with a warning.
            put("readable.pem", &ed, 0o644),
        ],
        bad: vec![
            put("garbage.pem", "not a key\n", 0o600),
            put("empty.pem", "", 0o600),
            put("rsa-1024.pem", &pkcs8(&short), 0o600),
            put(
                "truncated.pem",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                0o600,
            ),
            dir.join("missing.pem").display().to_string().leak(),
            dir.display().to_string().leak(),
            "/dev/zero",
            "relative-missing.pem",
        ],
    }
});

impl Gen<'_, '_> {
    fn chance(&mut self, percent: u8) -> Result<bool> {
        // An input that has run out of bytes reads as zeros: no.
        Ok(self.u.int_in_range(0..=99u8)? >= 100 - percent)
    }

    fn pick<'p>(&mut self, pool: &[&'p str]) -> Result<&'p str> {
        Ok(pool[self.u.choose_index(pool.len())?])
    }

    /// A string scalar from the good pool, or (sometimes) the bad one.
    fn text(&mut self, key: &str, good: &[&str], bad: &[&str]) -> Result<(Y, bool)> {
        if !bad.is_empty() && self.chance(12)? {
            let v = self.pick(bad)?;
            Ok((Y::Str(v.into(), Mark::Bad(key.into())), false))
        } else {
            Ok((Y::Str(self.pick(good)?.into(), Mark::Good), true))
        }
    }

    fn text_y(&mut self, key: &str, good: &[&str], bad: &[&str]) -> Result<Y> {
        Ok(self.text(key, good, bad)?.0)
    }

    /// An enum keyword: a bad one is a YAML type error.
    fn keyword(&mut self, good: &[&str]) -> Result<Y> {
        if self.chance(2)? {
            self.type_error = true;
            Ok(Y::Str(
                self.pick(&["Enforce", "on", "", "maybe"])?.into(),
                Mark::Good,
            ))
        } else {
            Ok(Y::Str(self.pick(good)?.into(), Mark::Good))
        }
    }

    fn boolean(&mut self) -> Result<Y> {
        if self.chance(2)? {
            self.type_error = true;
            return Ok(Y::Plain(
                self.pick(&["maybe", "2", "[]"])?.into(),
                Mark::Good,
            ));
        }
        Ok(Y::Plain(self.pick(&["true", "false"])?.into(), Mark::Good))
    }

    /// A count that must be at least `min` (0: any).
    fn count(&mut self, key: &str, min: u64) -> Result<Y> {
        if self.chance(2)? {
            self.type_error = true;
            return Ok(Y::Plain(
                self.pick(&["-1", "1.5", "1e400", "seven"])?.into(),
                Mark::Good,
            ));
        }
        let n = match self.u.int_in_range(0..=3u8)? {
            0 => min,
            1 => min.saturating_sub(1),
            2 => min + u64::from(self.u.arbitrary::<u16>()?),
            _ => self.u.arbitrary::<u32>()?.into(),
        };
        let mark = if n < min {
            Mark::Bad(key.into())
        } else {
            Mark::Good
        };
        Ok(Y::Plain(n.to_string(), mark))
    }

    /// A float; `positive` when the loader requires a finite number above 0.
    /// Returns the value the loader will use, if good.
    fn float(&mut self, key: &str, positive: bool) -> Result<(Y, Option<f64>)> {
        let (text, v): (&str, f64) = match self.u.int_in_range(0..=9u8)? {
            0 => ("0", 0.0),
            1 => ("-1", -1.0),
            2 => (".nan", f64::NAN),
            3 => (".inf", f64::INFINITY),
            4 => ("2.5", 2.5),
            5 => ("4", 4.0),
            6 => ("7", 7.0),
            7 => ("10", 10.0),
            8 => ("15.0", 15.0),
            _ => ("1e3", 1000.0),
        };
        let good = !positive || (v.is_finite() && v > 0.0);
        let mark = if good {
            Mark::Good
        } else {
            Mark::Bad(key.into())
        };
        Ok((Y::Plain(text.into(), mark), good.then_some(v)))
    }

    fn list(&mut self, key: &str, good: &[&str], bad: &[&str], max: usize) -> Result<Y> {
        Ok(Y::Seq(self.list_items(key, good, bad, max)?.0))
    }

    /// Items of a list of strings, and the good ones among them.
    fn list_items(
        &mut self,
        key: &str,
        good: &[&str],
        bad: &[&str],
        max: usize,
    ) -> Result<(Vec<Y>, Vec<String>)> {
        let n = self.u.int_in_range(0..=max)?;
        let mut items = Vec::new();
        let mut kept = Vec::new();
        for i in 0..n {
            let (y, ok) = self.text(&format!("{key}[{i}]"), good, bad)?;
            if ok {
                if let Y::Str(s, _) = &y {
                    kept.push(s.clone());
                }
            }
            items.push(y);
        }
        Ok((items, kept))
    }

    /// Maybe replaces a section's value with one of the wrong type, or adds
    /// an unknown key to it.
    fn spoil(&mut self, mut entries: Vec<(String, Y)>) -> Result<Y> {
        if self.chance(1)? {
            self.type_error = true;
            return Ok(Y::Plain(self.pick(WRONG_TYPES)?.into(), Mark::Good));
        }
        if self.chance(1)? && !entries.is_empty() {
            self.type_error = true;
            let at = self.u.choose_index(entries.len())?;
            let name = if self.chance(50)? {
                format!("{}s", entries[at].0)
            } else {
                entries[at].0.clone()
            };
            entries.insert(at, (name, Y::Str("x".into(), Mark::Good)));
        }
        Ok(Y::Map(entries))
    }

    /// Optional keys: each one present about half the time.
    fn maybe(&mut self) -> Result<bool> {
        self.chance(50)
    }

    /// An optional key with a string value.
    fn optional(
        &mut self,
        entries: &mut Vec<(String, Y)>,
        name: &str,
        key: &str,
        good: &[&str],
        bad: &[&str],
    ) -> Result<()> {
        if self.maybe()? {
            let y = self.text_y(key, good, bad)?;
            entries.push((name.into(), y));
        }
        Ok(())
    }

    /// An optional key with a list of strings.
    fn optional_list(
        &mut self,
        entries: &mut Vec<(String, Y)>,
        name: &str,
        key: &str,
        good: &[&str],
        bad: &[&str],
        max: usize,
    ) -> Result<()> {
        if self.maybe()? {
            let y = self.list(key, good, bad, max)?;
            entries.push((name.into(), y));
        }
        Ok(())
    }

    fn document(&mut self) -> Result<Y> {
        let mut top = Vec::new();
        if !self.chance(1)? {
            top.push(("listen".into(), self.text_y("listen", LISTEN, BAD_LISTEN)?));
        } else {
            self.type_error = true;
        }
        self.optional(
            &mut top,
            "socket_mode",
            "socket_mode",
            SOCKET_MODES,
            BAD_SOCKET_MODES,
        )?;
        if self.maybe()? {
            top.push(("mode".into(), self.keyword(MODES)?));
        }
        if self.maybe()? {
            top.push(("on_error".into(), self.keyword(ON_ERROR)?));
        }
        let (items, local) = self.list_items("local_domains", DOMAINS, BAD_DOMAINS, 3)?;
        if items.is_empty() {
            self.expected.push(Expected {
                key: "local_domains".into(),
                line: Some(1),
            });
        }
        top.push(("local_domains".into(), Y::Seq(items)));
        if self.maybe()? {
            let classes = self.classes(&local)?;
            top.push(("classes".into(), classes));
        }
        if self.maybe()? {
            top.push(("unknown_clients".into(), self.keyword(UNKNOWN_CLIENTS)?));
        }
        if self.maybe()? {
            let mut s = Vec::new();
            if self.maybe()? {
                s.push(("strict".into(), self.boolean()?));
            }
            if self.maybe()? {
                s.push((
                    "max_length".into(),
                    self.count("from_header.max_length", 998)?,
                ));
            }
            top.push(("from_header".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let c = self.count("recipients.max_per_message", 1)?;
            let s = vec![("max_per_message".into(), c)];
            top.push(("recipients".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let s = vec![("format".into(), self.keyword(LOG_FORMATS)?)];
            top.push(("log".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let mut s = Vec::new();
            if self.maybe()? {
                s.push((
                    "max_connections".into(),
                    self.count("milter.max_connections", 1)?,
                ));
            }
            self.optional(
                &mut s,
                "timeout",
                "milter.timeout",
                DURATIONS,
                BAD_DURATIONS,
            )?;
            top.push(("milter".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let r = self.rate_limits()?;
            top.push(("rate_limits".into(), r));
        }
        let mut egress_kept = Vec::new();
        if self.maybe()? {
            let (items, kept) = self.list_items("egress_ips", IPS, BAD_IPS, 2)?;
            egress_kept = kept;
            top.push(("egress_ips".into(), Y::Seq(items)));
        }
        self.optional(&mut top, "hostname", "hostname", HOSTNAMES, BAD_HOSTNAMES)?;
        let (dkim, signed) = self.dkim()?;
        if let Some(d) = dkim {
            top.push(("dkim".into(), d));
        }
        if self.maybe()? {
            let mode = self.keyword(CHECK_MODES)?;
            if matches!(&mode, Y::Str(m, _) if m != "off") && egress_kept.is_empty() {
                self.expected.push(Expected {
                    key: "spf.check_egress".into(),
                    line: Some(1),
                });
            }
            let s = vec![("check_egress".into(), mode)];
            top.push(("spf".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let mut s = Vec::new();
            self.optional_list(
                &mut s,
                "nameservers",
                "dns.nameservers",
                NAMESERVERS,
                BAD_NAMESERVERS,
                2,
            )?;
            self.optional(&mut s, "timeout", "dns.timeout", DURATIONS, BAD_DURATIONS)?;
            top.push(("dns".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let c = self.content()?;
            top.push(("content".into(), c));
        }
        if self.maybe()? {
            let mut s = Vec::new();
            self.optional_list(&mut s, "dnsbl", "selfcheck.dnsbl", ZONES, BAD_ZONES, 2)?;
            top.push(("selfcheck".into(), self.spoil(s)?));
        }
        self.optional_list(
            &mut top,
            "internal_networks",
            "internal_networks",
            NETWORKS,
            BAD_NETWORKS,
            3,
        )?;
        self.optional_list(
            &mut top,
            "internal_hostnames",
            "internal_hostnames",
            &[
                "*.corp.local",
                "localhost",
                "crm01",
                "*.internal",
                "EXCH01.Corp.Local",
            ],
            &["*.", "a b", "*.*.corp", "", "corp..local", "host_1"],
            3,
        )?;
        if self.maybe()? {
            let mut s = Vec::new();
            if self.maybe()? {
                s.push(("strip_internal_received".into(), self.boolean()?));
            }
            if self.maybe()? {
                let mut items = Vec::new();
                for i in 0..self.u.int_in_range(0..=3)? {
                    let key = format!("headers.remove[{i}]");
                    let (y, ok) = self.text(&key, HEADERS_REMOVED, BAD_HEADER_NAMES)?;
                    // A header DKIM signs cannot be removed.
                    let y = match y {
                        Y::Str(h, _) if ok && signed.iter().any(|s| s.eq_ignore_ascii_case(&h)) => {
                            Y::Str(h, Mark::Bad(key))
                        }
                        y => y,
                    };
                    items.push(y);
                }
                if self.chance(20)? {
                    let h = self.pick(HEADERS_SIGNED)?;
                    let key = format!("headers.remove[{}]", items.len());
                    let mark = if signed.iter().any(|s| s.eq_ignore_ascii_case(h)) {
                        Mark::Bad(key)
                    } else {
                        Mark::Good
                    };
                    items.push(Y::Str(h.into(), mark));
                }
                s.push(("remove".into(), Y::Seq(items)));
            }
            top.push(("headers".into(), self.spoil(s)?));
        }
        if self.maybe()? {
            let mut s = Vec::new();
            self.optional(
                &mut s,
                "listen",
                "metrics.listen",
                SOCKET_ADDRS,
                BAD_SOCKET_ADDRS,
            )?;
            top.push(("metrics".into(), self.spoil(s)?));
        }
        // The order of the keys does not matter to the loader.
        if self.chance(30)? {
            let a = self.u.choose_index(top.len())?;
            let b = self.u.choose_index(top.len())?;
            top.swap(a, b);
        }
        if self.chance(1)? {
            self.type_error = true;
            top.push(("no_such_key".into(), Y::Plain("1".into(), Mark::Good)));
        }
        Ok(Y::Map(top))
    }

    fn classes(&mut self, local: &[String]) -> Result<Y> {
        let mut out = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for i in 0..self.u.int_in_range(0..=3)? {
            let key = format!("classes[{i}]");
            let mut c = Vec::new();
            let (name, ok) = self.text(&format!("{key}.name"), CLASS_NAMES, BAD_CLASS_NAMES)?;
            let name = match name {
                Y::Str(n, _) if ok && names.contains(&n) => {
                    Y::Str(n, Mark::Bad(format!("{key}.name")))
                }
                Y::Str(n, m) => {
                    names.push(n.clone());
                    Y::Str(n, m)
                }
                y => y,
            };
            c.push(("name".into(), name));
            let mut has_clients = false;
            if self.maybe()? {
                let (items, _) =
                    self.list_items(&format!("{key}.clients"), NETWORKS, BAD_NETWORKS, 2)?;
                has_clients = !items.is_empty();
                c.push(("clients".into(), Y::Seq(items)));
            }
            let mut has_auth = false;
            if self.maybe()? {
                has_auth = true;
                let auth = match self.u.int_in_range(0..=4u8)? {
                    0 | 1 => Y::Str("any".into(), Mark::Good),
                    2 => {
                        let n = self.u.int_in_range(1..=3)?;
                        let mut l = Vec::new();
                        for _ in 0..n {
                            l.push(Y::Str(self.pick(LOGINS)?.into(), Mark::Good));
                        }
                        Y::Seq(l)
                    }
                    3 => {
                        self.expected.push(Expected {
                            key: format!("{key}.auth"),
                            line: None,
                        });
                        Y::Str(self.pick(&["none", "all", ""])?.into(), Mark::Good)
                    }
                    _ => {
                        self.expected.push(Expected {
                            key: format!("{key}.auth"),
                            line: None,
                        });
                        if self.maybe()? {
                            Y::Seq(Vec::new())
                        } else {
                            Y::Seq(vec![
                                Y::Str("alice".into(), Mark::Good),
                                Y::Str(String::new(), Mark::Good),
                            ])
                        }
                    }
                };
                c.push(("auth".into(), auth));
            }
            if !has_clients && !has_auth {
                self.expected.push(Expected {
                    key: key.clone(),
                    line: None,
                });
            }
            let mut senders: Vec<String> = local.to_vec();
            if self.maybe()? {
                let (items, kept) =
                    self.list_items(&format!("{key}.sender_domains"), DOMAINS, BAD_DOMAINS, 2)?;
                senders = kept;
                c.push(("sender_domains".into(), Y::Seq(items)));
            }
            if self.maybe()? {
                let mut items = Vec::new();
                for j in 0..self.u.int_in_range(0..=2)? {
                    let k = format!("{key}.sender_addresses[{j}]");
                    let y = match self.u.int_in_range(0..=5u8)? {
                        0 => Y::Str(
                            self.pick(&["no-at-sign", "@example.com", "a@", "a@b..c"])?
                                .into(),
                            Mark::Bad(k),
                        ),
                        1 => Y::Str("x@elsewhere.invalid".into(), Mark::Bad(k)),
                        2 => Y::Str("x@[192.0.2.1]".into(), Mark::Bad(k)),
                        _ if senders.is_empty() => Y::Str("x@example.com".into(), Mark::Bad(k)),
                        _ => {
                            let d = senders[self.u.choose_index(senders.len())?].clone();
                            let local_part = self.pick(&["noreply", "\"a b\"", "x+tag", "a@b"])?;
                            let addr = match d.strip_prefix("*.") {
                                Some(parent) => format!("{local_part}@mx.{parent}"),
                                None => format!("{local_part}@{d}"),
                            };
                            Y::Str(addr, Mark::Good)
                        }
                    };
                    items.push(y);
                }
                c.push(("sender_addresses".into(), Y::Seq(items)));
            }
            self.optional_list(
                &mut c,
                "from_domains",
                &format!("{key}.from_domains"),
                DOMAINS,
                BAD_DOMAINS,
                2,
            )?;
            if self.maybe()? {
                let b = self.boolean()?;
                if matches!(&b, Y::Plain(v, _) if v == "true") && !has_auth {
                    self.expected.push(Expected {
                        key: format!("{key}.login_match"),
                        line: None,
                    });
                }
                c.push(("login_match".into(), b));
            }
            if self.maybe()? {
                c.push(("allow_null_sender".into(), self.boolean()?));
            }
            if self.maybe()? {
                c.push(("mode".into(), self.keyword(MODES)?));
            }
            out.push(self.spoil(c)?);
        }
        Ok(Y::Seq(out))
    }

    fn limits(&mut self, key: &str, s: &mut Vec<(String, Y)>) -> Result<usize> {
        let mut set = 0;
        for name in LIMITS {
            if self.chance(30)? {
                let k = format!("{key}.{name}");
                let y = if name == "concurrent_per_client" {
                    self.text_y(&k, CONCURRENT, BAD_CONCURRENT)?
                } else {
                    self.text_y(&k, RATES, BAD_RATES)?
                };
                s.push((name.into(), y));
                set += 1;
            }
        }
        Ok(set)
    }

    /// `rate_limits.redis.sentinel`.
    fn sentinel(&mut self) -> Result<Y> {
        let key = "rate_limits.redis.sentinel.nodes";
        let mut nodes = Vec::new();
        let (mut plain, mut tls) = (0, 0);
        for _ in 0..self.u.int_in_range(0..=3)? {
            if self.chance(12)? {
                let v = self.pick(BAD_SENTINEL_NODES)?;
                nodes.push(Y::Str(v.into(), Mark::Bad(key.into())));
            } else {
                let v = self.pick(SENTINEL_NODES)?;
                if v.starts_with("rediss://") {
                    tls += 1;
                } else {
                    plain += 1;
                }
                nodes.push(Y::Str(v.into(), Mark::Good));
            }
        }
        // No sentinel at all, or TLS to some and not others.
        if nodes.is_empty() || (plain > 0 && tls > 0) {
            self.expected.push(Expected {
                key: key.into(),
                line: None,
            });
        }
        let mut t = vec![
            ("nodes".into(), Y::Seq(nodes)),
            (
                "master_name".into(),
                self.text_y(
                    "rate_limits.redis.sentinel.master_name",
                    &["egress", "mymaster", "gw-1"],
                    &["", "two words", " "],
                )?,
            ),
        ];
        if self.maybe()? {
            t.push(("username".into(), Y::Str("sentinel".into(), Mark::Good)));
        }
        if self.maybe()? {
            let readable = KEYS.good[0];
            let y = self.text_y(
                "rate_limits.redis.sentinel.password_file",
                &[readable],
                &["/nonexistent/sentinel.secret"],
            )?;
            t.push(("password_file".into(), y));
        }
        self.spoil(t)
    }

    /// One of `rate_limits.custom`: at most one bad field, since the
    /// loader stops at an entry's first.
    fn custom_limit(&mut self, i: usize) -> Result<Y> {
        let at = format!("rate_limits.custom[{i}]");
        let bad = if self.chance(15)? {
            Some(self.u.int_in_range(0..=4u8)?)
        } else {
            None
        };
        let name = if bad == Some(0) {
            let v = self.pick(&["", "Tenant", "two words", "messages_per_sender"])?;
            Y::Str(v.into(), Mark::Bad(format!("{at}.name")))
        } else {
            Y::Str(format!("c{i}"), Mark::Good)
        };
        let count = self.pick(&[
            "messages",
            "recipients",
            "bytes",
            "bounces",
            "distinct_recipients",
        ])?;
        // Keys that go with the counter: a bounce has no sender, distinct
        // recipients are not counted per recipient.
        let keys: &[&str] = match count {
            "bounces" => &[
                "client",
                "client_network",
                "user",
                "class",
                "recipient",
                "recipient_domain",
                "user+recipient_domain",
            ],
            "distinct_recipients" => &[
                "client",
                "client_network",
                "sender",
                "sender_domain",
                "user",
                "class",
                "user+client",
            ],
            _ => &[
                "client",
                "sender_domain",
                "recipient_domain",
                "user+recipient_domain",
                "sender+recipient",
                "class",
            ],
        };
        let key = if bad == Some(1) {
            let v = self.pick(&["nobody", "client+client", "user+class+client", ""])?;
            Y::Str(v.into(), Mark::Bad(format!("{at}.key")))
        } else {
            Y::Str(self.pick(keys)?.into(), Mark::Good)
        };
        let count_y = if bad == Some(2) {
            let v = self.pick(&["mails", "", "Bytes"])?;
            Y::Str(v.into(), Mark::Bad(format!("{at}.count")))
        } else {
            Y::Str(count.into(), Mark::Good)
        };
        let (good_rates, bad_rates): (&[&str], &[&str]) = if count == "bytes" && bad != Some(2) {
            (
                &["500MB/d", "2GiB/w", "unlimited", "10 MB/h"],
                &["5/x", "MB/d", "", "lots/d"],
            )
        } else {
            (RATES, BAD_RATES)
        };
        let rate = if bad == Some(3) {
            let v = self.pick(bad_rates)?;
            Y::Str(v.into(), Mark::Bad(format!("{at}.rate")))
        } else {
            Y::Str(self.pick(good_rates)?.into(), Mark::Good)
        };
        let mut c = vec![
            ("name".into(), name),
            ("key".into(), key),
            ("count".into(), count_y),
            ("rate".into(), rate),
        ];
        if bad == Some(4) {
            let v = self.pick(BAD_WARN_LEVELS)?;
            c.push((
                "warn_at".into(),
                Y::Str(v.into(), Mark::Bad(format!("{at}.warn_at"))),
            ));
        } else if self.maybe()? {
            c.push((
                "warn_at".into(),
                Y::Str(self.pick(WARN_LEVELS)?.into(), Mark::Good),
            ));
        }
        if self.maybe()? {
            c.push(("mode".into(), self.keyword(MODES)?));
        }
        self.spoil(c)
    }

    fn rate_limits(&mut self) -> Result<Y> {
        let mut s = Vec::new();
        if self.maybe()? {
            s.push(("backend".into(), self.keyword(BACKENDS)?));
        }
        if self.maybe()? {
            let mut r = Vec::new();
            self.optional(
                &mut r,
                "url",
                "rate_limits.redis.url",
                REDIS_URLS,
                BAD_REDIS_URLS,
            )?;
            if self.maybe()? {
                let p = self.pick(&["egress:", "", "gw1/", "ünï"])?;
                r.push(("key_prefix".into(), Y::Str(p.into(), Mark::Good)));
            }
            if self.maybe()? {
                r.push(("on_failure".into(), self.keyword(ON_FAILURE)?));
            }
            for (name, key) in [
                ("timeout", "rate_limits.redis.timeout"),
                ("lease", "rate_limits.redis.lease"),
            ] {
                self.optional(&mut r, name, key, DURATIONS, BAD_DURATIONS)?;
            }
            if self.maybe()? {
                r.push(("username".into(), Y::Str("egress".into(), Mark::Good)));
            }
            if self.maybe()? {
                let readable = KEYS.good[0];
                let (y, _) = self.text(
                    "rate_limits.redis.password_file",
                    &[readable],
                    &["/nonexistent/redis.secret"],
                )?;
                r.push(("password_file".into(), y));
            }
            if self.chance(30)? {
                if r.iter().any(|(k, _)| k == "url") {
                    self.expected.push(Expected {
                        key: "rate_limits.redis.url".into(),
                        line: None,
                    });
                }
                let t = self.sentinel()?;
                r.push(("sentinel".into(), t));
            }
            s.push(("redis".into(), self.spoil(r)?));
        }
        self.optional(
            &mut s,
            "warn_at",
            "rate_limits.warn_at",
            WARN_LEVELS,
            BAD_WARN_LEVELS,
        )?;
        if self.chance(10)? {
            // true needs incidents.notify, which is not always written.
            s.push(("warn_notify".into(), Y::Plain("false".into(), Mark::Good)));
        }
        if self.maybe()? {
            let mut list = Vec::new();
            for i in 0..self.u.int_in_range(0..=3)? {
                list.push(self.custom_limit(i)?);
            }
            s.push(("custom".into(), Y::Seq(list)));
        }
        if self.maybe()? {
            s.push(("max_keys".into(), self.count("rate_limits.max_keys", 1000)?));
        }
        if self.maybe()? {
            let mut k = Vec::new();
            if self.maybe()? {
                k.push(("fold_case".into(), self.boolean()?));
            }
            self.optional(
                &mut k,
                "delimiter",
                "rate_limits.keys.delimiter",
                &["+", "+-", "", "-_=", "."],
                &["a", "+ ", "@", "\"", "1"],
            )?;
            s.push(("keys".into(), self.spoil(k)?));
        }
        // The older spelling of admin.listen: TCP, which needs a token
        // file this generator never writes, so every value is refused.
        if self.maybe()? {
            let all: Vec<&str> = LOOPBACK_ADDRS
                .iter()
                .chain(BAD_ADMIN_ADDRS)
                .copied()
                .collect();
            let v = self.pick(&all)?;
            s.push((
                "admin_listen".into(),
                Y::Str(v.into(), Mark::Bad("rate_limits.admin_listen".into())),
            ));
        }
        self.limits("rate_limits", &mut s)?;
        if self.maybe()? {
            let mut list = Vec::new();
            for i in 0..self.u.int_in_range(0..=3)? {
                let key = format!("rate_limits.overrides[{i}]");
                let matcher = self.pick(&[
                    "10.0.0.0/8",
                    "192.0.2.7",
                    "@example.com",
                    "@*.example.org",
                    "alice@example.com",
                    "app",
                    "bob",
                ])?;
                let m = if self.chance(12)? {
                    let bad = self.pick(&[
                        "10.1.2.7/24",
                        "@",
                        "@a..b",
                        "a@",
                        "two words",
                        "",
                        "10.0.0.0/40",
                    ])?;
                    Y::Str(bad.into(), Mark::Bad(format!("{key}.match")))
                } else {
                    Y::Str(matcher.into(), Mark::Good)
                };
                let mut o = vec![("match".into(), m)];
                if self.limits(&key, &mut o)? == 0 {
                    self.expected.push(Expected {
                        key: key.clone(),
                        line: None,
                    });
                }
                list.push(self.spoil(o)?);
            }
            s.push(("overrides".into(), Y::Seq(list)));
        }
        self.spoil(s)
    }

    /// The dkim section, and the headers it signs (for `headers.remove`).
    fn dkim(&mut self) -> Result<(Option<Y>, Vec<String>)> {
        let mut signed: Vec<String> = egress_milter::dkim::DEFAULT_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !self.maybe()? {
            return Ok((None, signed));
        }
        let mut s = Vec::new();
        if self.maybe()? {
            let mut keys = Vec::new();
            for i in 0..self.u.int_in_range(0..=2)? {
                let key = format!("dkim.keys[{i}]");
                let (domain, domain_ok) =
                    self.text(&format!("{key}.domain"), DOMAINS, BAD_DOMAINS)?;
                // A wildcard is not a key's domain.
                let domain = match domain {
                    Y::Str(d, Mark::Good) if d.starts_with("*.") => {
                        Y::Str(d, Mark::Bad(format!("{key}.domain")))
                    }
                    y => y,
                };
                let (selector, selector_ok) =
                    self.text(&format!("{key}.selector"), SELECTORS, BAD_SELECTORS)?;
                // The loader checks the domain, then the selector, then the
                // file, and stops at the first that is wrong.
                let domain_ok = domain_ok && matches!(&domain, Y::Str(_, Mark::Good));
                let file = if domain_ok && selector_ok {
                    self.text_y(&format!("{key}.file"), &KEYS.good, &KEYS.bad)?
                } else {
                    Y::Str(self.pick(&["/dev/zero", "k.pem"])?.into(), Mark::Good)
                };
                let selector = if domain_ok {
                    selector
                } else {
                    match selector {
                        Y::Str(v, _) => Y::Str(v, Mark::Good),
                        y => y,
                    }
                };
                keys.push(self.spoil(vec![
                    ("domain".into(), domain),
                    ("selector".into(), selector),
                    ("file".into(), file),
                ])?);
            }
            s.push(("keys".into(), Y::Seq(keys)));
        }
        if self.maybe()? {
            s.push(("sign".into(), self.keyword(SIGN)?));
        }
        if self.maybe()? {
            let mut h = Vec::new();
            for _ in 0..self.u.int_in_range(0..=4)? {
                h.push(self.pick(HEADERS_SIGNED)?.to_string());
            }
            if h.iter().any(|x| x.eq_ignore_ascii_case("from")) {
                signed = h.clone();
            } else {
                self.expected.push(Expected {
                    key: "dkim.headers".into(),
                    line: Some(1),
                });
            }
            let items = h.into_iter().map(|x| Y::Str(x, Mark::Good)).collect();
            s.push(("headers".into(), Y::Seq(items)));
        }
        if self.maybe()? {
            s.push(("on_unsigned".into(), self.keyword(ON_UNSIGNED)?));
        }
        if self.maybe()? {
            s.push(("verify_existing".into(), self.keyword(CHECK_MODES)?));
        }
        if self.maybe()? {
            s.push((
                "max_signatures".into(),
                self.count("dkim.max_signatures", 1)?,
            ));
        }
        Ok((Some(self.spoil(s)?), signed))
    }

    fn content(&mut self) -> Result<Y> {
        let mut s = Vec::new();
        self.optional(
            &mut s,
            "max_message_size",
            "content.max_message_size",
            SIZES,
            BAD_SIZES,
        )?;
        self.optional_list(
            &mut s,
            "banned_extensions",
            "content.banned_extensions",
            EXTENSIONS,
            BAD_EXTENSIONS,
            3,
        )?;
        let mut scores = [10.0, 7.0, 4.0];
        let mut tag_written = false;
        for (i, name) in ["reject_score", "tempfail_score", "tag_score"]
            .into_iter()
            .enumerate()
        {
            if self.maybe()? {
                let (y, v) = self.float(&format!("content.{name}"), true)?;
                if let Some(v) = v {
                    scores[i] = v;
                }
                tag_written |= i == 2;
                s.push((name.into(), y));
            }
        }
        if scores[1] > scores[0] || scores[2] > scores[1] {
            self.expected.push(Expected {
                key: "content".into(),
                line: (!tag_written).then_some(1),
            });
        }
        if self.maybe()? {
            let c = self.count("content.max_header_recipients", 1)?;
            s.push(("max_header_recipients".into(), c));
        }
        if self.maybe()? {
            let mut w = Vec::new();
            for name in [
                "missing_date",
                "missing_message_id",
                "malformed_mime",
                "html_only",
                "link_mismatch",
                "many_recipients",
            ] {
                if self.maybe()? {
                    w.push((name.into(), self.float("", false)?.0));
                }
            }
            s.push(("rules".into(), self.spoil(w)?));
        }
        if self.maybe()? {
            let mut list = Vec::new();
            for i in 0..self.u.int_in_range(0..=2)? {
                let key = format!("content.custom[{i}]");
                let mut r = vec![(
                    "name".into(),
                    Y::Str(self.pick(&["lottery", "", "x y"])?.into(), Mark::Good),
                )];
                let mut any = false;
                for field in ["subject", "body"] {
                    if self.maybe()? {
                        any = true;
                        let y = self.text_y(&format!("{key}.{field}"), REGEXES, BAD_REGEXES)?;
                        r.push((field.into(), y));
                    }
                }
                if !any {
                    self.expected.push(Expected {
                        key: key.clone(),
                        line: None,
                    });
                }
                r.push(("score".into(), self.float("", false)?.0));
                list.push(self.spoil(r)?);
            }
            s.push(("custom".into(), Y::Seq(list)));
        }
        if self.maybe()? {
            let (url, url_ok) = self.text("content.rspamd.url", HTTP_URLS, BAD_HTTP_URLS)?;
            let mut r = vec![("url".into(), url)];
            if self.maybe()? {
                // The timeout is only read once the URL is good.
                let (t, _) = self.text("content.rspamd.timeout", DURATIONS, BAD_DURATIONS)?;
                let t = match t {
                    Y::Str(v, _) if !url_ok => Y::Str(v, Mark::Good),
                    t => t,
                };
                r.push(("timeout".into(), t));
            }
            s.push(("rspamd".into(), self.spoil(r)?));
        }
        self.spoil(s)
    }
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes block-style YAML, and the line of every scalar marked bad.
struct Writer {
    text: String,
    line: u64,
    bad: Vec<Expected>,
}

impl Writer {
    fn scalar(&mut self, y: &Y) -> Option<String> {
        let (text, mark) = match y {
            Y::Str(s, m) => (quote(s), m),
            Y::Plain(s, m) => (s.clone(), m),
            Y::Map(m) if m.is_empty() => return Some("{}".into()),
            Y::Seq(s) if s.is_empty() => return Some("[]".into()),
            _ => return None,
        };
        if let Mark::Bad(key) = mark {
            self.bad.push(Expected {
                key: key.clone(),
                line: Some(self.line),
            });
        }
        Some(text)
    }

    fn push_line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
        self.line += 1;
    }

    fn node(&mut self, y: &Y, indent: usize) {
        let pad = " ".repeat(indent);
        match y {
            Y::Map(entries) => {
                for (k, v) in entries {
                    match self.scalar(v) {
                        Some(s) => self.push_line(&format!("{pad}{k}: {s}")),
                        None => {
                            self.push_line(&format!("{pad}{k}:"));
                            self.node(v, indent + 2);
                        }
                    }
                }
            }
            Y::Seq(items) => {
                for item in items {
                    match self.scalar(item) {
                        Some(s) => self.push_line(&format!("{pad}- {s}")),
                        None => {
                            self.push_line(&format!("{pad}-"));
                            self.node(item, indent + 2);
                        }
                    }
                }
            }
            scalar => {
                if let Some(s) = self.scalar(scalar) {
                    self.push_line(&format!("{pad}{s}"));
                }
            }
        }
    }
}

fn path() -> PathBuf {
    // Relative key paths are taken from the configuration's directory.
    std::env::temp_dir()
        .join("egress-milter-fuzz-keys")
        .join("milter.yaml")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut g = Gen {
        u: &mut u,
        expected: Vec::new(),
        type_error: false,
    };
    let Ok(doc) = g.document() else {
        return;
    };
    let (mut expected, type_error) = (g.expected, g.type_error);
    let mut w = Writer {
        text: String::new(),
        line: 1,
        bad: Vec::new(),
    };
    w.node(&doc, 0);
    expected.append(&mut w.bad);
    let text = w.text;
    let lines = text.lines().count() as u64;
    match egress_milter::config::Config::parse(&path(), &text) {
        Ok(_) => assert!(
            expected.is_empty() && !type_error,
            "loaded, but should have refused {:?}:\n{text}",
            expected
                .iter()
                .map(|e| (&e.key, e.line))
                .collect::<Vec<_>>()
        ),
        Err(errors) => {
            assert!(
                !expected.is_empty() || type_error,
                "refused a good document: {errors}\n{text}"
            );
            let file = path().display().to_string();
            for e in &errors.0 {
                assert!(
                    e.line <= lines + 1,
                    "line {} of {lines}: {e}\n{text}",
                    e.line
                );
                // What the administrator reads: file, line and key.
                let shown = e.to_string();
                let mut head = format!("{file}:{}: ", e.line);
                if !e.key.is_empty() {
                    head.push_str(&format!("{}: ", e.key));
                }
                assert!(e.line > 0 && shown.starts_with(&head), "{shown}");
            }
            if !type_error {
                for x in &expected {
                    assert!(
                        errors
                            .0
                            .iter()
                            .any(|e| e.key == x.key && x.line.is_none_or(|l| l == e.line)),
                        "no error for {} (line {:?}) in:\n{errors}\n{text}",
                        x.key,
                        x.line
                    );
                }
            }
        }
    }
});
