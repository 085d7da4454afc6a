//! `/proc/mounts` (`/proc/self/mounts`): the mount table, and [`disk_mounts`], the filter that
//! keeps the file systems worth reporting.
//!
//! Mount points are written with octal escapes for space, tab, newline and backslash (`\040`);
//! they are decoded here.

use super::ParseError;
use std::collections::HashSet;

const FILE: &str = "mounts";

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Source (`/dev/nvme0n1p2`, `server:/export`, `tmpfs`).
    pub device: String,
    /// Mount point, unescaped.
    pub mount_point: String,
    /// File system type.
    pub fs_type: String,
}

/// Parses the mount table.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_ascii_whitespace();
        let (Some(device), Some(mount_point), Some(fs_type)) = (it.next(), it.next(), it.next()) else {
            return Err(ParseError::new(FILE, i + 1, format!("expected at least 3 fields in {line:?}")));
        };
        out.push(MountEntry { device: unescape(device), mount_point: unescape(mount_point), fs_type: fs_type.to_owned() });
    }
    Ok(out)
}

/// Decodes the kernel's `\ooo` octal escapes; an invalid escape is kept as written.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Network and pooled file systems reported although their source is not a `/dev` node.
const NETWORK_FS: &[&str] = &["nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "zfs", "9p", "virtiofs"];
/// Read-only images that are always 100 % full and say nothing about space.
const IMAGE_FS: &[&str] = &["squashfs", "iso9660", "udf", "erofs"];
/// Mount points under these are kernel, runtime or container internals.
const SKIP_PREFIXES: &[&str] = &["/proc", "/sys", "/dev", "/run", "/snap", "/var/lib/docker/", "/var/lib/containers/", "/var/lib/kubelet/"];

/// The mounts to report as disks: `/` whatever its type, block devices (`/dev/…`) and network
/// file systems; not kernel/runtime paths or read-only images; for a mount point mounted twice,
/// the last (top) mount (old kernels list `rootfs /` before the real root); one entry per device
/// (the first, so bind mounts do not repeat a disk).
pub fn disk_mounts(entries: &[MountEntry]) -> Vec<MountEntry> {
    let mut top = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        top.insert(e.mount_point.as_str(), i);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if top.get(e.mount_point.as_str()) != Some(&i) {
            continue;
        }
        let mp = e.mount_point.as_str();
        let root = mp == "/";
        // `/var/lib/docker/` skips what is below it but keeps a disk mounted at `/var/lib/docker`.
        let skipped = SKIP_PREFIXES.iter().any(|p| if p.ends_with('/') { mp.starts_with(p) } else { mp == *p || mp.starts_with(&format!("{p}/")) });
        if !root && skipped {
            continue;
        }
        if IMAGE_FS.contains(&e.fs_type.as_str()) {
            continue;
        }
        let real = root || e.device.starts_with("/dev/") || NETWORK_FS.contains(&e.fs_type.as_str());
        if !real {
            continue;
        }
        if !seen.insert(e.device.clone()) {
            continue;
        }
        out.push(e.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/a\9"), r"/a\9");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn filter_keeps_disks_root_and_nfs_once() {
        let t = "overlay / overlay rw 0 0\nproc /proc proc rw 0 0\n/dev/sda1 /boot ext4 rw 0 0\n/dev/sda1 /srv/bind ext4 rw 0 0\n\
                 tmpfs /tmp tmpfs rw 0 0\nnas:/export /data nfs4 rw 0 0\n/dev/loop0 /snap/core/1 squashfs ro 0 0\n\
                 /dev/sdb1 /var/lib/docker/overlay2/x ext4 rw 0 0\n/dev/sdb1 /var/lib/docker ext4 rw 0 0\n/dev/sdc1 /mnt/my\\040disk xfs rw 0 0\n";
        let got: Vec<String> = disk_mounts(&parse(t).unwrap()).into_iter().map(|m| m.mount_point).collect();
        assert_eq!(got, ["/", "/boot", "/data", "/var/lib/docker", "/mnt/my disk"]);
    }

    #[test]
    fn short_lines_are_errors() {
        assert_eq!(parse("a b c d\nx y\n").unwrap_err().line, 2);
    }
}
