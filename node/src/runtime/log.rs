//! Bounded buffers for a guest's stdout and stderr. A guest can print without end; the node
//! keeps the last `capacity` bytes and counts what it dropped, and the guest never sees an error
//! for it (a full pipe must not crash a workload).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::watch;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

struct State {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Bytes ever written, including those since dropped: readers resume from an offset.
    written: u64,
}

/// A bounded, shareable output buffer.
#[derive(Clone)]
pub struct LogBuffer {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

impl LogBuffer {
    /// A buffer that keeps the last `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let state = State { bytes: VecDeque::new(), capacity, written: 0 };
        LogBuffer { state: Arc::new(Mutex::new(state)), changed: Arc::new(watch::channel(0).0) }
    }

    /// Appends bytes, dropping the oldest beyond capacity.
    pub fn append(&self, data: &[u8]) {
        let written = {
            let mut s = self.state.lock().expect("log lock");
            s.written += data.len() as u64;
            let keep = &data[data.len().saturating_sub(s.capacity)..];
            let overflow = (s.bytes.len() + keep.len()).saturating_sub(s.capacity);
            s.bytes.drain(..overflow);
            s.bytes.extend(keep);
            s.written
        };
        self.changed.send_replace(written);
    }

    /// Everything kept, and the offset (bytes ever written) it ends at.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let s = self.state.lock().expect("log lock");
        (s.bytes.iter().copied().collect(), s.written)
    }

    /// What was written after offset `from` (as much of it as is still kept), and the new offset.
    pub fn since(&self, from: u64) -> (Vec<u8>, u64) {
        let s = self.state.lock().expect("log lock");
        let kept_from = s.written - s.bytes.len() as u64;
        let skip = from.saturating_sub(kept_from).min(s.bytes.len() as u64) as usize;
        (s.bytes.iter().skip(skip).copied().collect(), s.written)
    }

    /// A receiver that changes whenever something is written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl IsTerminal for LogBuffer {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogBuffer {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogBuffer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogBuffer {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogBuffer {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_counts_all() {
        let log = LogBuffer::new(8);
        log.append(b"hello ");
        log.append(b"world!");
        let (kept, written) = log.snapshot();
        assert_eq!(kept, b"o world!");
        assert_eq!(written, 12);
        assert_eq!(log.since(10).0, b"d!");
        assert_eq!(log.since(0).0, b"o world!");
        log.append(&[b'x'; 20]);
        assert_eq!(log.snapshot().0, [b'x'; 8]);
    }
}
