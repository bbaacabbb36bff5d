//! [`MemStorage`]: a piece space in memory, for embedding and tests.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use super::Storage;
use crate::metainfo::Info;

/// Pieces kept in memory (no persistence). For embedding and tests: a
/// piece costs its length in memory from its first block on.
pub struct MemStorage {
    piece_length: u64,
    total_length: u64,
    /// Pieces written to, whole or in part (unwritten bytes are zeros).
    pieces: Mutex<HashMap<u32, Vec<u8>>>,
}

impl MemStorage {
    /// Empty storage for `info`'s piece space.
    pub fn new(info: &Info) -> MemStorage {
        MemStorage {
            piece_length: info.piece_length,
            total_length: info.total_length,
            pieces: Mutex::new(HashMap::new()),
        }
    }

    /// Size in bytes of piece `index` (the last one may be shorter).
    fn piece_size(&self, index: u32) -> usize {
        let start = u64::from(index) * self.piece_length;
        (self.total_length - start).min(self.piece_length) as usize
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.total_length => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range past the end",
            )),
        }
    }
}

impl Storage for MemStorage {
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        self.write_at(u64::from(index) * self.piece_length, data)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        let mut pieces = self.pieces.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let index = (pos / self.piece_length) as u32;
            let within = (pos % self.piece_length) as usize;
            let size = self.piece_size(index);
            let piece = pieces.entry(index).or_insert_with(|| vec![0; size]);
            let n = (size - within).min(data.len() - done);
            piece[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let pieces = self.pieces.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = (pos / self.piece_length) as u32;
            let within = (pos % self.piece_length) as usize;
            let piece = pieces.get(&index).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("piece {index} not stored"))
            })?;
            let n = (piece.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&piece[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn load_have(&self) -> Option<Vec<u8>> {
        None
    }

    fn save_have(&self, _bitfield: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn discard_piece(&self, index: u32) -> io::Result<()> {
        self.pieces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        Ok(())
    }
}
