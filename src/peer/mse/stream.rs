//! The connection after an MSE handshake: [`MseStream`] wraps the transport
//! and applies RC4 in each direction when RC4 was selected, or passes bytes
//! through when plaintext was. [`MseStream::into_split_with`] gives an
//! [`MseReader`] and an [`MseWriter`] for two tasks, over the transport's
//! own halves (for TCP, `TcpStream::into_split`).
//!
//! Costs: reading decrypts in place in the caller's buffer (no copy, no
//! allocation). Writing must copy, since the caller's bytes are borrowed:
//! they are encrypted into one write buffer of [`WRITE_BUF`] bytes,
//! allocated once per connection, the first time RC4 writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Crypto;
use super::crypto::Rc4Drop;

/// Size of the ciphertext write buffer of an RC4 connection, in bytes: two
/// 16 KiB blocks, so a `piece` message is encrypted and handed to the
/// socket in one or two system calls.
pub const WRITE_BUF: usize = 32 * 1024;

/// Read-side state: bytes the handshake already received (handed out
/// first), and the decrypting cipher.
#[derive(Debug, Default)]
struct ReadState {
    /// Keystream for incoming bytes (the peer's key), `None` for plaintext.
    cipher: Option<Rc4Drop>,
    /// Plaintext received during the handshake (or put back with
    /// [`MseStream::unread`]) and not yet read: `pending[pos..]`.
    pending: Vec<u8>,
    /// Read position in `pending`.
    pos: usize,
}

impl ReadState {
    fn poll_read<R: AsyncRead + ?Sized>(
        &mut self,
        inner: Pin<&mut R>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pending.len() {
            let n = (self.pending.len() - self.pos).min(buf.remaining());
            buf.put_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.pending.len() {
                // release the handshake leftovers
                self.pending = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(inner.poll_read(cx, buf))?;
        if let Some(c) = &mut self.cipher {
            c.apply(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }

    fn unread(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut v = Vec::with_capacity(data.len() + self.pending.len() - self.pos);
        v.extend_from_slice(data);
        v.extend_from_slice(&self.pending[self.pos..]);
        self.pending = v;
        self.pos = 0;
    }
}

/// Write-side state: the encrypting cipher and the ciphertext not yet
/// accepted by the transport.
#[derive(Debug, Default)]
struct WriteState {
    /// Keystream for outgoing bytes (our key), `None` for plaintext.
    cipher: Option<Rc4Drop>,
    /// Ciphertext: `buf[start..end]` is encrypted but not yet written. Empty
    /// until the first RC4 write, then [`WRITE_BUF`] bytes.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl WriteState {
    /// Writes buffered ciphertext until the buffer is empty (`Ready`) or the
    /// transport is not ready (`Pending`).
    fn poll_drain<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let n = ready!(
                inner
                    .as_mut()
                    .poll_write(cx, &self.buf[self.start..self.end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        self.start = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(cipher) = &mut self.cipher else {
            return inner.poll_write(cx, data);
        };
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.buf.is_empty() {
            self.buf = vec![0; WRITE_BUF];
        }
        if self.end == self.buf.len() {
            // full: room is needed before accepting anything
            if self.start < self.end {
                let n = ready!(
                    inner
                        .as_mut()
                        .poll_write(cx, &self.buf[self.start..self.end])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
        }
        let n = data.len().min(self.buf.len() - self.end);
        cipher.apply_to(&data[..n], &mut self.buf[self.end..self.end + n]);
        self.end += n;
        // hand it to the transport now if it takes it; otherwise it stays
        // buffered until the next write or flush (the bytes are accepted)
        match self.poll_drain(inner, cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner.as_mut(), cx))?;
        inner.poll_flush(cx)
    }

    fn poll_shutdown<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner.as_mut(), cx))?;
        inner.poll_shutdown(cx)
    }
}

/// A transport after the MSE handshake (or a plaintext one, see
/// [`MseStream::passthrough`]). Implements `AsyncRead + AsyncWrite`:
/// with [`Crypto::Rc4`] every byte read is decrypted with the peer's
/// keystream and every byte written is encrypted with ours; with
/// [`Crypto::Plaintext`] bytes pass unchanged. Bytes the handshake
/// received past its end are returned first.
///
/// Like a `BufWriter`, an RC4 stream may hold written bytes in its buffer
/// until the transport takes them: call `flush` after a batch of writes.
#[derive(Debug)]
pub struct MseStream<S> {
    inner: S,
    read: ReadState,
    write: WriteState,
    crypto: Crypto,
}

impl<S> MseStream<S> {
    /// After a handshake: `leftover` is what the handshake read past its
    /// end, still as received (ciphertext under RC4).
    pub(crate) fn new(
        inner: S,
        crypto: Crypto,
        mut decrypt: Option<Rc4Drop>,
        encrypt: Option<Rc4Drop>,
        mut leftover: Vec<u8>,
    ) -> MseStream<S> {
        if crypto == Crypto::Plaintext {
            decrypt = None;
        }
        if let Some(c) = &mut decrypt {
            c.apply(&mut leftover);
        }
        MseStream {
            inner,
            read: ReadState {
                cipher: decrypt,
                pending: leftover,
                pos: 0,
            },
            write: WriteState {
                cipher: if crypto == Crypto::Rc4 { encrypt } else { None },
                ..WriteState::default()
            },
            crypto,
        }
    }

    /// A plaintext connection that did not use MSE at all: bytes pass
    /// unchanged, and `already_read` (what was read to tell a plaintext
    /// handshake from MSE, see [`super::sniff`]) is returned first. Lets one
    /// stream type carry every connection.
    pub fn passthrough(inner: S, already_read: Vec<u8>) -> MseStream<S> {
        MseStream {
            inner,
            read: ReadState {
                cipher: None,
                pending: already_read,
                pos: 0,
            },
            write: WriteState::default(),
            crypto: Crypto::Plaintext,
        }
    }

    /// How bytes after the handshake travel.
    pub fn crypto(&self) -> Crypto {
        self.crypto
    }

    /// Puts plaintext bytes back in front of what the next reads return,
    /// for instance the initial payload of [`super::Accepted`], so the
    /// BitTorrent handshake is read from the stream whether or not it came
    /// in the MSE initial payload.
    pub fn unread(&mut self, data: &[u8]) {
        self.read.unread(data);
    }

    /// The transport. Reading or writing it directly would desynchronise
    /// the keystreams; use it for socket options and addresses.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Splits into a reader and a writer over the transport's halves,
    /// `split(inner)` (for `TcpStream`: `TcpStream::into_split`). Pending
    /// read bytes go to the reader, unflushed ciphertext to the writer.
    pub fn into_split_with<R, W>(
        self,
        split: impl FnOnce(S) -> (R, W),
    ) -> (MseReader<R>, MseWriter<W>) {
        let (r, w) = split(self.inner);
        (
            MseReader {
                inner: r,
                state: self.read,
            },
            MseWriter {
                inner: w,
                state: self.write,
            },
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.read.poll_read(Pin::new(&mut this.inner), cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write.poll_write(Pin::new(&mut this.inner), cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write.poll_flush(Pin::new(&mut this.inner), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write.poll_shutdown(Pin::new(&mut this.inner), cx)
    }
}

/// The reading half of an [`MseStream`] (see
/// [`MseStream::into_split_with`]): decrypts in place when RC4 was selected.
#[derive(Debug)]
pub struct MseReader<R> {
    inner: R,
    state: ReadState,
}

impl<R> MseReader<R> {
    /// The transport's read half (for addresses and socket options only).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MseReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_read(Pin::new(&mut this.inner), cx, buf)
    }
}

/// The writing half of an [`MseStream`] (see
/// [`MseStream::into_split_with`]): encrypts when RC4 was selected. Call
/// `flush` after a batch of writes.
#[derive(Debug)]
pub struct MseWriter<W> {
    inner: W,
    state: WriteState,
}

impl<W> MseWriter<W> {
    /// The transport's write half (for addresses and socket options only).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for MseWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.state.poll_write(Pin::new(&mut this.inner), cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_flush(Pin::new(&mut this.inner), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_shutdown(Pin::new(&mut this.inner), cx)
    }
}
