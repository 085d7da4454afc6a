//! Parsers for the `/proc` files the agent reads, and [`ProcReader`], which reads them from a
//! configurable root so tests feed files captured on other kernels (`tests/data/proc/<kernel>/`).
//!
//! Every parser is a pure function over `&str` that names the file, line and reason when it
//! rejects input; none panics on malformed text. Parsed files:
//! - [`stat`]: the aggregate `cpu` line (4 to 10 fields depending on the kernel) and the CPU count;
//!   [`stat::CpuTimes::percent_since`] turns two samples into [`crate::wire::CpuPercent`].
//! - [`meminfo`]: `MemTotal`, `MemAvailable` (estimated before 3.14), swap and `SwapCached`.
//! - [`mounts`]: mount table with octal escapes decoded, and the filter that keeps real disks.
//! - [`netdev`]: `/proc/net/dev` byte counters.
//! - [`simple`]: `loadavg`, `uptime`, and `vmstat`'s `oom_kill`.
//!
//! Disk sizes come from `statvfs(2)` via `rustix` ([`statfs`]), not from `/proc`.

pub mod meminfo;
pub mod mounts;
pub mod netdev;
pub mod simple;
pub mod stat;
pub mod statfs;

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A `/proc` file that could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file} line {line}: {reason}")]
pub struct ParseError {
    /// File name relative to the proc root (`stat`, `net/dev`).
    pub file: &'static str,
    /// 1-based line number (0 when the whole file is wrong, e.g. a missing line).
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(file: &'static str, line: usize, reason: impl Into<String>) -> Self {
        Self { file, line, reason: reason.into() }
    }
}

/// Reading or parsing a `/proc` file failed.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Full path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but its content was not understood.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Reads and parses `/proc` files under a root directory (default `/proc`).
#[derive(Clone, Debug)]
pub struct ProcReader {
    root: PathBuf,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcReader {
    /// A reader of `root/stat`, `root/meminfo`, … .
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The text of `root/<name>`.
    pub fn read(&self, name: &str) -> Result<String, ProcError> {
        let path = self.root.join(name);
        std::fs::read_to_string(&path).map_err(|source| ProcError::Io { path, source })
    }

    /// `stat`.
    pub fn stat(&self) -> Result<stat::Stat, ProcError> {
        Ok(stat::parse(&self.read("stat")?)?)
    }

    /// `meminfo`.
    pub fn meminfo(&self) -> Result<meminfo::MemInfo, ProcError> {
        Ok(meminfo::parse(&self.read("meminfo")?)?)
    }

    /// `mounts`.
    pub fn mounts(&self) -> Result<Vec<mounts::MountEntry>, ProcError> {
        Ok(mounts::parse(&self.read("mounts")?)?)
    }

    /// `net/dev`.
    pub fn netdev(&self) -> Result<Vec<netdev::NetCounters>, ProcError> {
        Ok(netdev::parse(&self.read("net/dev")?)?)
    }

    /// `loadavg`.
    pub fn loadavg(&self) -> Result<[f64; 3], ProcError> {
        Ok(simple::parse_loadavg(&self.read("loadavg")?)?)
    }

    /// `uptime` (seconds since boot).
    pub fn uptime(&self) -> Result<f64, ProcError> {
        Ok(simple::parse_uptime(&self.read("uptime")?)?)
    }

    /// `vmstat`.
    pub fn vmstat(&self) -> Result<simple::VmStat, ProcError> {
        Ok(simple::parse_vmstat(&self.read("vmstat")?)?)
    }
}
