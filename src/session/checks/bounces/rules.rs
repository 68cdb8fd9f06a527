//! A suppressed recipient's refusal, and a notice read into what it says
//! of each recipient, keyed as limits key an address.

use crate::bounces::{dsn, Entry};
use crate::config::LimitKeys;
use crate::reply;
use crate::verdict::Verdict;

pub fn verdict(address: &str, entry: &Entry) -> Verdict {
    let until = crate::incidents::rfc3339(entry.until);
    let date = until.split('T').next().unwrap_or(&until);
    Verdict::Refuse(reply::suppressed(address, &entry.status, date))
}

/// Each recipient of a notice, in canonical form, with what the notice
/// says of it; None for mail that is no notice; why, for one that cannot
/// be read.
pub fn read(raw: &[u8], keys: &LimitKeys) -> Result<Vec<(String, dsn::Outcome)>, String> {
    let outcomes = match dsn::parse(raw) {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(e.0),
    };
    let mut out = Vec::new();
    for o in outcomes {
        let Ok(address) = crate::address::Address::parse(&o.recipient) else {
            return Err(format!("recipient {:?} is not an address", o.recipient));
        };
        out.push((keys.address(&address), o));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_names_the_status_and_the_day() {
        let e = Entry {
            hard: 1,
            status: "5.1.1".into(),
            first: 0,
            last: 0,
            until: 1_799_193_600,
        };
        let Verdict::Refuse(r) = verdict("Ghost@example.org", &e) else {
            panic!("refused")
        };
        assert_eq!(
            r.reply.to_string(),
            "550 5.1.1 Recipient <Ghost@example.org> bounced (5.1.1); not sent again before 2027-01-06"
        );
    }
}
