//! The file side of a compaction swap (steps in [`super::compaction`]'s documentation): the
//! `.cleaned` and `.swap` names of a segment's files, the renames in commit order, and, when a
//! log opens, the completion or rollback of a swap a crash interrupted. Below both the
//! compaction (which swaps) and the recovery (which finishes interrupted swaps).

use std::path::{Path, PathBuf};

use super::error::LogError;
use super::segment::{parse_segment_file, segment_file};
use tuning::fs::sync_dir;

/// Segment files in the order a swap renames them: the log last (its `.swap` name is the
/// commit point).
const SWAP_ORDER: [&str; 3] = ["index", "timeindex", "log"];

/// `path` with `.suffix` appended (`00…0.log` -> `00…0.log.cleaned`).
pub(crate) fn path_with(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    std::fs::rename(from, to).map_err(|e| LogError::io(from, "renaming during a segment swap", e))
}

/// Renames the `from` files of segment `base` to their `to` names, in [`SWAP_ORDER`]; `from`
/// and `to` are suffixes (`""` for the segment's own names).
pub(crate) fn rename_segment_files(
    dir: &Path,
    base: i64,
    from: &str,
    to: &str,
) -> Result<(), LogError> {
    let named = |ext: &str, suffix: &str| {
        let p = segment_file(dir, base, ext);
        if suffix.is_empty() {
            p
        } else {
            path_with(&p, suffix)
        }
    };
    for ext in SWAP_ORDER {
        rename(&named(ext, from), &named(ext, to))?;
    }
    Ok(())
}

pub(crate) fn remove_segment_files(dir: &Path, base: i64, suffix: &str) {
    for ext in SWAP_ORDER.iter().rev() {
        let _ = std::fs::remove_file(path_with(&segment_file(dir, base, ext), suffix));
    }
}

/// Completes or rolls back swaps a crash interrupted (see the module documentation). Called
/// when a log opens, before its segments are read. Returns the base offsets of the completed
/// swaps and the number of files removed.
pub(crate) fn finish_interrupted_swaps(dir: &Path) -> Result<(Vec<i64>, usize), LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(LogError::io(dir, "listing the log directory", e)),
    };
    let mut leftovers = Vec::new();
    let mut committed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, "listing the log directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".swap") {
            match parse_segment_file(stem, "log") {
                Some(base) if segment_file(dir, base, "log").exists() => committed.push(base),
                _ => leftovers.push(entry.path()),
            }
        } else if name.ends_with(".cleaned") {
            leftovers.push(entry.path());
        }
    }
    committed.sort_unstable();
    for &base in &committed {
        for ext in SWAP_ORDER {
            let swap = path_with(&segment_file(dir, base, ext), "swap");
            if swap.exists() {
                rename(&swap, &segment_file(dir, base, ext))?;
            }
        }
        tracing::warn!(dir = %dir.display(), base_offset = base, "completed an interrupted segment swap");
    }
    let mut removed = 0;
    for path in leftovers {
        // Index `.swap` files of a swap that did not commit are leftovers too, but those of a
        // committed one were renamed just above.
        if !path.exists() {
            continue;
        }
        tracing::warn!(file = %path.display(), "removing a half-written cleaned segment file");
        std::fs::remove_file(&path)
            .map_err(|e| LogError::io(&path, "removing a cleaner leftover", e))?;
        removed += 1;
    }
    if !committed.is_empty() || removed > 0 {
        sync_dir(dir).map_err(|e| LogError::io(dir, "syncing the directory", e))?;
    }
    Ok((committed, removed))
}
