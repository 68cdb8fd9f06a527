//! egress-milter: an outbound policy milter for Postfix and Sendmail
//! gateways. It decides, stage by stage, whether each message may leave.

pub mod address;
pub mod admin;
pub mod bounces;
pub mod cases;
mod class;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod content;
pub mod dkim;
pub mod dns;
pub mod dnsbl;
pub mod explain;
mod files;
pub mod history;
pub mod incidents;
pub mod learning;
pub mod limiter;
pub mod links;
pub mod log;
pub mod mailbox;
pub mod manual;
pub(crate) mod metrics;
mod milter;
pub mod probe;
mod rate;
mod reply;
pub mod reputation;
pub mod rotation;
mod rule;
pub mod selfcheck;
pub mod server;
pub mod session;
pub mod sources;
mod state;
mod tcp;
pub mod users;
mod verdict;

pub use server::{bind, run};
pub use state::Shared;
