//! Small metadata files of the data directory (`topics.json`, `credentials.json`), replaced
//! whole and crash-safely: written to `<name>.tmp`, fsynced, renamed over the old file, then
//! the directory fsynced, so a crash leaves either the old or the new content, never a mix.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`; the new file gets permission bits `mode` (e.g. 0o600 for
/// secrets; they apply when the file is created, before any byte is written).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    // A leftover from a crash may have other permissions: start from nothing.
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
