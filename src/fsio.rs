//! The one way files and directories are published: written under a temporary name beside
//! the destination, flushed, then renamed over it, so a crash never leaves a half-written
//! file or directory under the real name. Blocking.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Flushes a file or directory to disk, so a rename never publishes unwritten data.
pub fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// The directory `dest` lives in (`.` for a bare name), created if missing.
fn parent_of(dest: &Path) -> Result<&Path> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    Ok(parent)
}

/// `dest`'s last component, or `fallback` where it has none (`..`).
fn name_of<'a>(dest: &'a Path, fallback: &'a str) -> std::borrow::Cow<'a, str> {
    dest.file_name()
        .map_or(fallback.into(), |n| n.to_string_lossy())
}

/// An empty `.tmp-<name>` directory beside `dest` (one left by a crash is removed first);
/// fill it, then [`publish_dir`] it. `fallback` names it where `dest` has no last component.
pub fn temp_dir(dest: &Path, fallback: &str) -> Result<PathBuf> {
    let tmp = parent_of(dest)?.join(format!(".tmp-{}", name_of(dest, fallback)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

/// Renames the filled (and [`sync`]ed) `tmp` over `dest`, replacing what was there.
pub fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    }
    std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))
}

/// Writes `dst` through `write`, which is given a `.partial-<name>` path beside it, then
/// renames that over `dst`.
pub fn write_with(dst: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    parent_of(dst)?;
    let name = dst
        .file_name()
        .ok_or_else(|| Error::invalid_input(format!("{} has no file name", dst.display())))?
        .to_string_lossy();
    let partial = dst.with_file_name(format!(".partial-{name}"));
    write(&partial)?;
    std::fs::rename(&partial, dst).map_err(|e| Error::io(dst, e))
}

/// Writes `bytes` under a temporary name, then renames: no half-written file under the real name.
pub fn write_atomic(dst: &Path, bytes: &[u8]) -> Result<()> {
    write_with(dst, |partial| {
        std::fs::write(partial, bytes).map_err(|e| Error::io(partial, e))
    })
}
