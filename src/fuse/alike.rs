//! Replies that every btfs-mount filesystem (a torrent's read-only tree,
//! the gateway's root of archives, a `--writable` draft) gives alike.

use fuser::ReplyStatfs;

/// Size of the blocks `statfs` counts in, bytes (also its fragment size).
pub(crate) const STATFS_BLOCK: u32 = 4096;

/// Answers `statfs` with `blocks` blocks of [`STATFS_BLOCK`] bytes, none
/// free, and `files` inodes, none free; names are up to 255 bytes.
pub(crate) fn reply_statfs(reply: ReplyStatfs, blocks: u64, files: u64) {
    reply.statfs(blocks, 0, 0, files, 0, STATFS_BLOCK, 255, STATFS_BLOCK);
}

/// The `ioctl` method of a `fuser::Filesystem` impl (expands to it, in the
/// impl block): every ioctl fails with `ENOTTY`. No ioctl applies to a
/// torrent's files (a shell's `TCGETS` asks whether a file is a terminal:
/// it is not); fuser's default answers `ENOSYS`, with a warning logged
/// for every call.
macro_rules! ioctl_not_a_terminal {
    () => {
        fn ioctl(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _flags: fuser::IoctlFlags,
            _cmd: u32,
            _in_data: &[u8],
            _out_size: u32,
            reply: fuser::ReplyIoctl,
        ) {
            reply.error(fuser::Errno::ENOTTY);
        }
    };
}
pub(crate) use ioctl_not_a_terminal;
