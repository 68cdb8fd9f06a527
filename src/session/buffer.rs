//! The message as the MTA passed it to the milter, kept whole (once) for
//! the content checks and DKIM.

/// A message as the MTA passed it to the milter, kept whole (once) for the
/// content checks and DKIM: `Name: value` per header (milter header values
/// carry their folding with bare LF, made CRLF here), a blank line at the
/// end of the headers, then the body as received. Body chunks are kept as
/// the buffers the milter protocol delivered them in (no copy) and joined
/// once, into an allocation of the exact size, at end of message.
#[derive(Default)]
pub(super) struct Content {
    pub(super) head: Vec<u8>,
    pub(super) body: Vec<bytes::Bytes>,
    pub(super) body_len: usize,
    /// DKIM-Signature headers seen.
    pub(super) signatures: usize,
    pub(super) body_started: bool,
}

impl Content {
    pub(super) fn header(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"dkim-signature") {
            self.signatures += 1;
        }
        self.head.reserve(name.len() + value.len() + 4);
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                self.head.push(b'\r');
            }
            self.head.push(b);
            prev = b;
        }
        self.head.extend_from_slice(b"\r\n");
    }

    pub(super) fn body(&mut self, chunk: bytes::Bytes) {
        self.end_headers();
        self.body_len += chunk.len();
        self.body.push(chunk);
    }

    pub(super) fn end_headers(&mut self) {
        if !self.body_started {
            self.head.extend_from_slice(b"\r\n");
            self.body_started = true;
        }
    }

    /// The whole message, in one buffer.
    pub(super) fn into_raw(mut self) -> bytes::Bytes {
        self.end_headers();
        let mut raw = std::mem::take(&mut self.head);
        raw.reserve_exact(self.body_len);
        for chunk in &self.body {
            raw.extend_from_slice(chunk);
        }
        bytes::Bytes::from(raw)
    }
}
