//! Child processes whose peak RSS is measured (wait4's rusage).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running child and how to stop it.
pub struct Measured {
    child: Child,
}

/// How a measured child ended.
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
