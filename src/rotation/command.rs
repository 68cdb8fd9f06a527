//! `egress-milter dkim status | rotate | records`: the rotated keys as
//! `key_dir` holds them.

use super::ring::{Request, State};
use super::store::Store;
use crate::cli::{DkimAction, Exit};
use crate::config::{Config, RotationSettings};
use std::path::Path;

pub fn run(path: &Path, action: DkimAction) -> Exit {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Exit::Usage;
        }
    };
    let Some(settings) = config.dkim.rotation.clone() else {
        eprintln!(
            "egress-milter: dkim.rotation is not configured in {}",
            path.display()
        );
        return Exit::Usage;
    };
    let now = crate::incidents::now_ms() / 1000;
    match action {
        DkimAction::Status => status(&settings, now),
        DkimAction::Records { zone } => records(&settings, zone),
        DkimAction::Rotate {
            domain,
            now: urgent,
        } => rotate(&config, &settings, domain, urgent, now),
    }
}

/// `3d 4h`, `5h 2m`, `40s`.
fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn status(settings: &RotationSettings, now: u64) -> Exit {
    let store = Store::at(&settings.key_dir);
    let ring = match store.load() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Usage;
        }
    };
    println!(
        "{:<24} {:<9} {:<22} {:<9} {:<8} next",
        "domain", "algorithm", "selector", "state", "age"
    );
    let mut keys: Vec<_> = ring.keys.iter().collect();
    keys.sort_by(|a, b| {
        (&a.domain, a.algorithm, a.created).cmp(&(&b.domain, b.algorithm, b.created))
    });
    let mut ok = true;
    for k in &keys {
        println!(
            "{:<24} {:<9} {:<22} {:<9} {:<8} {}",
            k.domain,
            k.algorithm.as_str(),
            k.selector,
            k.state.as_str(),
            age(now.saturating_sub(k.created)),
            super::next_step(k, settings, now)
        );
        if k.state == State::Pending && now.saturating_sub(k.created) >= super::ring::LATE_AFTER {
            ok = false;
        }
    }
    for d in &settings.domains {
        for a in super::ring::Algorithm::ALL {
            if !keys
                .iter()
                .any(|k| k.domain == d.as_str() && k.algorithm == a)
            {
                println!(
                    "{:<24} {:<9} {:<22} {:<9} {:<8} made at the daemon's next step",
                    d,
                    a.as_str(),
                    "-",
                    "none",
                    "-"
                );
            }
        }
    }
    let (_, errors) = store.signing_keys(&ring);
    for e in &errors {
        println!("error: {e}");
        ok = false;
    }
    if keys.iter().any(|k| {
        k.state == State::Active
            && now.saturating_sub(k.created) > settings.every.as_secs() + super::ring::LATE_AFTER
    }) {
        println!("warning: a key is older than dkim.rotation.every and its replacement is not served yet");
        ok = false;
    }
    if ok {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

fn records(settings: &RotationSettings, zone: bool) -> Exit {
    let ring = match Store::at(&settings.key_dir).load() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Usage;
        }
    };
    if zone {
        println!("; DKIM keys of egress-milter (dkim.rotation), as they must be published now");
    }
    for k in &ring.keys {
        let value = k.published();
        if zone {
            println!(
                "; {} {} {}",
                k.algorithm.as_str(),
                k.state.as_str(),
                crate::incidents::rfc3339(k.since)
            );
            println!(
                "{}. 3600 IN TXT ( {} )",
                k.name(),
                crate::dkim::txt_strings(&value)
            );
        } else {
            println!("{} TXT \"{}\"", k.name(), value);
        }
    }
    Exit::Ok
}

fn rotate(
    config: &Config,
    settings: &RotationSettings,
    domain: Option<String>,
    urgent: bool,
    now: u64,
) -> Exit {
    if let Some(d) = &domain {
        if !settings
            .domains
            .iter()
            .any(|x| x.as_str() == d.trim_end_matches('.').to_ascii_lowercase())
        {
            eprintln!("egress-milter: {d} is not in dkim.rotation.domains");
            return Exit::Usage;
        }
    }
    let store = match Store::open(&settings.key_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("egress-milter: {}: {e}", settings.key_dir.display());
            return Exit::Usage;
        }
    };
    let asked = store.lock().and_then(|lock| {
        let mut ring = store.load()?;
        ring.requests.push(Request {
            domain: domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            now: urgent,
        });
        store.save(&ring, &lock)
    });
    if let Err(e) = asked {
        eprintln!("egress-milter: {}: {e}", settings.key_dir.display());
        return Exit::Failed;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: cannot start the runtime: {e}");
            return Exit::Failed;
        }
    };
    let stepped = match runtime.block_on(super::advance(settings, &config.dns, now)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Failed;
        }
    };
    for e in &stepped.errors {
        eprintln!("egress-milter: {e}");
    }
    for c in &stepped.changes {
        let k = c.key();
        match c {
            super::ring::Change::Made(_) => println!(
                "made {} ({}): publish {}. TXT {}",
                k.selector,
                k.algorithm.as_str(),
                k.name(),
                crate::dkim::txt_strings(&k.record)
            ),
            _ => println!("{} {}", c.verb(), k.name()),
        }
    }
    if urgent {
        println!("the replaced keys are revoked as soon as the new ones are served and signing");
    }
    Exit::passed(stepped.errors.is_empty())
}
