//! The console from the outside: an HTTP client that keeps the session
//! cookie as a browser would, users made with `console-user add`, and the
//! values the pages carry (CSRF tokens, queue ids).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

pub struct Http {
    base: String,
    client: reqwest::Client,
    pub cookie: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The value of the first hidden input named `name`.
    pub fn input(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no input {name} in {}", self.body));
        let rest = &self.body[at + needle.len()..];
        rest[..rest.find('"').unwrap_or(0)].to_string()
    }
}

/// `application/x-www-form-urlencoded`.
pub fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Http {
    pub fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            cookie: None,
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Page {
        let r = match &self.cookie {
            Some(c) => r.header("cookie", c.as_str()),
            None => r,
        };
        let resp = r.send().await.expect("console request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap_or_default();
            let pair = c.split(';').next().unwrap_or_default().to_string();
            if pair.ends_with('=') {
                self.cookie = None;
            } else {
                self.cookie = Some(pair);
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self.client.get(format!("{}{path}", self.base));
        self.send(r).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields));
        self.send(r).await
    }

    /// Logs in through the form; the login's answer.
    pub async fn login(&mut self, user: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        let token = form.input("token");
        self.post(
            "/login",
            &[("token", &token), ("user", user), ("password", password)],
        )
        .await
    }

    /// An admin action from a page's form (its CSRF token).
    pub async fn act(&mut self, csrf: &str, action: &str, target: &str) -> Page {
        self.post(
            "/act",
            &[("csrf", csrf), ("action", action), ("target", target)],
        )
        .await
    }
}

/// `egress-milter console-user add NAME --role ROLE --file FILE`, the
/// password on standard input.
pub fn add_user(file: &Path, name: &str, role: &str, password: &str) -> String {
    let mut child = Command::new(super::process::BIN)
        .args(["console-user", "add", name, "--role", role, "--file"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("console-user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    let out = child.wait_with_output().expect("console-user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
