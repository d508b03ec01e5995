//! The faults of a chaos run, drawn from its seed: kills (SIGKILL, down for
//! a while, restarted on the same address) and pauses (SIGSTOP, held for a
//! while, then SIGCONT), one at a time, each on a random bank or the
//! gateway, and each recorded in the history as an invoke and an `info`.
//!
//! Invariant: a paused process is always resumed. [`Paused`] sends SIGCONT
//! when dropped, so an error, a panic or the end of the run cannot leave a
//! server stopped (and the cluster's own SIGTERM at the end unanswered).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::history::History;
use crate::harness::cluster::LocalCluster;

/// The longest a process stays down after a kill, or stopped by a pause.
const DOWNTIME_MS_MAX: u64 = 300;
const PAUSE_MS_MAX: u64 = 800;
const PAUSE_MS_MIN: u64 = 100;
/// The gap before each fault.
const GAP_MS_MIN: u64 = 50;
const GAP_MS_MAX: u64 = 400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
}

/// What the faults came to, per target.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub kills: BTreeMap<String, u32>,
    pub pauses: BTreeMap<String, u32>,
    /// Stops (kills, and the SIGTERM at the end, which the run adds) that
    /// left a reused WAL segment live for the next recovery to read.
    pub stops_in_reused_segments: u32,
}

/// A process stopped with SIGSTOP, continued with SIGCONT by
/// [`Paused::resume`] or, failing that, when dropped.
pub struct Paused {
    pid: libc::pid_t,
    resumed: bool,
}

impl Paused {
    pub fn stop(pid: u32) -> anyhow::Result<Paused> {
        let pid = libc::pid_t::try_from(pid).context("a process id")?;
        assert!(pid > 0, "never signal a process group");
        signal(pid, libc::SIGSTOP).context("SIGSTOP")?;
        Ok(Paused {
            pid,
            resumed: false,
        })
    }

    pub fn resume(mut self) -> anyhow::Result<()> {
        assert!(!self.resumed);
        self.resumed = true;
        signal(self.pid, libc::SIGCONT).context("SIGCONT")
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            // Nothing to do about a failure here: the process is gone.
            let _ = signal(self.pid, libc::SIGCONT);
        }
    }
}

fn signal(pid: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: sends a signal to one child process of ours; no memory is touched.
    let sent = unsafe { libc::kill(pid, signal) };
    if sent == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `kills` kills and `pauses` pauses in an order drawn from `seed`,
/// each after a gap of 50–400 ms on a random bank or the gateway.
pub async fn run(
    cluster: &mut LocalCluster,
    dir: &Path,
    banks: &[&str],
    (kills, pauses): (u32, u32),
    seed: u64,
    history: &History,
) -> anyhow::Result<Faults> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedule: Vec<Fault> = std::iter::repeat_n(Fault::Kill, kills as usize)
        .chain(std::iter::repeat_n(Fault::Pause, pauses as usize))
        .collect();
    schedule.shuffle(&mut rng);
    let mut faults = Faults::default();
    for fault in schedule {
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(GAP_MS_MIN..=GAP_MS_MAX),
        ))
        .await;
        let target = rng.random_range(0..=banks.len());
        let name = banks.get(target).copied().unwrap_or("gateway");
        match fault {
            Fault::Kill => {
                let downtime = Duration::from_millis(rng.random_range(0..=DOWNTIME_MS_MAX));
                faults.stops_in_reused_segments +=
                    kill_and_restart(cluster, dir, name, downtime, history).await?;
                *faults.kills.entry(name.to_owned()).or_default() += 1;
            }
            Fault::Pause => {
                let hold = Duration::from_millis(rng.random_range(PAUSE_MS_MIN..=PAUSE_MS_MAX));
                pause_and_resume(cluster, name, hold, history).await?;
                *faults.pauses.entry(name.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(faults)
}

/// Kills `name`, and restarts it after `downtime`. Returns 1 if the kill
/// left a reused WAL segment live for its next recovery to read.
async fn kill_and_restart(
    cluster: &mut LocalCluster,
    dir: &Path,
    name: &str,
    downtime: Duration,
    history: &History,
) -> anyhow::Result<u32> {
    let is_gateway = name == "gateway";
    history
        .nemesis("kill", name, || {
            if is_gateway {
                if let Some(gateway) = cluster.gateway.as_mut() {
                    gateway.kill_9();
                }
            } else {
                cluster.bank(name).kill_9();
            }
            Ok(())
        })
        .await?;
    let reused = super::reused_live(dir, name)?;
    tokio::time::sleep(downtime).await;
    history
        .nemesis("restart", name, || {
            tokio::task::block_in_place(|| {
                if is_gateway {
                    cluster.restart_gateway()
                } else {
                    cluster.restart_bank(name)
                }
            })
            .with_context(|| format!("restart {name}"))
        })
        .await?;
    Ok(reused)
}

async fn pause_and_resume(
    cluster: &mut LocalCluster,
    name: &str,
    hold: Duration,
    history: &History,
) -> anyhow::Result<()> {
    let pid = if name == "gateway" {
        cluster
            .gateway
            .as_ref()
            .context("the gateway runs")?
            .child
            .id()
    } else {
        cluster.bank(name).child.id()
    };
    let paused = history
        .nemesis("pause", name, || Paused::stop(pid))
        .await
        .with_context(|| format!("pause {name}"))?;
    tokio::time::sleep(hold).await;
    history
        .nemesis("resume", name, || paused.resume())
        .await
        .with_context(|| format!("resume {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for the next stop or continue of our child `pid`, and says
    /// which (`waitpid` reports the state change itself: no polling).
    fn next_change(pid: u32) -> &'static str {
        let mut status = 0;
        // SAFETY: waits on one child process of ours; `status` is a local.
        let waited = unsafe {
            libc::waitpid(
                pid as libc::pid_t,
                &mut status,
                libc::WUNTRACED | libc::WCONTINUED,
            )
        };
        assert_eq!(waited, pid as libc::pid_t);
        if libc::WIFSTOPPED(status) {
            "stopped"
        } else if libc::WIFCONTINUED(status) {
            "continued"
        } else {
            "exited"
        }
    }

    #[test]
    fn a_paused_process_is_continued_by_resume_and_by_the_guard_alone() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let paused = Paused::stop(pid).unwrap();
        assert_eq!(next_change(pid), "stopped");
        paused.resume().unwrap();
        assert_eq!(next_change(pid), "continued");

        // An error path: the guard is dropped without resume.
        let dropped = Paused::stop(pid).unwrap();
        assert_eq!(next_change(pid), "stopped");
        drop(dropped);
        assert_eq!(next_change(pid), "continued");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
