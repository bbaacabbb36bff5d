//! Hashing a file's bytes into its `pieces root` and piece layer.

use super::{
    BLOCK_SIZE, Hash, MAX_FILE_LENGTH, MAX_LAYER_NODES, MAX_PIECE_LENGTH, MerkleError, TreeShape,
    block_hash, root_of,
};

/// Hashes one file's bytes, fed in order in any chunks, into its `pieces
/// root` and piece layer, keeping at most one piece of leaf hashes and the
/// piece layer in memory.
#[derive(Debug, Clone)]
pub struct FileHasher {
    pub(super) piece_length: u64,
    /// Leaves per piece.
    pub(super) per_piece: usize,
    /// Bytes of the block being filled.
    pub(super) buf: Vec<u8>,
    /// Leaf hashes of the piece being filled.
    pub(super) leaves: Vec<Hash>,
    /// Hashes of the finished pieces.
    pub(super) piece_layer: Vec<Hash>,
    /// Bytes fed so far.
    pub(super) length: u64,
}

/// What [`FileHasher::finish`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    /// The file's length in bytes.
    pub length: u64,
    /// Its `pieces root`.
    pub root: Hash,
    /// Its piece layer: one hash per piece, empty for a one-piece file
    /// (whose piece is checked against `root`).
    pub piece_layer: Vec<Hash>,
}

impl FileHasher {
    /// A hasher for a file of a torrent with pieces of `piece_length`
    /// bytes. Errors: [`MerkleError::BadPieceLength`].
    pub fn new(piece_length: u64) -> Result<FileHasher, MerkleError> {
        if !piece_length.is_power_of_two()
            || !(BLOCK_SIZE..=MAX_PIECE_LENGTH).contains(&piece_length)
        {
            return Err(MerkleError::BadPieceLength(piece_length));
        }
        Ok(FileHasher {
            piece_length,
            per_piece: (piece_length / BLOCK_SIZE) as usize,
            buf: Vec::with_capacity(BLOCK_SIZE as usize),
            leaves: Vec::new(),
            piece_layer: Vec::new(),
            length: 0,
        })
    }

    /// Feeds the next bytes of the file.
    ///
    /// Errors: [`MerkleError::FileTooLarge`] once more than
    /// [`MAX_FILE_LENGTH`] bytes were fed, [`MerkleError::TooManyNodes`]
    /// once the piece layer would exceed [`MAX_LAYER_NODES`].
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), MerkleError> {
        self.length = self.length.saturating_add(data.len() as u64);
        if self.length > MAX_FILE_LENGTH {
            return Err(MerkleError::FileTooLarge(self.length));
        }
        while !data.is_empty() {
            let take = (BLOCK_SIZE as usize - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK_SIZE as usize {
                let leaf = block_hash(&self.buf);
                self.buf.clear();
                self.push_leaf(leaf)?;
            }
        }
        Ok(())
    }

    fn push_leaf(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        if self.leaves.len() == self.per_piece {
            // a piece is complete only once the file goes on past it: a
            // one-piece file's root is over fewer leaf slots
            self.flush_piece()?;
        }
        self.leaves.push(leaf);
        Ok(())
    }

    fn flush_piece(&mut self) -> Result<(), MerkleError> {
        if self.piece_layer.len() as u64 >= MAX_LAYER_NODES {
            return Err(MerkleError::TooManyNodes {
                layer: (self.piece_length / BLOCK_SIZE).trailing_zeros(),
                nodes: self.piece_layer.len() as u64 + 1,
            });
        }
        let h = root_of(&self.leaves, 0, self.per_piece as u64);
        self.piece_layer.push(h);
        self.leaves.clear();
        Ok(())
    }

    /// The root and piece layer of the bytes fed.
    ///
    /// Errors: [`MerkleError::EmptyFile`] when nothing was fed, and
    /// [`FileHasher::update`]'s.
    pub fn finish(mut self) -> Result<FileHashes, MerkleError> {
        let shape = TreeShape::new(self.length, self.piece_length)?;
        if !self.buf.is_empty() {
            let leaf = block_hash(&self.buf);
            self.buf.clear();
            self.push_leaf(leaf)?;
        }
        if self.piece_layer.is_empty() {
            let root = root_of(&self.leaves, 0, shape.leaves());
            return Ok(FileHashes {
                length: self.length,
                root,
                piece_layer: Vec::new(),
            });
        }
        self.flush_piece()?;
        let pl = shape.piece_layer();
        let root = root_of(&self.piece_layer, pl, shape.layer_width(pl));
        Ok(FileHashes {
            length: self.length,
            root,
            piece_layer: self.piece_layer,
        })
    }
}
