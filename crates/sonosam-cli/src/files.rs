//! Writing output files: atomically (a temporary file renamed into place), after checking the
//! path can take a file — so an interrupted or failed run never leaves a half file.

use std::path::Path;

use crate::CliResult;

/// Write via a temporary file next to `path` and rename, so an interrupted run never leaves
/// a half file; a failed write or rename removes the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CliResult<()> {
    check_output(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let result = std::fs::write(&tmp, bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Check that a file can be written at `path`: a file name, in an existing folder, and not
/// an existing folder itself.
pub fn check_output(path: &Path) -> CliResult<()> {
    if path.file_name().is_none() || path.is_dir() {
        return Err(format!("{}: is a folder; give a file name", path.display()));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("{}: the folder {} does not exist", path.display(), parent.display()));
    }
    Ok(())
}

/// Write `files` into the folder `dir` atomically: a temporary folder renamed over the old one.
pub fn write_folder_atomic(dir: &Path, files: &[(&str, Vec<u8>)]) -> CliResult<()> {
    let tmp = dir.with_extension("partial");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    for (name, bytes) in files {
        std::fs::write(tmp.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", tmp.join(name).display()))?;
    }
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| format!("cannot replace {}: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
