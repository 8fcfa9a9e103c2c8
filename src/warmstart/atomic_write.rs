//! Replacing the snapshot file so that readers (and a crash) see the old
//! file or the new one, whole: a temporary file in the same directory,
//! fsynced, renamed over the old one, and the directory fsynced. What the
//! disk does later, the checksum ([`super::format`]) catches.
//!
//! Knows files, not what is in them.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that readers (and a crash) see the old file
/// or the new one, whole: temporary file, fsync, rename, fsync the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the snapshot path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Unique per write, not per process: during a rolling update the old
    // and the new agent pod both run as PID 1 and share the hostPath, and
    // two writers on one temporary file could rename a mix of both.
    tmp_name.push(format!(
        ".tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
