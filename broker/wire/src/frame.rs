//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! A frame longer than `socket.request.max.bytes` closes the connection before any of it is
//! read, and the buffer grows only as bytes actually arrive, so a peer that claims a huge frame
//! and sends nothing costs nothing.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a connection's framing failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

const READ_CHUNK: usize = 64 * 1024;

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = read_size(reader, max).await? else {
        return Ok(None);
    };
    let mut buf = BytesMut::with_capacity(size.min(READ_CHUNK));
    fill(reader, &mut buf, size).await?;
    Ok(Some(buf.freeze()))
}

/// Reads frames into memory kept from one frame to the next, for a connection whose frames
/// come one after another and are dropped before the next arrives (a follower's fetch
/// responses: one in flight, appended, dropped, the next asked for). Each frame reuses the
/// memory of the frames before it once nothing holds them any more, instead of allocating a
/// buffer per frame that grows by copying and faults in fresh zeroed pages (a fetch response
/// is 10 MiB during catch-up; on this project's VM a fresh page costs as much as the copy
/// into it). While an earlier frame is still held, it reads as [`read_frame`] does.
///
/// It keeps two such memories: a follower reading ahead holds one answer while it appends it
/// and reads the next into the other (`broker::replica::fetcher`).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
    spare: BytesMut,
}

impl FrameReader {
    /// Reads one frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        max: usize,
    ) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = read_size(reader, max).await? else {
            return Ok(None);
        };
        // Empty after every frame; a read that failed midway leaves part of one.
        self.buf.clear();
        if !self.buf.try_reclaim(size) {
            // Still held: the other memory, if its frame was dropped meanwhile.
            std::mem::swap(&mut self.buf, &mut self.spare);
            self.buf.clear();
            if !self.buf.try_reclaim(size) {
                // Nothing to reuse: grow as the bytes arrive, as `read_frame` does.
                self.buf = BytesMut::with_capacity(size.min(READ_CHUNK));
            }
        }
        fill(reader, &mut self.buf, size).await?;
        Ok(Some(self.buf.split_to(size).freeze()))
    }
}

/// Reads a frame's length; `Ok(None)` on a clean end of stream before it.
async fn read_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    let mut len_buf = [0u8; 4];
    match reader.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len_buf);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge {
            size: size as i64,
            max,
        });
    }
    Ok(Some(size))
}

/// Reads into `buf` until it holds `size` bytes.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    size: usize,
) -> Result<(), FrameError> {
    while buf.len() < size {
        // Reads grow with what arrived (at most double it): a large frame costs few reads,
        // and memory still follows the bytes actually received. (A buffer that already has
        // room reserves nothing.)
        let want = (size - buf.len()).min(READ_CHUNK.max(buf.len()));
        buf.reserve(want);
        let n = (&mut *reader).take(want as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-frame",
            )
            .into());
        }
    }
    Ok(())
}

/// Writes one already-framed response and flushes (the simulator's TCP needs the flush).
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_ones_refused_before_reading() {
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        assert_eq!(
            read_frame(&mut input, 10).await.unwrap().unwrap().as_ref(),
            b"abc"
        );
        assert_eq!(read_frame(&mut input, 10).await.unwrap().unwrap().len(), 0);
        assert!(read_frame(&mut input, 10).await.unwrap().is_none());
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge, 100).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 100).await,
            Err(FrameError::Negative(-1))
        ));
        let mut short: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(read_frame(&mut short, 100).await.is_err());
    }
    #[tokio::test]
    async fn a_frame_reader_reuses_the_memory_of_frames_already_dropped() {
        let mut input = Vec::new();
        for byte in [b'a', b'b', b'c'] {
            input.extend_from_slice(&(200_000u32).to_be_bytes());
            input.extend(std::iter::repeat_n(byte, 200_000));
        }
        input.extend_from_slice(&[0, 0, 0, 2, b'x', b'y']);
        let mut input = input.as_slice();
        let mut frames = FrameReader::default();
        let first = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        assert!(first.len() == 200_000 && first.iter().all(|&b| b == b'a'));
        let at = first.as_ptr();
        // Still held: the next frame cannot have its memory, and must not overwrite it.
        let second = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        assert!(second.iter().all(|&b| b == b'b'));
        assert!(
            first.iter().all(|&b| b == b'a'),
            "a held frame was overwritten"
        );
        assert_ne!(second.as_ptr(), at);
        let at = second.as_ptr();
        drop(first);
        drop(second);
        let third = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        assert!(third.len() == 200_000 && third.iter().all(|&b| b == b'c'));
        assert_eq!(
            third.as_ptr(),
            at,
            "the dropped frame's memory was not reused"
        );
        drop(third);
        // Two frames held in turn (a follower reading ahead): each reuses the memory of the
        // one before the one it follows.
        let mut input = Vec::new();
        for byte in [b'd', b'e', b'f', b'g'] {
            input.extend_from_slice(&(200_000u32).to_be_bytes());
            input.extend(std::iter::repeat_n(byte, 200_000));
        }
        let mut input = input.as_slice();
        let d = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        let e = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        let (at_d, at_e) = (d.as_ptr(), e.as_ptr());
        drop(d);
        let f = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        assert!(f.iter().all(|&b| b == b'f') && e.iter().all(|&b| b == b'e'));
        assert_eq!(
            f.as_ptr(),
            at_d,
            "the memory of the frame dropped first was not reused"
        );
        drop(e);
        let g = frames.read(&mut input, 1 << 20).await.unwrap().unwrap();
        assert!(g.iter().all(|&b| b == b'g') && f.iter().all(|&b| b == b'f'));
        assert_eq!(
            g.as_ptr(),
            at_e,
            "the memory of the frame dropped next was not reused"
        );
        drop((f, g));
        let mut input: &[u8] = &[0, 0, 0, 2, b'x', b'y'];
        assert_eq!(
            frames
                .read(&mut input, 1 << 20)
                .await
                .unwrap()
                .unwrap()
                .as_ref(),
            b"xy"
        );
        assert!(frames.read(&mut input, 1 << 20).await.unwrap().is_none());
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            frames.read(&mut huge, 100).await,
            Err(FrameError::TooLarge { .. })
        ));
    }
}
