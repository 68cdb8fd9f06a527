//! rspamd, the spam engine serious sites run: the message goes to its
//! `/checkv2` endpoint with the envelope and client data, and its action
//! and score come back (its symbols are logged).

use std::time::Duration;

/// What rspamd said of a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `reject`, `soft reject`, `greylist`, `rewrite subject`, `add header`
    /// or `no action`.
    pub action: String,
    pub score: f64,
    /// The symbols that fired, highest score first.
    pub symbols: Vec<(String, f64)>,
}

impl Report {
    pub fn symbols_text(&self, max: usize) -> String {
        self.symbols
            .iter()
            .take(max)
            .map(|(n, s)| format!("{n}={s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The envelope and client facts rspamd scores with.
pub struct Envelope<'a> {
    pub client_ip: Option<String>,
    pub helo: Option<&'a str>,
    pub hostname: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub login: Option<&'a str>,
    pub queue_id: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rspamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("rspamd: {0}")]
    Http(String),
    #[error("rspamd answered something unreadable: {0}")]
    Answer(String),
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url: format!("{}/checkv2", base.trim_end_matches('/')),
            timeout,
        })
    }

    pub async fn check(&self, message: bytes::Bytes, env: &Envelope<'_>) -> Result<Report, Error> {
        let mut req = self.http.post(&self.url).header("From", env.sender);
        for r in env.recipients {
            req = req.header("Rcpt", r.as_str());
        }
        if let Some(ip) = &env.client_ip {
            req = req.header("IP", ip.as_str());
        }
        if let Some(h) = env.helo {
            req = req.header("Helo", h);
        }
        req = req.header("Hostname", env.hostname);
        if let Some(l) = env.login {
            req = req.header("User", l);
        }
        if let Some(q) = env.queue_id {
            req = req.header("Queue-Id", q);
        }
        let response = req.body(message).send().await.map_err(|e| {
            if e.is_timeout() {
                Error::Timeout(self.timeout)
            } else {
                Error::Http(e.to_string())
            }
        })?;
        if !response.status().is_success() {
            return Err(Error::Http(format!("HTTP {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        parse(&body)
    }
}

/// Reads rspamd's JSON answer.
pub fn parse(body: &[u8]) -> Result<Report, Error> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::Answer(e.to_string()))?;
    let action = v
        .get("action")
        .and_then(|a| a.as_str())
        .ok_or_else(|| Error::Answer("no action".into()))?
        .to_string();
    let score = v.get("score").and_then(|s| s.as_f64()).unwrap_or(0.0);
    let mut symbols: Vec<(String, f64)> = v
        .get("symbols")
        .and_then(|s| s.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        s.get("score").and_then(|x| x.as_f64()).unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    symbols.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Report {
        action,
        score,
        symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let v = parse(br#"{"action":"reject","score":1001.5,"symbols":{"GTUBE":{"score":1000},"MISSING_DATE":{"score":1.5}}}"#).unwrap();
        assert_eq!(v.action, "reject");
        assert_eq!(v.symbols_text(5), "GTUBE=1000.0, MISSING_DATE=1.5");
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"score":1}"#).is_err());
    }
}
