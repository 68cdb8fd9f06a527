//! Milter connections over TCP, tuned so that the MTA never waits for a
//! delayed ACK.
//!
//! Two kinds of stall come from TCP's defaults on a request/reply protocol
//! like the milter's, each costing ~40 ms (Linux's delayed-ACK timer) per
//! message:
//!
//! - **Ours (Nagle on our side):** a reply written in two parts would wait
//!   for the MTA's ACK of the first before the second leaves. TCP_NODELAY
//!   on every connection sends each write at once.
//! - **The MTA's (Nagle on its side):** Postfix and Sendmail do not set
//!   TCP_NODELAY on their milter sockets. When they send a packet that gets
//!   no reply, their next small write is held until that packet is ACKed,
//!   and with no reply of ours to carry the ACK, our kernel delays it. A
//!   capture on `lo` shows it for Postfix at DATA: smtpd sends the DATA
//!   macros alone (no reply: the milter asked not to see DATA), then hands
//!   the connection to cleanup, whose headers leave only when our delayed
//!   ACK fires, 40 ms later. libmilter milters suffer it the same way.
//!   The cure here costs one `setsockopt` and one bare ACK, only where
//!   needed: when what was just read ends with a command that gets no
//!   reply (macros, an abort, and HELO or a header when the MTA agreed to
//!   send them without waiting), TCP_QUICKACK is set, which sends the
//!   pending ACK at once. A command we answer carries its ACK in the answer.
//!
//! Unix sockets have neither ACKs nor Nagle and are not wrapped.

use indymilter::Listener;
use socket2::SockRef;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tracing::warn;

/// A TCP listener whose connections are [`MilterTcpStream`]s.
pub struct MilterTcpListener(pub TcpListener);

impl Listener for MilterTcpListener {
    type Io = MilterTcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            if let Err(e) = stream.set_nodelay(true) {
                warn!("cannot set TCP_NODELAY: {e}");
            }
            MilterTcpStream {
                stream,
                frames: Frames::default(),
            }
        })
    }
}

/// A milter connection over TCP: no Nagle on our side, and an immediate
/// ACK for what gets no reply.
pub struct MilterTcpStream {
    stream: TcpStream,
    frames: Frames,
}

impl AsyncRead for MilterTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                this.frames.feed(read);
                if this.frames.awaits_no_reply() {
                    // Failing leaves the ACK delayed: slower, never wrong.
                    let _ = SockRef::from(&this.stream).set_tcp_quickack(true);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for MilterTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Follows the frame boundaries of what the MTA sends (a 4-byte big-endian
/// length, then the command byte and its data) to know the command of the
/// last frame read, and whether it was read whole. The library parses the
/// frames themselves; this reads only their lengths and command bytes.
#[derive(Debug, Default)]
struct Frames {
    /// The length and command byte of the frame being started.
    head: [u8; 5],
    head_len: usize,
    /// Data bytes of the current frame not read yet.
    remaining: usize,
    /// The command of the last frame whose head was read.
    last: Option<u8>,
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.head.len() - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len == self.head.len() {
                let [a, b, c, d, command] = self.head;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                // The length counts the command byte.
                self.remaining = len.saturating_sub(1);
                self.last = Some(command);
                self.head_len = 0;
            }
        }
    }

    /// True when everything read so far ends with a whole command that the
    /// MTA expects no reply to: `D` (macros), `A` (abort), and `H` (HELO)
    /// or `L` (a header), which egress-milter takes without an answer when
    /// the MTA agrees. (When it does not agree, the ACK merely goes out a
    /// moment before the answer.)
    fn awaits_no_reply(&self) -> bool {
        self.head_len == 0
            && self.remaining == 0
            && matches!(self.last, Some(b'D' | b'A' | b'H' | b'L'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command: u8, data: &[u8]) -> Vec<u8> {
        let mut f = u32::try_from(data.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        f.push(command);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn frames_are_followed_across_reads() {
        let mut f = Frames::default();
        // The DATA macros alone: no reply comes.
        f.feed(&frame(b'D', b"T\0i\0ABC123\0"));
        assert!(f.awaits_no_reply());
        // Macros then RCPT in one read: the reply to RCPT carries the ACK.
        let mut both = frame(b'D', b"R\0i\0ABC123\0");
        both.extend(frame(b'R', b"<a@example.com>\0"));
        f.feed(&both);
        assert!(!f.awaits_no_reply());
        // A header split over three reads, ACKed once it is whole.
        let h = frame(b'L', b"Subject\0hello\0");
        f.feed(&h[..3]);
        assert!(!f.awaits_no_reply());
        f.feed(&h[3..9]);
        assert!(!f.awaits_no_reply());
        f.feed(&h[9..]);
        assert!(f.awaits_no_reply());
        // A large body chunk read in parts: nothing until its end, and its
        // end is answered.
        let body = frame(b'B', &[b'x'; 70_000]);
        for part in body.chunks(16_384) {
            f.feed(part);
            assert!(!f.awaits_no_reply());
        }
        f.feed(&frame(b'E', b""));
        assert!(!f.awaits_no_reply());
        f.feed(&frame(b'A', b""));
        assert!(f.awaits_no_reply());
    }

    #[test]
    fn a_zero_length_frame_does_not_desynchronise() {
        let mut f = Frames::default();
        f.feed(&[0, 0, 0, 0, b'D']);
        assert!(f.awaits_no_reply());
        f.feed(&frame(b'M', b"<a@example.com>\0"));
        assert!(!f.awaits_no_reply());
    }
}
