//! `publish: rfc2136`: the records the keys need, sent to the zone's
//! primary as dynamic updates (RFC 2136) signed with TSIG (RFC 8945), by
//! hickory's client. A new key's record is added (and sent again each step
//! while it is pending), a revoked key's replaced by `v=DKIM1; p=`, a
//! removed key's deleted. Each update replaces the name's TXT records
//! whole, so sending one twice changes nothing.

use super::ring::{Change, Key, Ring, State};
use crate::config::Rfc2136Settings;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::{Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use std::str::FromStr;
use std::time::Duration;

/// The TTL of the records published: short, so that a change is seen soon.
const TTL: u32 = 300;

/// How far the primary's clock may be from ours (TSIG's fudge).
const FUDGE: u16 = 300;

fn name(s: &str) -> Result<Name, String> {
    Name::from_str(&format!("{}.", s.trim_end_matches('.'))).map_err(|e| format!("{s}: {e}"))
}

fn client(
    settings: &Rfc2136Settings,
    timeout: Duration,
) -> Result<Client<TokioRuntimeProvider>, String> {
    let algorithm = match settings.key.algorithm.as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        _ => TsigAlgorithm::HmacSha512,
    };
    let signer = TSigner::new(
        settings.key.secret.clone(),
        algorithm,
        name(&settings.key.name)?,
        FUDGE,
    )
    .map_err(|e| format!("TSIG key {}: {e}", settings.key.name))?;
    let stream = UdpClientStream::builder(settings.server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .with_signer(Some(signer))
        .build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    Ok(client)
}

/// The TXT strings of a value: 250 bytes each at most (a string holds 255).
fn strings(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(250)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// Makes the name hold `value` as its only TXT record, or none.
async fn set(
    client: &mut Client<TokioRuntimeProvider>,
    zone: &Name,
    key: &Key,
    value: Option<&str>,
) -> Result<(), String> {
    let owner = name(&key.name())?;
    if !zone.zone_of(&owner) {
        return Err(format!("{} is not in the zone {zone}", key.name()));
    }
    let check = |r: Result<hickory_net::proto::op::DnsResponse, hickory_net::NetError>,
                 what: &str| match r {
        Ok(resp) if resp.metadata.response_code == ResponseCode::NoError => Ok(()),
        Ok(resp) => Err(format!(
            "{what} {}: the server answered {}",
            key.name(),
            resp.metadata.response_code
        )),
        Err(e) => Err(format!("{what} {}: {e}", key.name())),
    };
    let all = Record::update0(owner.clone(), 0, RecordType::TXT);
    check(
        client.delete_rrset(all, zone.clone()).await,
        "removing the records of",
    )?;
    if let Some(value) = value {
        let record = Record::from_rdata(owner, TTL, RData::TXT(TXT::new(strings(value))));
        check(
            client.append(record, zone.clone(), false).await,
            "publishing",
        )?;
    }
    Ok(())
}

/// Sends what a step changed, and again the records of the keys still
/// pending (a first update may have been lost). The failures, said.
pub async fn publish(
    settings: &Rfc2136Settings,
    timeout: Duration,
    changes: &[Change],
    ring: &Ring,
) -> Vec<String> {
    let mut client = match client(settings, timeout) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let zone = match name(settings.zone.as_str()) {
        Ok(z) => z,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for c in changes {
        let result = match c {
            Change::Revoked(k) => set(&mut client, &zone, k, Some(&k.published())).await,
            Change::Removed(k) => set(&mut client, &zone, k, None).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    for k in ring.keys.iter().filter(|k| k.state == State::Pending) {
        if let Err(e) = set(&mut client, &zone, k, Some(&k.record)).await {
            errors.push(e);
        }
    }
    errors
}
