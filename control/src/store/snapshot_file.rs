//! Snapshot data as a file, never as one value in memory or in redb (which refuses values over
//! 3 GiB, and a failed snapshot build stops raft): the builder streams the objects into a file
//! record by record, openraft sends and receives it in chunks, and the install reads it back
//! record by record.
//!
//! The format: the line `shoal-snapshot-1`, then per object a little-endian `u32` key length,
//! the key, a `u32` value length, the value.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

const MAGIC: &[u8] = b"shoal-snapshot-1\n";

/// The largest key or value a snapshot may hold: far above any object the API admits, far
/// below what a damaged length could make the install allocate.
pub const MAX_RECORD: usize = 64 << 20;

/// openraft's snapshot data: a file, and where it is.
///
/// Reads and writes are positional and done in the poll that asks for them, so every one is
/// whole or not started when its future is dropped. This matters on the receiving side:
/// openraft's chunk receiver seeks only when a chunk's offset differs from the one it expects,
/// and a peer whose request timed out retries the same chunk. With a file that writes in the
/// background (tokio's), a chunk handler dropped half way left the file's position past the
/// receiver's offset, the retried chunk landed behind the half-written one, and the snapshot
/// could not be installed. A chunk is at most openraft's `snapshot_max_chunk_size` (3 MiB),
/// written into the page cache: short enough to do on the runtime's thread.
#[derive(Debug)]
pub struct SnapshotFile {
    file: std::fs::File,
    path: PathBuf,
    position: u64,
}

impl SnapshotFile {
    /// A new, empty file at `path` to receive a snapshot into.
    pub fn create(path: PathBuf) -> std::io::Result<SnapshotFile> {
        let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(SnapshotFile { file, path, position: 0 })
    }

    /// The snapshot at `path`, to read.
    pub fn open(path: PathBuf) -> std::io::Result<SnapshotFile> {
        Ok(SnapshotFile { file: std::fs::File::open(&path)?, path, position: 0 })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let read = loop {
            match this.file.read_at(buf.initialize_unfilled(), this.position) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = read?;
        buf.advance(n);
        this.position += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.file.write_all_at(buf, this.position)?;
        this.position += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing to do: the install makes the file durable before it records it as current.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, to: std::io::SeekFrom) -> std::io::Result<()> {
        let (base, delta) = match to {
            std::io::SeekFrom::Start(at) => (at, 0),
            std::io::SeekFrom::End(delta) => (self.file.metadata()?.len(), delta),
            std::io::SeekFrom::Current(delta) => (self.position, delta),
        };
        self.position = base
            .checked_add_signed(delta)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

/// Writes the records `(key, value)` to a new file at `path`, and makes it durable.
pub fn write_records<E>(
    path: &Path,
    records: impl Iterator<Item = Result<(String, Vec<u8>), E>>,
) -> Result<(), WriteError<E>> {
    let file = std::fs::File::create(path).map_err(WriteError::Io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC).map_err(WriteError::Io)?;
    for record in records {
        let (key, value) = record.map_err(WriteError::Source)?;
        put_record(&mut out, &key, &value).map_err(WriteError::Io)?;
    }
    let file = out.into_inner().map_err(|e| WriteError::Io(e.into_error()))?;
    file.sync_all().map_err(WriteError::Io)
}

/// Writes one record; one over [`MAX_RECORD`] is refused here, where it can still be told,
/// rather than when it is read back.
pub fn put_record(out: &mut impl Write, key: &str, value: &[u8]) -> std::io::Result<()> {
    for part in [key.as_bytes(), value] {
        if part.len() > MAX_RECORD {
            return Err(std::io::Error::other(format!(
                "a record of {} bytes under {key:?}, over {MAX_RECORD}",
                part.len()
            )));
        }
    }
    for part in [key.as_bytes(), value] {
        out.write_all(&(part.len() as u32).to_le_bytes())?;
        out.write_all(part)?;
    }
    Ok(())
}

/// Why writing a snapshot failed: the file, or where its records came from.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The file.
    Io(std::io::Error),
    /// The records' source.
    Source(E),
}

/// The records of the snapshot file at `path`, one at a time.
pub fn read_records(path: &Path) -> std::io::Result<impl Iterator<Item = std::io::Result<(String, Vec<u8>)>>> {
    records_of(path, MAGIC, "a Shoal snapshot")
}

/// The records of the file at `path` in this format, behind the first line `magic` (a file
/// without it is not `what`).
pub fn records_of(
    path: &Path,
    magic: &'static [u8],
    what: &str,
) -> std::io::Result<impl Iterator<Item = std::io::Result<(String, Vec<u8>)>>> {
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut head = vec![0u8; magic.len()];
    if input.read_exact(&mut head).is_err() || head != magic {
        return Err(std::io::Error::other(format!("{} is not {what}", path.display())));
    }
    Ok(std::iter::from_fn(move || read_record(&mut input).transpose()))
}

fn read_part(input: &mut impl Read, first: bool) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    if first {
        // A clean end is only possible before a record's first byte.
        let mut got = 0;
        while got < 4 {
            match input.read(&mut len[got..])? {
                0 if got == 0 => return Ok(None),
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
    } else {
        input.read_exact(&mut len)?;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD {
        return Err(std::io::Error::other(format!("a snapshot record of {len} bytes")));
    }
    let mut part = vec![0u8; len];
    input.read_exact(&mut part)?;
    Ok(Some(part))
}

fn read_record(input: &mut impl Read) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let Some(key) = read_part(input, true)? else { return Ok(None) };
    let key = String::from_utf8(key).map_err(std::io::Error::other)?;
    let value = read_part(input, false)?.expect("read_exact fails rather than end");
    Ok(Some((key, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What openraft's chunk receiver relies on: a write is done in the poll that starts it
    /// (so a dropped chunk handler leaves none half done), and a chunk received again, or out
    /// of order after a seek, lands where its offset says.
    #[tokio::test]
    async fn chunks_land_at_their_offsets_and_each_write_is_done_in_one_poll() {
        use std::future::Future;
        use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let mut file = SnapshotFile::create(dir.path().join("r.partial")).unwrap();
        let chunk = vec![7u8; 5 << 20];
        let mut write = std::pin::pin!(file.write_all(&chunk));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(write.as_mut().poll(&mut cx).is_ready(), "a 5 MiB write finished in its first poll");
        file.write_all(b"tail").await.unwrap();
        file.seek(std::io::SeekFrom::Start(1)).await.unwrap();
        file.write_all(b"xy").await.unwrap();
        assert_eq!(file.seek(std::io::SeekFrom::End(0)).await.unwrap(), (5 << 20) + 4);
        file.seek(std::io::SeekFrom::Start(0)).await.unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), (5 << 20) + 4);
        assert_eq!(&back[..4], &[7, b'x', b'y', 7]);
        assert_eq!(&back[back.len() - 4..], b"tail");
        assert!(file.seek(std::io::SeekFrom::Current(-(1 << 30))).await.is_err(), "before the start");
    }

    #[test]
    fn records_come_back_as_written_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let records = vec![("objects/a".to_owned(), b"{}".to_vec()), ("b".to_owned(), Vec::new())];
        write_records::<()>(&path, records.clone().into_iter().map(Ok)).unwrap();
        let back: Vec<_> = read_records(&path).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, records);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_records(&path).unwrap().any(|r| r.is_err()), "a cut-off record");
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, huge).unwrap();
        assert!(read_records(&path).unwrap().any(|r| r.is_err()), "a length past the bound");
        std::fs::write(&path, b"not a snapshot at all").unwrap();
        assert!(read_records(&path).is_err());
        let too_large = vec![("k".to_owned(), vec![0u8; MAX_RECORD + 1])];
        assert!(
            write_records::<()>(&path, too_large.into_iter().map(Ok)).is_err(),
            "refused when written, not when installed"
        );
    }
}
