//! File helpers: nothing the trainer writes is left half-written.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file in the same directory, syncs it, then renames it over `path`,
/// so a reader (or a crash) sees either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

/// Writes a report as `dir/stem.json` (pretty JSON of `value`) and `dir/stem.md` (`markdown`),
/// each atomically.
pub fn write_report(
    dir: &Path,
    stem: &str,
    value: &impl serde::Serialize,
    markdown: &str,
) -> Result<()> {
    let json = serde_json::to_string_pretty(value).context("serialising the report")?;
    write_atomic(&dir.join(format!("{stem}.json")), json.as_bytes())?;
    write_atomic(&dir.join(format!("{stem}.md")), markdown.as_bytes())
}
