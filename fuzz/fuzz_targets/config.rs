//! The configuration loader: any text, no panic; an error names a line no
//! further than the text goes (YAML breaks lines at LF, CR and CRLF).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let bytes = text.as_bytes();
    let lines = 1 + bytes
        .iter()
        .enumerate()
        .filter(|(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    if let Err(errors) = egress_milter::config::Config::parse(std::path::Path::new("f.yaml"), &text)
    {
        for e in &errors.0 {
            assert!(
                e.line <= lines as u64 + 1,
                "line {} of {lines}: {e}",
                e.line
            );
        }
    }
});
