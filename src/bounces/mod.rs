//! Bounces: the delivery-status notices that pass the milter (those
//! Postfix makes, with `internal_mail_filter_classes = bounce`, and those
//! remote servers send back to our senders) read, and the recipients
//! whose mail fails for good suppressed for a while.
//!
//! - `dsn.rs`: reading a notice;
//! - `store.rs`: the suppressed recipients.

pub mod dsn;
pub mod store;

pub use store::{Entry, Suppressions};
