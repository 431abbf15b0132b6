//! File-system helpers both servers' storage needs: here so the broker's partition logs and
//! the coordinator's ZAB files make names durable the same way.

use std::path::Path;

/// fsyncs a directory, so that names created, renamed or deleted in it survive a crash
/// (fsyncing a file makes its bytes durable, not its directory entry).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    //! Proves a directory can be synced after a rename in it, and that a missing directory is
    //! an error (not silently ignored).
    use super::*;

    #[test]
    fn syncs_an_existing_directory_and_refuses_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.tmp"), b"x").expect("write");
        std::fs::rename(dir.path().join("a.tmp"), dir.path().join("a")).expect("rename");
        sync_dir(dir.path()).expect("sync an existing directory");
        let err = sync_dir(&dir.path().join("missing")).expect_err("missing directory");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
