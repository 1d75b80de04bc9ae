//! Bounded buffers for a guest's stdout and stderr. A guest can print without end; the node
//! keeps the last `capacity` bytes and counts what it dropped, and the guest never sees an error
//! for it (a full pipe must not crash a workload).
//!
//! When each line began is kept too, as marks: one per write that starts a line (the lines a
//! write starts share its time), at most [`MAX_MARKS`], so a line's time is that of the last
//! mark at or before it. A command's restart [`LogBuffer::rotate`]s the buffer: what the run
//! wrote is kept as the previous run's (`shoal logs --previous`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::watch;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most line-time marks one buffer keeps (16 bytes each).
pub const MAX_MARKS: usize = 1024;

struct State {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Bytes ever written, including those since dropped: readers resume from an offset.
    written: u64,
    /// When lines began: (offset, time), oldest first.
    marks: VecDeque<(u64, SystemTime)>,
    /// The previous run's output, as it was kept (split into lines only when read).
    previous: Option<Box<State>>,
    /// Whether the next byte begins a line (nothing written yet, or a newline last).
    at_line_start: bool,
}

/// A piece of output: one line at most (with its newline if it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Whether it begins its line (a read from an offset inside a line begins with the rest).
    pub starts_line: bool,
    /// When its line began, if known.
    pub time: Option<SystemTime>,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl State {
    fn kept_from(&self) -> u64 {
        self.written - self.bytes.len() as u64
    }

    /// What was written after `from` (of what is kept), split into lines. One pass over the
    /// bytes and the marks together.
    fn pieces(&self, from: u64) -> Vec<Piece> {
        let kept_from = self.kept_from();
        let start = from.max(kept_from);
        let mut marks = self.marks.iter().peekable();
        let mut latest: Option<&(u64, SystemTime)> = None;
        // The time of the line at `at`, and whether a mark says a line begins there.
        let mut line_at = |at: u64| {
            while let Some(mark) = marks.next_if(|(o, _)| *o <= at) {
                latest = Some(mark);
            }
            latest.map(|(o, t)| (*t, *o == at))
        };
        let begins = |at: u64, marked: bool| {
            at == 0 || marked || (at > kept_from && self.bytes[(at - kept_from - 1) as usize] == b'\n')
        };
        let mut pieces = Vec::new();
        let (mut offset, mut piece_start, mut piece) = (start, start, Vec::new());
        let mut finish = |piece_start: u64, bytes: Vec<u8>, pieces: &mut Vec<Piece>| {
            let found = line_at(piece_start);
            let starts_line = begins(piece_start, found.is_some_and(|(_, marked)| marked));
            pieces.push(Piece { starts_line, time: found.map(|(t, _)| t), bytes });
        };
        for &byte in self.bytes.iter().skip((start - kept_from) as usize) {
            piece.push(byte);
            offset += 1;
            if byte == b'\n' {
                finish(piece_start, std::mem::take(&mut piece), &mut pieces);
                piece_start = offset;
            }
        }
        if !piece.is_empty() {
            finish(piece_start, piece, &mut pieces);
        }
        pieces
    }
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
        let state = State {
            bytes: VecDeque::new(),
            capacity,
            written: 0,
            marks: VecDeque::new(),
            previous: None,
            at_line_start: true,
        };
        LogBuffer { state: Arc::new(Mutex::new(state)), changed: Arc::new(watch::channel(0).0) }
    }

    /// Appends bytes, dropping the oldest beyond capacity.
    pub fn append(&self, data: &[u8]) {
        let written = {
            let mut s = self.state.lock().expect("log lock");
            // The first line this write starts: at its first byte, or after its first newline.
            let first_start = match s.at_line_start {
                true => Some(0),
                false => data.iter().position(|b| *b == b'\n').map(|i| i + 1).filter(|i| *i < data.len()),
            };
            if let Some(i) = first_start {
                if s.marks.len() == MAX_MARKS {
                    s.marks.pop_front();
                }
                let at = s.written + i as u64;
                s.marks.push_back((at, SystemTime::now()));
            }
            s.written += data.len() as u64;
            if let Some(last) = data.last() {
                s.at_line_start = *last == b'\n';
            }
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

    /// What was written after offset `from`, in lines with their times, and the new offset.
    pub fn pieces_since(&self, from: u64) -> (Vec<Piece>, u64) {
        let s = self.state.lock().expect("log lock");
        (s.pieces(from), s.written)
    }

    /// Starts a new run: what the buffer holds becomes the previous run's, and it is emptied
    /// (offsets go on from where they were).
    pub fn rotate(&self) {
        let mut s = self.state.lock().expect("log lock");
        let run = State {
            bytes: std::mem::take(&mut s.bytes),
            capacity: s.capacity,
            written: s.written,
            marks: std::mem::take(&mut s.marks),
            previous: None,
            at_line_start: s.at_line_start,
        };
        s.previous = Some(Box::new(run));
        // The new run's first byte begins a line, however the last one ended.
        s.at_line_start = true;
    }

    /// The previous run's output, if there was one.
    pub fn previous(&self) -> Option<Vec<Piece>> {
        let s = self.state.lock().expect("log lock");
        s.previous.as_ref().map(|run| run.pieces(run.kept_from()))
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

    #[test]
    fn lines_keep_when_they_began_and_a_rotation_keeps_the_run_before() {
        let log = LogBuffer::new(1024);
        log.append(b"one\ntw");
        let between = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.append(b"o\nthree\n");
        let (pieces, end) = log.pieces_since(0);
        let lines: Vec<&[u8]> = pieces.iter().map(|p| p.bytes.as_slice()).collect();
        assert_eq!(lines, [&b"one\n"[..], b"two\n", b"three\n"]);
        assert!(
            pieces[0].time.unwrap() <= between && pieces[1].time.unwrap() <= between,
            "two began in the first write"
        );
        assert!(pieces[2].time.unwrap() > between, "three began in the second");
        assert!(pieces.iter().all(|p| p.starts_line));
        // From inside a line: the rest of it does not start a line.
        let (rest, _) = log.pieces_since(5);
        assert_eq!((rest[0].bytes.as_slice(), rest[0].starts_line), (&b"wo\n"[..], false));
        log.append(b"no newline");
        log.rotate();
        assert_eq!(log.previous().unwrap().len(), 4);
        assert_eq!(log.pieces_since(0).0, [], "the new run has written nothing");
        log.append(b"again\n");
        let (again, after) = log.pieces_since(end);
        assert_eq!((again.len(), after, again[0].starts_line), (1, end + 16, true), "a new run begins a line");
        assert!(again[0].time.is_some());
        // However many writes, the marks stay bounded.
        for _ in 0..(MAX_MARKS * 2) {
            log.append(b"x\n");
        }
        assert_eq!(log.state.lock().unwrap().marks.len(), MAX_MARKS);
    }
}
