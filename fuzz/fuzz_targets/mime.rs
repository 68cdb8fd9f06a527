//! The MIME walk of the content checks: any message, no panic, no hang,
//! and the headers-only shortcut for plain messages finds exactly what the
//! full walk finds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static SETTINGS: LazyLock<egress_milter::config::ContentSettings> = LazyLock::new(|| {
    egress_milter::config::Config::parse(
        std::path::Path::new("fuzz.yaml"),
        "listen: inet:127.0.0.1:1\nlocal_domains: [example.com]\n\
         content: { custom: [{ name: lottery, subject: \"(?i)lottery\", score: 5 }] }\n",
    )
    .expect("fuzz config")
    .content
});

fuzz_target!(|data: &[u8]| {
    let quick = egress_milter::content::scan(data, &SETTINGS);
    let full = egress_milter::content::scan_walk(data, &SETTINGS);
    assert_eq!(quick, full);
});
