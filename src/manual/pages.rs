//! `egress-milter(8)` and a page per command (`egress-milter-limits(8)`,
//! ...), made by clap_mangen from the command line's definitions
//! (`cli`); the sections a definition cannot hold (signals, files, exit
//! status, examples) are here, once.

use crate::cli::Cli;
use clap::CommandFactory;

/// Every page, with its file name: the command's and one per command and
/// subcommand.
pub fn pages() -> Vec<(String, String)> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = vec![("egress-milter.8".to_string(), main_page(&cmd))];
    for sub in cmd.get_subcommands() {
        commands(sub, &mut out);
    }
    out
}

fn man(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .section("8")
        .source("egress-milter")
        .manual("System Administration")
        .date("")
}

fn commands(cmd: &clap::Command, out: &mut Vec<(String, String)>) {
    if cmd.is_hide_set() {
        return;
    }
    let page = man(cmd.clone());
    let mut text = Vec::new();
    let _ = page.render(&mut text);
    text.extend_from_slice(COMMAND_SEE_ALSO.as_bytes());
    out.push((
        page.get_filename(),
        String::from_utf8_lossy(&text).into_owned(),
    ));
    for sub in cmd.get_subcommands() {
        commands(sub, out);
    }
}

fn main_page(cmd: &clap::Command) -> String {
    let page = man(cmd.clone());
    let mut w = Vec::new();
    let _ = page.render_title(&mut w);
    let _ = page.render_name_section(&mut w);
    let _ = page.render_synopsis_section(&mut w);
    w.extend_from_slice(b".SH DESCRIPTION\n");
    w.extend_from_slice(DESCRIPTION.as_bytes());
    let _ = page.render_subcommands_section(&mut w);
    w.extend_from_slice(SECTIONS.as_bytes());
    String::from_utf8_lossy(&w).into_owned()
}

const DESCRIPTION: &str = r#".B egress-milter
sits behind the MTA of an outbound mail gateway (Postfix's
.BR smtpd_milters ,
Sendmail's
.BR INPUT_MAIL_FILTER )
and decides, at each SMTP stage, whether a message may leave.
Only known clients (by IP address and/or SASL login) may send, and only as
the domains and addresses their class owns; the From: header of mail that
leaves must be one mailbox in one of the local domains, while inbound mail
from strangers to the local domains passes; the gateway is never an open
relay;
rate and connection limits apply per client, sender, login and recipient,
in the process or shared through Redis; outbound content is checked;
messages are DKIM-signed with the organisation's keys; internal Received:
lines are scrubbed.
Each refusal is answered with a precise SMTP reply (5xx or 4xx) and logged
as one line; each message gets one summary line.
.PP
The default configuration file is
.IR /etc/egress-milter/milter.yaml ;
see
.BR milter.yaml (5).
"#;

const SECTIONS: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Reloads the configuration. The new file is built in full first; if it has
errors they are logged and the running configuration is kept.
Messages in progress finish under the rules they started with.
.TP
.BR SIGTERM ", " SIGINT
Finishes the milter commands in flight and exits 0.
.SH FILES
.TP
.I /etc/egress-milter/milter.yaml
The configuration.
.TP
.I /etc/egress-milter/dkim/
Customary place for DKIM private keys (readable by the
.B egress-milter
user only).
.TP
.I /run/egress-milter/
Runtime directory for a unix milter socket.
.TP
.I /usr/share/doc/egress-milter/examples/
Snippets for Postfix
.RI ( main.cf ", " smtp_header_checks ),
Sendmail
.RI ( sendmail.mc )
and a Grafana dashboard.
.SH EXIT STATUS
The same for every command:
.TP
.B 0
done: the configuration is valid, every check or case passed, the message
would be accepted, the daemon answered.
.TP
.B 1
failed: a check, a case or a probed path failed, the message would be
refused, the daemon cannot start, cannot be reached or refused the request.
.TP
.B 2
a mistake in what the command was given: its arguments, or the
configuration file (every error named with file, line and key).
.SH EXAMPLES
Postfix,
.IR main.cf :
.PP
.RS
.nf
smtpd_milters = inet:127.0.0.1:7357
non_smtpd_milters = inet:127.0.0.1:7357
milter_default_action = tempfail
milter_protocol = 6
.fi
.RE
.PP
Try a policy change before reloading it:
.PP
.RS
.nf
egress-milter explain --config new.yaml --client 10.1.2.3 \e
    --from noreply@example.com --rcpt someone@example.net msg.eml
.fi
.RE
.SH SEE ALSO
.BR milter.yaml (5),
.BR egress-milter-run (8),
.BR egress-milter-limits (8),
.BR egress-milter-incidents (8),
.BR postconf (5),
.BR systemctl (1)
"#;

/// The end of every command's page: where the rest is.
const COMMAND_SEE_ALSO: &str = r#".SH EXIT STATUS
0 done, 1 failed, 2 a mistake in the arguments or the configuration; see
.BR egress-milter (8).
.SH SEE ALSO
.BR egress-milter (8),
.BR milter.yaml (5)
"#;
