//! `dkim.rotation` against a real BIND 9 as the zone's authoritative
//! server (and as the gateway's resolver): a key signs only once DNS
//! serves its record, exactly; the old key signs until then; messages
//! signed before and after verify with python3-dkim against BIND's
//! answers; `dkim status` and `dkim records` say where each key stands.

use crate::common::{self, bind::Bind, cli};
use crate::dkim_spf::send;
use egress_milter::config::Config;
use egress_milter::rotation::ring::{Algorithm, Key, Ring, State};
use egress_milter::rotation::store::Store;
use std::path::Path;
use std::time::Duration;

/// python3-dkim verifies every signature, asking BIND for the keys.
fn verified_by_bind(bind: &Bind, message: &str) -> bool {
    common::python_dkim_with(
        message,
        &format!(
            "import dns.resolver as resolver\n\
             r = resolver.Resolver(configure=False)\n\
             r.nameservers = ['127.0.0.1']\n\
             r.port = {}\n\
             def dns(name, timeout=5):\n    \
                 try:\n        a = r.resolve(name.decode(), 'TXT')\n    \
                 except Exception:\n        return None\n    \
                 return b''.join(b''.join(x.strings) for x in a)\n",
            bind.port
        ),
    )
}

/// The selectors of a message's DKIM signatures.
fn selectors(message: &str) -> Vec<String> {
    message
        .split("DKIM-Signature:")
        .skip(1)
        .filter_map(|sig| {
            sig.split(';')
                .map(|t| t.trim())
                .find_map(|t| t.strip_prefix("s=").map(String::from))
        })
        .collect()
}

fn ring(dir: &Path) -> Ring {
    Store::at(dir).load().unwrap()
}

fn key(dir: &Path, a: Algorithm) -> Option<Key> {
    ring(dir)
        .keys
        .into_iter()
        .filter(|k| k.algorithm == a)
        .max_by_key(|k| k.created)
}

/// Waits (bounded) until the key of `a` satisfies `ok`.
async fn until_key(dir: &Path, a: Algorithm, what: &str, ok: impl Fn(&Key) -> bool) -> Key {
    common::until(Duration::from_secs(20), what, || match key(dir, a) {
        Some(k) if ok(&k) => Ok(k),
        other => Err(format!("{other:?}")),
    })
    .await
}

/// Waits (bounded) until the daemon signs with `selector`: its state
/// shows 1 (active) in the metrics, set once the daemon has loaded the
/// key, after the ring on disk already says active.
async fn until_signing(d: &common::Daemon, selector: &str) {
    let needle = format!("selector=\"{selector}\"");
    common::until(
        std::time::Duration::from_secs(20),
        "the daemon signing with the key",
        || {
            d.metrics()
                .lines()
                .any(|l| {
                    l.starts_with("egress_dkim_key_state{")
                        && l.contains(&needle)
                        && l.ends_with(" 1")
                })
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
}

/// `milter.yaml` in `dir`: class app at 10.0.0.0/8 for example.com, BIND
/// as resolver and as the zone's server, rotation of example.com with its
/// keys in `dir/keys` stepped every second; `dkim` and `rotation` lines
/// added.
fn write_config(bind: &Bind, dir: &Path, dkim: &str, rotation: &str) -> std::path::PathBuf {
    write_config_with(bind, dir, dkim, rotation, "")
}

/// [`write_config`], with more top-level lines.
fn write_config_with(
    bind: &Bind,
    dir: &Path,
    dkim: &str,
    rotation: &str,
    more: &str,
) -> std::path::PathBuf {
    let path = dir.join("milter.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: inet:127.0.0.1:1
local_domains: [example.com]
classes:
  - {{ name: app, clients: [10.0.0.0/8], sender_domains: [example.com] }}
dns: {{ nameservers: [\"127.0.0.1:{port}\"], timeout: 2s }}
dkim:
{dkim}  rotation:
    domains: [example.com]
    key_dir: \"{dir}/keys\"
    check_every: 1s
    dns_port: {port}
{rotation}admin: {{ listen: \"unix:{dir}/admin.sock\" }}
{more}",
            port = bind.port,
            dir = dir.display(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_only_once_dns_serves_it_and_the_old_key_until_then() {
    let bind = Bind::start("");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    // A hand-made RSA key, published: it signs until the rotation's RSA
    // key is served.
    let (pem, record) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    let hand = dir.path().join("hand.pem");
    std::fs::write(&hand, pem).unwrap();
    bind.update(&format!(
        "update add hand._domainkey.example.com 60 TXT {}",
        egress_milter::dkim::txt_strings(&record)
    ));
    let path = write_config(
        &bind,
        dir.path(),
        &format!(
            "  keys: [{{ domain: example.com, selector: hand, file: \"{}\" }}]\n",
            hand.display()
        ),
        "",
    );
    let d = common::start_with(Config::load(&path).unwrap()).await;

    // The first step makes a pending key of each algorithm: nothing of
    // them is in DNS, so the hand key signs.
    let rsa = until_key(&keys, Algorithm::Rsa, "an RSA key made", |k| {
        k.state == State::Pending
            && k.waiting
                .as_deref()
                .is_some_and(|w| w.contains("no TXT record"))
    })
    .await;
    let ed = key(&keys, Algorithm::Ed25519).unwrap();
    assert_eq!(ed.state, State::Pending);
    assert!(rsa.selector.starts_with("rsa20"), "{}", rsa.selector);
    let mut conn = d.client("10.0.0.1").await;
    let (reply, message) = send(&mut conn, "app@example.com", &[]).await;
    assert_eq!(reply, "continue");
    assert_eq!(selectors(&message), ["hand"]);
    assert!(verified_by_bind(&bind, &message), "{message}");
    // (The check can fail: a changed body does not verify.)
    assert!(!verified_by_bind(
        &bind,
        &message.replace("this is the body", "this is a body")
    ));

    // Another key published under the RSA selector: it stays pending, and
    // says why.
    let (_, wrong) = egress_milter::dkim::generate("rsa", 2048).unwrap();
    bind.update(&format!(
        "update add {}. 60 TXT {}",
        rsa.name(),
        egress_milter::dkim::txt_strings(&wrong)
    ));
    until_key(&keys, Algorithm::Rsa, "the wrong record seen", |k| {
        k.state == State::Pending
            && k.waiting
                .as_deref()
                .is_some_and(|w| w.contains("another key"))
    })
    .await;
    let (_, message) = send(&mut conn, "app@example.com", &[]).await;
    assert_eq!(selectors(&message), ["hand"]);

    // `dkim records` prints what to publish; published as printed, the
    // key signs from the next step on, in place of the hand key.
    let records = cli::with_config(&path, &["dkim", "records"]);
    assert_eq!(records.code, 0, "{}", records.text());
    let line = records
        .stdout
        .lines()
        .find(|l| l.starts_with(&rsa.name()))
        .unwrap_or_else(|| panic!("{}", records.stdout));
    let value = line
        .split_once(" TXT ")
        .map(|(_, v)| v.trim_matches('"').to_string())
        .unwrap();
    assert_eq!(value, rsa.record);
    bind.update(&format!(
        "update delete {name}. TXT\nupdate add {name}. 60 TXT {}",
        egress_milter::dkim::txt_strings(&value),
        name = rsa.name()
    ));
    assert_eq!(bind.dig(&rsa.name(), "TXT"), rsa.record);
    until_key(&keys, Algorithm::Rsa, "the RSA key active", |k| {
        k.state == State::Active
    })
    .await;
    until_signing(&d, &rsa.selector).await;
    let (reply, message) = send(&mut conn, "app@example.com", &[]).await;
    assert_eq!(reply, "continue");
    assert_eq!(selectors(&message), std::slice::from_ref(&rsa.selector));
    assert!(verified_by_bind(&bind, &message), "{message}");
    assert!(d.metrics().contains(&format!(
        "egress_dkim_key_state{{domain=\"example.com\",selector=\"{}\",algorithm=\"rsa\"}} 1",
        rsa.selector
    )));

    // Where each key stands.
    let status = cli::with_config(&path, &["dkim", "status"]);
    assert_eq!(status.code, 0, "{}", status.text());
    let row = |sel: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.contains(sel))
            .unwrap_or_else(|| panic!("{}", status.stdout))
            .to_string()
    };
    assert!(row(&rsa.selector).contains(" active "), "{}", status.stdout);
    assert!(
        row(&rsa.selector).contains("replaced from 20"),
        "{}",
        status.stdout
    );
    assert!(row(&ed.selector).contains(" pending "), "{}", status.stdout);
    assert!(
        row(&ed.selector).contains("waits for its record")
            && row(&ed.selector).contains("no TXT record"),
        "{}",
        status.stdout
    );
    let zone = cli::with_config(&path, &["dkim", "records", "--zone"]);
    assert!(
        zone.stdout.contains(&format!(
            "{}. 3600 IN TXT ( \"v=DKIM1; k=ed25519; p=",
            ed.name()
        )),
        "{}",
        zone.stdout
    );
    // An active key whose private key is lost: status and selfcheck say
    // so (exit 1).
    std::fs::remove_file(Store::at(&keys).key_path(&rsa)).unwrap();
    let status = cli::with_config(&path, &["dkim", "status"]);
    assert_eq!(status.code, 1, "{}", status.text());
    assert!(
        status.stdout.contains(&format!("error: {}", rsa.name())),
        "{}",
        status.stdout
    );
    let check = cli::with_config(&path, &["selfcheck"]);
    assert_eq!(check.code, 1, "{}", check.text());
    // The active key's record, as DNS serves it, is ours (what the
    // reputation watch follows).
    let served = check
        .stdout
        .lines()
        .find(|l| l.starts_with("dkim ") && l.contains(&rsa.name()))
        .unwrap_or_else(|| panic!("{}", check.stdout));
    assert!(served.contains("rsa key published and ours"), "{served}");
    let line = check
        .stdout
        .lines()
        .find(|l| l.contains("dkim rotation"))
        .unwrap_or_else(|| panic!("{}", check.stdout));
    assert!(
        line.contains(&rsa.name()) && line.contains("FAIL"),
        "{line}"
    );
    d.stop().await;
}

/// `publish: rfc2136`: the daemon sends the records itself (TSIG-signed
/// updates to BIND), switches once BIND serves them, and after an
/// emergency rotation (`dkim rotate --now`) the old key's record becomes
/// `p=`, then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rfc2136_the_records_are_published_revoked_and_removed_in_bind() {
    let bind = Bind::start("");
    let mut hook = common::webhook::Webhook::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let path = write_config_with(
        &bind,
        dir.path(),
        "",
        &format!(
            "    publish: rfc2136
    rfc2136: {{ server: \"127.0.0.1:{}\", zone: example.com, tsig_key_file: \"{}\" }}
    retire_after: 2s
    revoke_after: 2s
    reveal: {{ dir: \"{}/revealed\", url: \"https://example.com/dkim-old/\" }}
",
            bind.port,
            bind.key_file().display(),
            dir.path().display()
        ),
        &format!(
            "incidents: {{ notify: {{ webhook: {{ url: \"{}\" }} }} }}\n",
            hook.url()
        ),
    );
    let d = common::start_with(Config::load(&path).unwrap()).await;
    // Made, published by the daemon, served by BIND: both keys sign.
    let rsa = until_key(&keys, Algorithm::Rsa, "the RSA key active", |k| {
        k.state == State::Active
    })
    .await;
    let ed = until_key(&keys, Algorithm::Ed25519, "the Ed25519 key active", |k| {
        k.state == State::Active
    })
    .await;
    assert_eq!(bind.dig(&rsa.name(), "TXT"), rsa.record);
    until_signing(&d, &rsa.selector).await;
    until_signing(&d, &ed.selector).await;
    let mut conn = d.client("10.0.0.1").await;
    let (_, before) = send(&mut conn, "app@example.com", &[]).await;
    let mut signed = selectors(&before);
    signed.sort();
    assert_eq!(signed, [ed.selector.clone(), rsa.selector.clone()]);
    assert!(verified_by_bind(&bind, &before), "{before}");
    let rsa_pem = std::fs::read_to_string(Store::at(&keys).key_path(&rsa)).unwrap();

    // An emergency rotation: new keys, switched to once served; the old
    // ones revoked as soon as the new ones sign.
    let out = cli::with_config(&path, &["dkim", "rotate", "--now"]);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("made rsa"), "{}", out.stdout);
    let new = until_key(&keys, Algorithm::Rsa, "a new RSA key active", |k| {
        k.state == State::Active && k.selector != rsa.selector
    })
    .await;
    assert!(
        new.selector.starts_with(&format!("{}-", rsa.selector)),
        "{}",
        new.selector
    );
    until_signing(&d, &new.selector).await;
    let (_, after) = send(&mut conn, "app@example.com", &[]).await;
    assert!(selectors(&after).contains(&new.selector), "{after}");
    assert!(verified_by_bind(&bind, &after), "{after}");
    // Revoked: its record p=, noting where its private key is revealed
    // (reveal), and the private key there for the web server, no longer
    // in key_dir.
    let revoked = format!(
        "v=DKIM1; n=revoked, private key published at https://example.com/dkim-old/{}.pem; p=",
        rsa.name()
    );
    common::until(
        Duration::from_secs(20),
        "the old record revoked in BIND",
        || match bind.dig(&rsa.name(), "TXT") {
            v if v == revoked => Ok(()),
            v => Err(v),
        },
    )
    .await;
    assert!(
        !Store::at(&keys).key_path(&rsa).exists(),
        "the revoked private key is deleted"
    );
    let revealed = dir
        .path()
        .join("revealed")
        .join(format!("{}.pem", rsa.name()));
    assert_eq!(std::fs::read_to_string(&revealed).unwrap(), rsa_pem);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&revealed).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // Then the record goes, and the key with it.
    common::until(
        Duration::from_secs(20),
        "the old record removed from BIND",
        || match bind.dig(&rsa.name(), "TXT") {
            v if v.is_empty() => Ok(()),
            v => Err(v),
        },
    )
    .await;
    common::until(
        Duration::from_secs(10),
        "the old key gone from the state",
        || {
            if ring(&keys).keys.iter().any(|k| k.selector == rsa.selector) {
                Err(format!("{:?}", ring(&keys).keys))
            } else {
                Ok(())
            }
        },
    )
    .await;
    // Each change was told, the revocation with the record to hold.
    let mut told = Vec::new();
    while let Some(doc) = hook.next(3).await {
        assert_eq!(doc["event"], "dkim_key", "{doc}");
        if doc["selector"] == rsa.selector.as_str() {
            told.push((
                doc["change"].as_str().unwrap_or("").to_string(),
                doc["record"].clone(),
            ));
        }
    }
    let changes: Vec<&str> = told.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        changes,
        ["made", "activated", "retired", "revoked", "removed"]
    );
    assert_eq!(told[3].1, revoked.as_str());
    d.stop().await;
}
