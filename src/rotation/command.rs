//! `egress-milter dkim status | rotate | records`: the rotated keys as
//! `key_dir` holds them, or Redis when they are shared.

use super::ring::{Request, Ring, State};
use super::store::Store;
use crate::cli::{DkimAction, Exit};
use crate::config::{Config, RotationSettings};
use crate::limiter::RedisLimiter;
use std::path::Path;
use tokio::runtime::Runtime;

/// Where the state is: `key_dir`, or Redis (with the runtime to ask it).
enum Place {
    Dir,
    Shared(Box<(Runtime, RedisLimiter)>),
}

impl Place {
    fn new(config: &Config, settings: &RotationSettings) -> Result<Place, String> {
        if !settings.shared {
            return Ok(Place::Dir);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let redis = RedisLimiter::new(&config.rate_limits.redis).map_err(|e| e.to_string())?;
        Ok(Place::Shared(Box::new((runtime, redis))))
    }

    fn load(&self, settings: &RotationSettings) -> Result<Ring, String> {
        match self {
            Place::Dir => Store::at(&settings.key_dir)
                .load()
                .map_err(|e| e.to_string()),
            Place::Shared(s) => {
                s.0.block_on(super::shared::load(&s.1))
                    .map(|(ring, _)| ring)
            }
        }
    }
}

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
    let place = match Place::new(&config, &settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Failed;
        }
    };
    match action {
        DkimAction::Status => status(&settings, &place, now),
        DkimAction::Records { zone } => records(&settings, &place, zone),
        DkimAction::Rotate {
            domain,
            now: urgent,
        } => rotate(&config, &settings, &place, domain, urgent, now),
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

fn status(settings: &RotationSettings, place: &Place, now: u64) -> Exit {
    let ring = match place.load(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Failed;
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
    let errors = match (place, &settings.seal) {
        (Place::Dir, _) => Store::at(&settings.key_dir).signing_keys(&ring, now).1,
        (Place::Shared(s), Some(seal)) => {
            let (rt, r) = (&s.0, &s.1);
            match rt.block_on(super::shared::driver(r)) {
                Ok(Some((name, ms))) => {
                    println!("driven by {name} (lease left {}s)", ms.max(0) / 1000)
                }
                Ok(None) => println!("driven by no gateway now: the first to step takes the lease"),
                Err(e) => println!("driven by: unknown ({e})"),
            }
            rt.block_on(super::shared::check_keys(r, seal, &ring))
                .unwrap_or_else(|e| vec![e])
        }
        (Place::Shared(..), None) => vec!["dkim.rotation.secret_file is not set".into()],
    };
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

fn records(settings: &RotationSettings, place: &Place, zone: bool) -> Exit {
    let ring = match place.load(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress-milter: {e}");
            return Exit::Failed;
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
    place: &Place,
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
    let request = Request {
        domain: domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        now: urgent,
    };
    let stepped = match place {
        Place::Dir => ask_in_dir(settings, request).and_then(|()| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            runtime.block_on(super::advance(settings, &config.dns, None, now))
        }),
        Place::Shared(s) => s.0.block_on(async {
            let r = &s.1;
            ask_shared(r, request).await?;
            let stepped = super::advance(settings, &config.dns, Some(r), now).await;
            super::shared::release(r).await?;
            stepped
        }),
    };
    let stepped = match stepped {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!("asked: the gateway that drives the shared state makes the keys at its next step (within dkim.rotation.check_every); `egress-milter dkim status` shows them");
            return Exit::Ok;
        }
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

/// The request saved in `key_dir`, under its lock.
fn ask_in_dir(settings: &RotationSettings, request: Request) -> Result<(), String> {
    let store = Store::open(&settings.key_dir)
        .map_err(|e| format!("{}: {e}", settings.key_dir.display()))?;
    store
        .lock()
        .and_then(|lock| {
            let mut ring = store.load()?;
            ring.requests.push(request);
            store.save(&ring, &lock)
        })
        .map_err(|e| format!("{}: {e}", settings.key_dir.display()))
}

/// The request saved in Redis, on the state as read (read again if a
/// step saved meanwhile).
async fn ask_shared(r: &RedisLimiter, request: Request) -> Result<(), String> {
    for _ in 0..5 {
        let (mut ring, version) = super::shared::load(r).await?;
        ring.requests.push(request.clone());
        if super::shared::save(r, None, version, &ring, &[], &[]).await?
            == super::shared::Saved::Done
        {
            return Ok(());
        }
    }
    Err("the shared state kept changing; ask again".into())
}
