//! Child processes whose peak RSS is measured (wait4's rusage), and whose
//! exit status is checked: a figure from a process that crashed, or that
//! had to be killed, is not a measurement.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running child and how to stop it.
pub struct Measured {
    child: Child,
}

/// How a measured child ended.
#[derive(Debug)]
pub struct Ended {
    /// Exit code, or the signal that ended it (negative).
    pub code: i32,
    /// Peak resident set size, MiB.
    pub peak_rss_mib: f64,
    /// CPU time used (user + system), seconds.
    pub cpu_secs: f64,
}

impl Measured {
    /// Spawns `program args...`, logging to `log`.
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> std::io::Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        Ok(Measured { child })
    }

    /// The child's process id (for /proc while it runs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child still runs (it is not reaped: [`wait`](Self::wait)
    /// still reports how it ended).
    pub fn alive(&self) -> bool {
        let pid = self.child.id() as libc::id_t;
        // SAFETY: siginfo_t is plain old data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT leaves the child waitable; WNOHANG returns at once.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is set when waitid found an exited child.
        r == 0 && unsafe { info.si_pid() } == 0
    }

    /// Sends SIGTERM and waits, returning the exit status and peak RSS.
    pub fn stop(self) -> std::io::Result<Ended> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait()
    }

    /// Waits for the child to exit, returning the exit status and peak RSS.
    pub fn wait(self) -> std::io::Result<Ended> {
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child; std's Child never reaps it
        // because `self.child` is dropped without `wait`.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Ended {
            code,
            // Linux reports ru_maxrss in KiB.
            peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
            cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime),
        })
    }
}

impl Ended {
    /// This, if the process exited 0; otherwise an error naming `what` and
    /// pointing at its log.
    pub fn success(self, what: &str, log: &Path) -> Result<Ended, String> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(format!(
                "{what} exited {}{}; its log: {}",
                self.code,
                if self.code < 0 { " (a signal)" } else { "" },
                log.display()
            ))
        }
    }
}

/// Runs `program args...` to completion and returns its stdout.
pub fn run_to_end(program: &Path, args: &[&str]) -> std::io::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
