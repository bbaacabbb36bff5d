//! Extended attributes of every file and directory of a btfs-mount
//! filesystem (read-only, namespace `user.btfs.`):
//!
//! | name | value |
//! |---|---|
//! | `user.btfs.progress` | `VERIFIED/SIZE`: bytes in verified pieces and bytes in all (a directory: of every file under it) |
//! | `user.btfs.info_hash` | the torrent's info-hash, 40 lowercase hex digits |
//! | `user.btfs.peers` | how many peers are connected to the torrent's swarm now |
//! | `user.btfs.requests` | the torrent's pieces with blocks requested from peers now: `PIECE:BLOCKS` pairs (piece index, outstanding 16 KiB requests), space-separated, ascending; empty when nothing is asked |
//!
//! `getfattr -d -m user.btfs MNT/file` shows them. Any other name is
//! "no such attribute", quietly: SELinux-aware tools ask for
//! `security.selinux` on every open and `ls -l` for
//! `system.posix_acl_access`.

use std::ffi::OsStr;

use fuser::{Errno, ReplyXattr};

use crate::archive::{Archive, NodeId};

/// The attribute names, NUL-terminated one after another (listxattr's
/// answer).
const NAMES: &[u8] =
    b"user.btfs.progress\0user.btfs.info_hash\0user.btfs.peers\0user.btfs.requests\0";

/// The value of attribute `name` of node `id` of `archive`, if it has one.
pub(crate) fn value(archive: &Archive, id: NodeId, name: &OsStr) -> Option<Vec<u8>> {
    match name.to_str()? {
        "user.btfs.progress" => {
            let (verified, size) = archive.node_progress(id)?;
            Some(format!("{verified}/{size}").into_bytes())
        }
        "user.btfs.info_hash" => Some(archive.info_hash().to_hex().into_bytes()),
        "user.btfs.peers" => Some(archive.stats().peers_connected.to_string().into_bytes()),
        "user.btfs.requests" => {
            let pairs: Vec<String> = archive
                .requested_pieces()
                .iter()
                .map(|(i, n)| format!("{i}:{n}"))
                .collect();
            Some(pairs.join(" ").into_bytes())
        }
        _ => None,
    }
}

/// Answers a getxattr of `value` (None: no such attribute) for a buffer
/// of `size` bytes (0: the caller asks for the length).
pub(crate) fn reply_value(value: Option<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match value {
        None => reply.error(Errno::NO_XATTR),
        Some(v) => reply_bytes(&v, size, reply),
    }
}

/// Answers a listxattr of a node that has the `user.btfs.` attributes.
pub(crate) fn reply_list(size: u32, reply: ReplyXattr) {
    reply_bytes(NAMES, size, reply)
}

/// Answers a listxattr of a node without attributes.
pub(crate) fn reply_empty_list(size: u32, reply: ReplyXattr) {
    reply_bytes(&[], size, reply)
}

fn reply_bytes(v: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if (size as usize) < v.len() {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}
