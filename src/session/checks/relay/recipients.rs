//! RCPT TO: at most `recipients.max_per_message` recipients; each extra one
//! gets a 452, which RFC 5321 §4.5.3.1.10 tells clients to treat as "send
//! the rest in another transaction", so nothing is lost.

use crate::config::Config;
use crate::reply;
use crate::verdict::Verdict;

pub fn check(config: &Config, accepted: usize) -> Verdict {
    if accepted >= config.max_recipients {
        Verdict::Refuse(reply::too_many_recipients())
    } else {
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_first_n_pass() {
        let config = Config::parse(
            Path::new("t.yaml"),
            "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\nrecipients: { max_per_message: 2 }\n",
        )
        .unwrap();
        assert_eq!(check(&config, 0), Verdict::Continue);
        assert_eq!(check(&config, 1), Verdict::Continue);
        assert_eq!(
            check(&config, 2),
            Verdict::Refuse(reply::too_many_recipients())
        );
    }
}
