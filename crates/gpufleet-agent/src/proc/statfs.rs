//! Disk sizes from `statvfs(2)` through `rustix` (no unsafe code here).
//!
//! `statvfs` on a dead NFS server can block for a long time; callers run it on a blocking thread
//! under a timeout (see [`crate::sampler`]).

use crate::wire::Disk;
use std::path::Path;

/// Size, used and available bytes of the file system mounted at `mount`.
pub fn disk_usage(mount: &Path, fs: &str) -> std::io::Result<Disk> {
    let s = rustix::fs::statvfs(mount)?;
    let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
    let total = s.f_blocks.saturating_mul(frsize);
    let used = s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(frsize);
    let free = s.f_bavail.saturating_mul(frsize);
    Ok(Disk { mount: mount.to_string_lossy().into_owned(), fs: fs.to_owned(), total_bytes: total, used_bytes: used, free_bytes: free })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_size_and_a_missing_path_is_an_error() {
        let d = disk_usage(Path::new("/"), "ext4").unwrap();
        assert!(d.total_bytes > 0);
        assert!(d.used_bytes <= d.total_bytes && d.free_bytes <= d.total_bytes);
        assert!(disk_usage(Path::new("/definitely/not/here"), "ext4").is_err());
    }
}
