//! Child processes of the benchmarks and the figures read from the OS: a guard that stops its
//! child on every exit path, SIGTERM with a bounded wait, free loopback ports, `VmHWM`, and
//! `du -sb`-style sizes. Shared by `bench ingest` and `bench gateway`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a waiting loop looks again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Longest a child started with [`ChildProc::spawn_graceful`] may take to exit after SIGTERM when
/// its guard is dropped, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process that is stopped and reaped when the guard is dropped, unless it has already
/// exited: killed (SIGKILL), or — when spawned with [`ChildProc::spawn_graceful`] — sent SIGTERM
/// first and given [`STOP_GRACE`] (nginx's master then stops its workers). Every process a
/// benchmark starts lives in one of these.
#[derive(Debug)]
pub(crate) struct ChildProc {
    child: Child,
    what: String,
    exited: Option<ExitStatus>,
    graceful_drop: bool,
}

impl ChildProc {
    /// Spawns `cmd`; `what` names the process in errors.
    pub(crate) fn spawn(cmd: &mut Command, what: impl Into<String>) -> Result<ChildProc> {
        let what = what.into();
        let child = cmd.spawn().with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
        Ok(ChildProc { child, what, exited: None, graceful_drop: false })
    }

    /// Like [`Self::spawn`], but dropping the guard sends SIGTERM and waits before killing.
    pub(crate) fn spawn_graceful(cmd: &mut Command, what: impl Into<String>) -> Result<ChildProc> {
        let mut p = Self::spawn(cmd, what)?;
        p.graceful_drop = true;
        Ok(p)
    }

    /// Sends SIGTERM. `unsafe` is forbidden, so the signal goes through kill(1), not libc::kill.
    fn send_term(&self) -> std::io::Result<ExitStatus> {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).stderr(std::process::Stdio::null()).status()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the child's stdout pipe (spawned with `Stdio::piped()`), to feed another process.
    pub(crate) fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub(crate) fn try_exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().with_context(|| format!("waiting for {}", self.what))?;
        }
        Ok(self.exited)
    }

    /// Fails when the process has exited (it was expected to keep running).
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.try_exited()? {
            None => Ok(()),
            Some(st) => bail!("{} exited unexpectedly ({st})", self.what),
        }
    }

    /// Waits until the process exits by itself, at most `limit`, calling `on_poll` every [`POLL`]
    /// while it runs. Past the limit it is killed and this fails.
    pub(crate) async fn wait_exit(&mut self, limit: Duration, mut on_poll: impl FnMut(u32)) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_exited()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} did not exit within {limit:?}; killed it", self.what);
            }
            on_poll(self.pid());
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM (the process's graceful shutdown) and waits as [`Self::wait_exit`] does.
    pub(crate) async fn terminate(&mut self, limit: Duration, on_poll: impl FnMut(u32)) -> Result<ExitStatus> {
        if self.try_exited()?.is_none() {
            let st = self.send_term().context("running kill -TERM")?;
            if !st.success() && self.try_exited()?.is_none() {
                bail!("kill -TERM {} ({}) failed: {st}", self.pid(), self.what);
            }
        }
        self.wait_exit(limit, on_poll).await
    }

    /// SIGKILL and reap, ignoring errors (the process may be gone already).
    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.graceful_drop && matches!(self.try_exited(), Ok(None)) && self.send_term().is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(self.try_exited(), Ok(None)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill();
    }
}

/// A loopback port that was free a moment ago (bound, then released).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Peak resident set size (`VmHWM`) of a live process, in kB.
pub(crate) fn vm_hwm_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_hwm(&text).with_context(|| format!("{path} has no VmHWM line"))
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Kilobytes (1024 bytes) to decimal megabytes.
pub(crate) fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// Apparent size of a directory tree in bytes, as `du -sb` counts it: every file's length plus
/// every directory's own size, the root included. Symbolic links count their own length.
pub(crate) fn dir_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut total = meta.len();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            total += dir_bytes(&entry?.path())?;
        }
    }
    Ok(total)
}

/// The last `max` bytes of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[from..]).trim().to_owned()
}

/// Whether a program is on `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_the_status_text() {
        let status = "Name:\tgpufleet\nVmPeak:\t  900 kB\nVmHWM:\t   123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123_456));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(vm_hwm_kb(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn dir_bytes_counts_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 234]).unwrap();
        let dirs = std::fs::metadata(dir.path()).unwrap().len() + std::fs::metadata(dir.path().join("sub")).unwrap().len();
        assert_eq!(dir_bytes(dir.path()).unwrap(), 1234 + dirs);
    }

    #[tokio::test]
    async fn dropping_the_guard_kills_the_child() {
        let mut p = ChildProc::spawn(Command::new("sleep").arg("30"), "sleep").unwrap();
        p.ensure_running().unwrap();
        let pid = p.pid();
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the child was reaped");
    }

    #[test]
    fn a_graceful_guard_stops_its_child_with_sigterm_on_drop() {
        // `sh` traps TERM and leaves a file: only SIGTERM (not SIGKILL) can produce it.
        let dir = tempfile::tempdir().unwrap();
        let (ready, flag) = (dir.path().join("ready"), dir.path().join("got-term"));
        let script = format!("trap 'touch {}; exit 7' TERM; touch {}; while true; do sleep 0.05; done", flag.display(), ready.display());
        let p = ChildProc::spawn_graceful(Command::new("sh").args(["-c", &script]), "sh").unwrap();
        let pid = p.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the shell never installed its trap");
            std::thread::sleep(POLL);
        }
        drop(p);
        assert!(flag.exists(), "the child saw SIGTERM");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the child was reaped");
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_and_reports_the_status() {
        let mut p = ChildProc::spawn(Command::new("sleep").arg("30"), "sleep").unwrap();
        let st = p.terminate(Duration::from_secs(10), |_| {}).await.unwrap();
        assert!(!st.success(), "sleep dies of SIGTERM");
        assert!(p.ensure_running().is_err());
    }
}
