//! Notices in the shapes real servers send them.

use super::*;

fn report(status_body: &str, report_type: &str) -> String {
    format!(
        "From: MAILER-DAEMON@gw.example.com\r\n\
         To: app@example.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type={report_type};\r\n\tboundary=\"B1\"\r\n\
         \r\n\
         --B1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not be delivered.\r\n\
         \r\n\
         --B1\r\n\
         Content-Type: message/{report_type}\r\n\
         \r\n\
         {status_body}\r\n\
         --B1\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         From: app@example.com\r\n\
         To: ghost@example.org\r\n\
         \r\n\
         --B1--\r\n"
    )
}

fn outcomes(raw: &str) -> Vec<Outcome> {
    parse(raw.as_bytes()).expect("readable").expect("a notice")
}

#[test]
fn postfix() {
    let raw = report(
        "Reporting-MTA: dns; gw.example.com\r\n\
         X-Postfix-Queue-ID: 4Q2x1\r\n\
         X-Postfix-Sender: rfc822; app@example.com\r\n\
         Arrival-Date: Sat,  5 Dec 2026 07:00:00 +0000 (UTC)\r\n\
         \r\n\
         Final-Recipient: rfc822; ghost@example.org\r\n\
         Original-Recipient: rfc822;Ghost@Example.org\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Remote-MTA: dns; mx.example.org\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <ghost@example.org>: Recipient address\r\n\
         \x20   rejected: User unknown in virtual mailbox table\r\n",
        "delivery-status",
    );
    let o = outcomes(&raw);
    assert_eq!(
        o,
        [Outcome {
            recipient: "ghost@example.org".into(),
            action: Action::Failed,
            status: "5.1.1".into()
        }]
    );
    assert!(o[0].hard());
}

#[test]
fn postfix_delayed_is_soft() {
    let raw = report(
        "Reporting-MTA: dns; gw.example.com\r\n\r\n\
         Final-Recipient: rfc822; slow@example.org\r\n\
         Action: delayed\r\n\
         Status: 4.4.1\r\n\
         Will-Retry-Until: Sat, 10 Dec 2026 07:00:00 +0000\r\n",
        "delivery-status",
    );
    let o = outcomes(&raw);
    assert_eq!(o[0].action, Action::Delayed);
    assert!(!o[0].hard());
}

#[test]
fn exchange_with_two_recipients() {
    let raw = report(
        "Reporting-MTA: dns;EX01.corp.example.org\r\n\
         Received-From-MTA: dns;EX02.corp.example.org\r\n\
         Arrival-Date: Sat, 5 Dec 2026 07:00:00 +0000\r\n\
         \r\n\
         Original-Recipient: rfc822;gone@example.org\r\n\
         Final-Recipient: rfc822;gone@example.org\r\n\
         Action: failed\r\n\
         Status: 5.1.10\r\n\
         Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\r\n\
         \r\n\
         Final-Recipient: rfc822;full@example.org\r\n\
         Action: failed\r\n\
         Status: 4.2.2\r\n",
        "delivery-status",
    );
    let o = outcomes(&raw);
    assert_eq!(o.len(), 2);
    assert_eq!(o[0].status, "5.1.10");
    assert!(o[0].hard());
    // Failed, but with a temporary status: not a hard failure.
    assert!(!o[1].hard());
}

#[test]
fn gmail() {
    let raw = report(
        "Reporting-MTA: dns; googlemail.com\r\n\
         Received-From-MTA: dns; app@example.com\r\n\
         \r\n\
         Final-Recipient: rfc822; nobody@gmail.test\r\n\
         Action: failed\r\n\
         Status: 5.1.1 (bad destination mailbox address)\r\n\
         Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0::1b, the server\r\n\
         \x20for the domain gmail.test.)\r\n\
         Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.\r\n\
         Last-Attempt-Date: Sat, 05 Dec 2026 07:00:01 -0800 (PST)\r\n",
        "delivery-status",
    );
    assert_eq!(outcomes(&raw)[0].status, "5.1.1");
}

#[test]
fn qmail() {
    let raw = "From: MAILER-DAEMON@mx.example.org\r\n\
               Subject: failure notice\r\n\
               \r\n\
               Hi. This is the qmail-send program at mx.example.org.\r\n\
               I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\
               This is a permanent error; I've given up. Sorry it didn't work out.\r\n\
               \r\n\
               <gone@example.org>:\r\n\
               192.0.2.25 does not like recipient.\r\n\
               Remote host said: 550 5.1.1 <gone@example.org>... User unknown\r\n\
               Giving up on 192.0.2.25.\r\n\
               \r\n\
               <later@example.org>:\r\n\
               Remote host said: 452 mailbox full\r\n";
    let o = outcomes(raw);
    assert_eq!(o.len(), 2);
    assert_eq!(
        (o[0].recipient.as_str(), o[0].status.as_str()),
        ("gone@example.org", "5.1.1")
    );
    assert!(o[0].hard());
    assert_eq!(o[1].status, "4.0.0");
    assert!(!o[1].hard());
}

#[test]
fn exim_plain_text() {
    let raw = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\r\n\
               Subject: Mail delivery failed: returning message to sender\r\n\
               \r\n\
               This message was created automatically by mail delivery software.\r\n\
               \r\n\
               A message that you sent could not be delivered to one or more of its\r\n\
               recipients. This is a permanent error. The following address(es) failed:\r\n\
               \r\n\
               \x20 nosuch@example.org\r\n\
               \x20   host mx.example.org [192.0.2.25]\r\n\
               \x20   SMTP error from remote mail server after RCPT TO:<nosuch@example.org>:\r\n\
               \x20   550 5.1.1 User unknown\r\n";
    let o = outcomes(raw);
    assert_eq!(o[0].recipient, "nosuch@example.org");
    assert!(o[0].hard());
}

#[test]
fn what_is_not_a_notice_or_cannot_be_read() {
    // A vacation reply: no notice.
    let vacation = "From: alice@example.org\r\nSubject: Out of office\r\n\r\nI am away.\r\n";
    assert_eq!(parse(vacation.as_bytes()), Ok(None));
    // A read receipt is a report of another kind.
    let receipt = report(
        "Reporting-UA: mail.example.org\r\nFinal-Recipient: rfc822; a@example.org\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n",
        "disposition-notification",
    );
    assert_eq!(parse(receipt.as_bytes()), Ok(None));
    // A qmail bounce that states no status is unreadable, not guessed.
    let vague = "Subject: failure notice\r\n\r\nHi. This is the qmail-send program at x.\r\n\r\n<a@example.org>:\r\nSorry, no mailbox here by that name.\r\n";
    assert!(parse(vague.as_bytes()).is_err());
    // A delivery-status part with no recipient group.
    let empty = report("Reporting-MTA: dns; gw.example.com\r\n", "delivery-status");
    assert!(parse(empty.as_bytes()).is_err());
}
