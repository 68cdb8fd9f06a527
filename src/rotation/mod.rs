//! DKIM keys that rotate themselves (`dkim.rotation`), never ahead of DNS:
//!
//! - `ring.rs`: the keys and the schedule that moves them;
//! - `store.rs`: the keys on disk, under `key_dir`.

pub mod ring;
pub mod store;
