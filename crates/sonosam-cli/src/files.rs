//! Writing output files: atomically (a temporary file renamed into place), after checking the
//! path can take a file — so an interrupted or failed run never leaves a half file.

use anyhow::{Context, bail};
use std::path::Path;

use crate::CliResult;

/// Write via a temporary file next to `path` and rename, so an interrupted run never leaves
/// a half file; a failed write or rename removes the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CliResult<()> {
    check_output(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Check that a file can be written at `path`: a file name, in an existing folder, and not
/// an existing folder itself.
pub fn check_output(path: &Path) -> CliResult<()> {
    if path.file_name().is_none() || path.is_dir() {
        bail!("{}: is a folder; give a file name", path.display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("{}: the folder {} does not exist", path.display(), parent.display());
    }
    Ok(())
}

/// Write `files` into the folder `dir` atomically: a temporary folder renamed over the old one.
pub fn write_folder_atomic(dir: &Path, files: &[(&str, Vec<u8>)]) -> CliResult<()> {
    let tmp = dir.with_extension("partial");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for (name, bytes) in files {
        std::fs::write(tmp.join(name), bytes)
            .with_context(|| format!("cannot write {}", tmp.join(name).display()))?;
    }
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot write {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
