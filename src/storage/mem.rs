//! [`MemStorage`]: a piece space in memory, for embedding and tests.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::Storage;
use crate::metainfo::Info;

/// Pieces kept in memory (no persistence). For embedding and tests.
pub struct MemStorage {
    piece_length: u64,
    total_length: u64,
    pieces: Mutex<HashMap<u32, Arc<[u8]>>>,
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
}

impl Storage for MemStorage {
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        self.pieces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, data.into());
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.total_length {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range past the end",
            ));
        }
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
