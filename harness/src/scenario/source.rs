// Reading a scenario file: regular files only and at most `MAX_FILE_BYTES`, since a FIFO blocks
// and a device such as /dev/zero never ends; a UTF-8 byte-order mark (some editors write one) is skipped.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::limits::MAX_FILE_BYTES;

/// The bytes of the file at `path`, or why they cannot be a scenario.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let file = open(path).map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cannot read: not a regular file ({}); a scenario is a JSON file", kind(&meta)));
    }
    let too_large = || format!("cannot read: larger than {} MiB; a scenario is at most that", MAX_FILE_BYTES >> 20);
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow while it is read: the cap holds whatever its size said.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens without blocking: opening a FIFO for reading waits for a writer unless O_NONBLOCK is set
/// (it has no effect on regular files). What was opened is checked before anything is read.
fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a file"
}

/// `bytes` without a leading UTF-8 byte-order mark. JSON forbids one, but editors on some systems
/// write it, and it is invisible: refusing it would leave users puzzled at "line 1 column 1".
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}
