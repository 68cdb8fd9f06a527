//! An LDAP source: one connection reused by every lookup (LDAP multiplexes
//! requests on it), servers tried in order when one fails, every step under
//! the source's timeout.

use crate::config::{LdapScope, LdapSettings};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};
use tokio::sync::Mutex;

/// The most entries one lookup reads: a key names one user or a few.
const SIZE_LIMIT: i32 = 1000;
/// LDAP result codes that still carry entries (RFC 4511 §4.1.9).
const SIZE_LIMIT_EXCEEDED: u32 = 4;

pub struct Directory {
    settings: LdapSettings,
    /// For ldaps:// and StartTLS with `ca_file`; the system's roots else.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The connection in use and the index of its server.
    conn: Mutex<Option<(Ldap, usize)>>,
    /// The server to try first: the last one that answered.
    preferred: AtomicUsize,
}

impl Directory {
    pub fn new(settings: &LdapSettings) -> Result<Self, String> {
        let tls = match &settings.ca_file {
            Some(path) => Some(tls_config(path)?),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            tls,
            conn: Mutex::new(None),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The entries' attribute values for a key; `None` when no entry
    /// matches. Each server is tried at most once, under the timeout.
    pub async fn search(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        let filter = self.settings.filter.replace("%s", &ldap3::ldap_escape(key));
        let servers = self.settings.urls.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..servers {
            let index = (first + i) % servers;
            let attempt =
                tokio::time::timeout(self.settings.timeout, self.search_on(index, &filter));
            let result = match attempt.await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", self.settings.timeout)),
            };
            match result {
                Ok(v) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    self.forget(index).await;
                    errors.push(format!("{}: {e}", self.settings.urls[index]));
                }
            }
        }
        Err(errors.join("; "))
    }

    async fn search_on(&self, index: usize, filter: &str) -> Result<Option<Vec<String>>, String> {
        let mut ldap = self.connection(index).await?;
        let attrs: Vec<&str> = if self.settings.attributes.is_empty() {
            // RFC 4511 §4.5.1.8: no attributes, only whether entries match.
            vec!["1.1"]
        } else {
            self.settings
                .attributes
                .iter()
                .map(String::as_str)
                .collect()
        };
        let scope = match self.settings.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        };
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(SIZE_LIMIT))
            .search(&self.settings.base, scope, filter, attrs)
            .await
            .map_err(|e| e.to_string())?;
        let (entries, res) = (result.0, result.1);
        if res.rc != 0 && res.rc != SIZE_LIMIT_EXCEEDED {
            return Err(format!("search failed: {res}"));
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let mut values = Vec::new();
        for e in entries {
            let entry = SearchEntry::construct(e);
            for (name, vals) in entry.attrs {
                if self
                    .settings
                    .attributes
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&name))
                {
                    values.extend(vals);
                }
            }
        }
        Ok(Some(values))
    }

    /// The open connection to server `index`, or a new one (bound when a
    /// bind DN is set).
    async fn connection(&self, index: usize) -> Result<Ldap, String> {
        let mut slot = self.conn.lock().await;
        if let Some((ldap, i)) = slot.as_mut() {
            if *i == index && !ldap.is_closed() {
                return Ok(ldap.clone());
            }
        }
        *slot = None;
        let url = &self.settings.urls[index];
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(self.settings.timeout)
            .set_starttls(self.settings.starttls);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, url)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        ldap3::drive!(conn);
        if let Some(dn) = &self.settings.bind_dn {
            let password = self.settings.password.as_ref().map_or("", |p| p.0.as_str());
            ldap.simple_bind(dn, password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind as {dn} failed: {e}"))?;
        }
        *slot = Some((ldap.clone(), index));
        Ok(ldap)
    }

    /// Drops the connection to server `index` after a failure: the next
    /// lookup connects afresh.
    async fn forget(&self, index: usize) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|(_, i)| *i == index) {
            *slot = None;
        }
    }
}

/// A TLS client configuration trusting the authorities in a PEM file.
fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
