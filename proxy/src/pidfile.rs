//! The pid file of a standalone edge (`tenantgate edge --pid-file FILE`).
//!
//! A supervisor follows the edge through it across graceful upgrades: systemd's `PIDFile=`
//! re-reads the file when its main process exits, so an edge that handed its sockets to a new
//! process and then drained is replaced by that process instead of the unit being stopped
//! (nginx's binary upgrade works the same way). The file holds the pid of the process that owns
//! the listening sockets: it is written once this process has them (after an upgrade's
//! handover, not before), and removed at exit only while it still names this process, so the
//! old edge of an upgrade leaves the new one's pid in place.

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::EdgeError;

/// This process's entry in the pid file; removes it when dropped, if it is still ours.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Record this process as the edge owning the sockets. Written to a temporary file and
    /// renamed, so a reader (systemd, a reload script) never sees half a pid.
    pub(crate) fn write(path: &Path) -> Result<PidFile, EdgeError> {
        let partial = path.with_extension("pid.partial");
        std::fs::write(&partial, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| error(path, format!("cannot write it: {e}")))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Ask the edge named in the pid file to hand its listening sockets over (SIGQUIT), for the
/// upgrade this process is about to take over.
///
/// Called just before this process waits on the upgrade socket: the old edge retries
/// connecting to that socket for several seconds, so signalling first cannot lose the race,
/// and this process has already connected to the catalog and loaded its state, so the old edge
/// is not told to go before the new one can serve. The pid must belong to a process running
/// this same program (by `/proc/PID/comm`): a stale file whose pid was reused by an unrelated
/// process is an error, not a signal to that process.
pub(crate) fn signal_running(path: &Path) -> Result<u32, EdgeError> {
    let pid = read_pid(path).map_err(|message| error(path, message))?;
    let ours = std::fs::read_to_string("/proc/self/comm").ok();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    if theirs.is_none() || theirs != ours {
        return Err(error(
            path,
            format!("process {pid} is not a running edge (stale pid file?); nothing to upgrade"),
        ));
    }
    let raw = i32::try_from(pid).map_err(|_| error(path, format!("pid {pid} out of range")))?;
    kill(Pid::from_raw(raw), Signal::SIGQUIT)
        .map_err(|e| error(path, format!("cannot signal process {pid}: {e}")))?;
    Ok(pid)
}

fn read_pid(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a process id", text.trim()))
}

fn error(path: &Path, message: String) -> EdgeError {
    EdgeError::PidFile {
        path: path.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_removed_only_while_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(read_pid(&path), Ok(std::process::id()));
        drop(file);
        assert!(
            !path.exists(),
            "removed at exit while it names this process"
        );

        // The old edge of an upgrade: by the time it exits the new one has written its pid.
        let file = PidFile::write(&path).unwrap();
        std::fs::write(&path, "4242\n").unwrap();
        drop(file);
        assert_eq!(
            read_pid(&path),
            Ok(4242),
            "another process's pid is left alone"
        );
    }

    #[test]
    fn refuses_to_signal_what_is_not_an_edge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.pid");
        let missing = signal_running(&path).unwrap_err().to_string();
        assert!(missing.contains("cannot read it"), "{missing}");

        std::fs::write(&path, "garbage").unwrap();
        let garbage = signal_running(&path).unwrap_err().to_string();
        assert!(garbage.contains("not a process id"), "{garbage}");

        // A live process running another program (a reused pid): never signalled.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, other.id().to_string()).unwrap();
        let stale = signal_running(&path).unwrap_err().to_string();
        assert!(stale.contains("not a running edge"), "{stale}");
        assert!(
            other.try_wait().unwrap().is_none(),
            "sleep was not signalled"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
