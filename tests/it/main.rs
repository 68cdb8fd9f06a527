//! The integration tests, one binary: a module per area, and `common`,
//! what they share (the daemon on a loopback port, the real servers they
//! start, the CLI runner).

mod common;

mod abuse;
mod antivirus;
mod bad_input;
mod book;
mod bounces;
mod cases;
mod console;
mod console_browser;
mod console_setup;
mod content;
mod daemon;
mod dkim_rotation;
mod dkim_rotation_shared;
mod dkim_spf;
mod e2e_incidents;
mod e2e_postfix;
mod e2e_sendmail;
mod evasions;
mod explain;
mod faults;
mod from_header;
mod incidents;
mod large_config;
mod learning;
mod limits_admin;
mod metrics;
mod open_relay;
mod out_of_order;
mod package;
mod postfix_own_mail;
mod probe;
mod rate_limits;
mod redis_limits;
mod redis_sentinel;
mod relay_recipients;
mod reputation;
mod rspamd;
mod schema;
mod selfcheck;
mod sender_policy;
mod slow_backends;
mod sources;
mod spoofing;
mod verify;
