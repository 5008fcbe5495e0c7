//! The ledger of the process groups this control plane runs: one file per group in a
//! directory of `--data-dir`, written when a group starts and removed when it is
//! killed. The kernel kills a replica whose control plane dies (`PR_SET_PDEATHSIG`),
//! but not what the replica started itself, nor a one-shot command (started without
//! the signal, see `child`); after a `kill -9` the next start reads the ledger and
//! kills what is left of each group.
//!
//! A group id is only taken again by the kernel once the group is empty, so a recorded
//! group whose leader is gone is still ours if it has members. A leader pid that lives
//! on with another start time is someone else's process (the group ended and the id
//! was reused); an entry of an earlier boot names nothing. Both are dropped unkilled.
//! One control plane at a time owns the directory (an exclusive lock held for the
//! ledger's life), so a second one on the same `--data-dir` cannot end the first one's
//! replicas.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal};

/// The lock file inside the ledger's directory.
const LOCK_NAME: &str = ".lock";

/// Where the ledger lives, held for its life.
#[derive(Debug)]
pub(crate) struct GroupLedger {
    dir: PathBuf,
    /// Holds the directory's exclusive lock until the ledger is dropped.
    _lock: File,
}

/// What a start found of the groups its predecessor left.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// Groups that still had members, now killed.
    pub(crate) ended: usize,
    /// Entries that named nothing of ours any more.
    pub(crate) stale: usize,
}

/// One group as the ledger keeps it.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    boot: String,
    leader_start: u64,
}

impl GroupLedger {
    /// Opens (creating) the ledger in `dir`, locks it, and kills whatever the groups
    /// recorded there by an earlier control plane still run.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Leftovers)> {
        fs::create_dir_all(dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_NAME))?;
        lock.try_lock().map_err(|error| match error {
            TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "{} is in use by another control plane (one --data-dir, one control plane)",
                    dir.display()
                ),
            ),
            TryLockError::Error(error) => error,
        })?;
        let ledger = Self {
            dir: dir.to_owned(),
            _lock: lock,
        };
        let leftovers = ledger.end_leftovers()?;
        Ok((ledger, leftovers))
    }

    /// Records the group `leader` leads. A ledger that cannot be written costs only the
    /// clean-up after a `kill -9`, so the failure is logged, not returned.
    pub(crate) fn record(&self, leader: Pid) {
        let written = entry_of(leader).and_then(|entry| {
            fs::write(
                self.path(leader),
                format!("{} {}\n", entry.boot, entry.leader_start),
            )
        });
        if let Err(error) = written {
            tracing::warn!(
                group = leader.as_raw_nonzero().get(),
                %error,
                "cannot record a process group in the ledger; a kill -9 of the control plane could leave what it starts running"
            );
        }
    }

    /// Forgets the group `leader` led (killed, or never recorded).
    pub(crate) fn forget(&self, leader: Pid) {
        let _ = fs::remove_file(self.path(leader));
    }

    fn path(&self, leader: Pid) -> PathBuf {
        self.dir.join(leader.as_raw_nonzero().get().to_string())
    }

    fn end_leftovers(&self) -> io::Result<Leftovers> {
        let mut leftovers = Leftovers::default();
        let boot = boot_id()?;
        for file in fs::read_dir(&self.dir)? {
            let path = file?.path();
            let Some(leader) = path
                .file_name()
                .and_then(|name| name.to_str()?.parse::<i32>().ok())
                .and_then(Pid::from_raw)
            else {
                continue; // the lock file, or something that is not ours
            };
            let recorded = fs::read_to_string(&path).ok().and_then(|text| parse(&text));
            let ours = recorded.is_some_and(|recorded| {
                recorded.boot == boot
                    && match leader_start(leader) {
                        // The leader is gone; members of its group are still ours.
                        None => true,
                        Some(start) => start == recorded.leader_start,
                    }
            });
            if ours && rustix::process::kill_process_group(leader, Signal::KILL).is_ok() {
                leftovers.ended += 1;
            } else {
                leftovers.stale += 1;
            }
            fs::remove_file(&path)?;
        }
        Ok(leftovers)
    }
}

fn parse(text: &str) -> Option<Entry> {
    let (boot, start) = text.trim().split_once(' ')?;
    Some(Entry {
        boot: boot.to_owned(),
        leader_start: start.parse().ok()?,
    })
}

fn entry_of(leader: Pid) -> io::Result<Entry> {
    Ok(Entry {
        boot: boot_id()?,
        leader_start: leader_start(leader)
            .ok_or_else(|| io::Error::other("the group's leader is gone already"))?,
    })
}

/// This boot's id: pids of another boot name other processes.
fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// When `pid` started (clock ticks after boot, `/proc/<pid>/stat` field 22), if it is
/// a process now.
fn leader_start(pid: Pid) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
    // Fields after the command name (in parentheses, and it may hold anything): the
    // state is field 3, so the start time is the 20th of these.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    fn pid_of(child: &std::process::Child) -> Pid {
        Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap()
    }

    #[test]
    fn a_second_ledger_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = GroupLedger::open(dir.path()).unwrap();
        let error = GroupLedger::open(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ResourceBusy);
        assert!(
            error.to_string().contains("another control plane"),
            "{error}"
        );
    }

    #[test]
    fn the_next_open_kills_a_recorded_group_and_drops_entries_that_name_nothing_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, found) = GroupLedger::open(dir.path()).unwrap();
        assert_eq!(found, Leftovers::default());

        let mut left = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        ledger.record(pid_of(&left));
        // A leader whose pid now belongs to another process (another start time).
        let mut other = Command::new("sleep").arg("300").spawn().unwrap();
        fs::write(
            dir.path().join(other.id().to_string()),
            format!("{} 1\n", boot_id().unwrap()),
        )
        .unwrap();
        // An entry of an earlier boot.
        fs::write(dir.path().join("4194000"), "another-boot 5\n").unwrap();
        drop(ledger); // as a kill -9 would: nothing forgotten

        let (_ledger, found) = GroupLedger::open(dir.path()).unwrap();
        assert_eq!(found, Leftovers { ended: 1, stale: 2 });
        let status = left.wait().unwrap();
        assert!(!status.success(), "the recorded group was killed");
        assert!(
            other.try_wait().unwrap().is_none(),
            "someone else's process lives"
        );
        let entries: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from(LOCK_NAME)]);
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn a_forgotten_group_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = GroupLedger::open(dir.path()).unwrap();
        let mut child = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        ledger.record(pid_of(&child));
        ledger.forget(pid_of(&child));
        drop(ledger);
        let (_ledger, found) = GroupLedger::open(dir.path()).unwrap();
        assert_eq!(found, Leftovers::default());
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
