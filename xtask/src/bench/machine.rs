//! The machine the bench runs on: its CPUs and pinning, a process's memory from `/proc`, the control plane's listening line, the git commit.

use super::*;

/// Which core each side runs on; `None` fields mean not pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pinning {
    pub(super) loadgen: Option<u32>,
    pub(super) servers: Option<u32>,
    pub(super) why_not: Option<&'static str>,
}

impl Pinning {
    pub(super) fn choose(cpus: &[u32], taskset: bool) -> Self {
        match cpus {
            [first, second, ..] if taskset => Self {
                loadgen: Some(*first),
                servers: Some(*second),
                why_not: None,
            },
            [_, _, ..] => Self {
                loadgen: None,
                servers: None,
                why_not: Some("not pinned: taskset (util-linux) not found"),
            },
            _ => Self {
                loadgen: None,
                servers: None,
                why_not: Some("not pinned: one CPU only, everything shares it"),
            },
        }
    }

    pub(super) fn describe(&self) -> String {
        match (self.loadgen, self.servers, self.why_not) {
            (Some(loadgen), Some(servers), _) => format!(
                "pinned with taskset: loadgen on CPU {loadgen}, control plane and \
                 bench-echo on CPU {servers}"
            ),
            (_, _, Some(why)) => why.to_owned(),
            _ => "not pinned".to_owned(),
        }
    }
}

pub(super) fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`).
pub(super) fn allowed_cpus() -> Result<Vec<u32>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| parse_cpu_list(list.trim()))
        .ok_or_else(|| "no readable Cpus_allowed_list in /proc/self/status".into())
}

/// A kernel CPU list (`0-3,8,10-11`), expanded.
pub(super) fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (u32, u32) = (low.parse().ok()?, high.parse().ok()?);
                if low > high {
                    return None;
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Memory {
    /// VmRSS.
    pub(super) rss_kb: u64,
    /// VmHWM: the highest VmRSS so far.
    pub(super) peak_rss_kb: u64,
}

pub(super) fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            line.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Memory {
        rss_kb: field("VmRSS:")?,
        peak_rss_kb: field("VmHWM:")?,
    })
}

pub(super) fn memory_of(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    parse_memory(&status).ok_or_else(|| format!("no VmRSS/VmHWM in {path}").into())
}

/// The API and management addresses of the "control plane listening" line of the
/// control plane's JSON log (`tracing-subscriber`'s JSON puts them under `fields`).
pub(super) fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: Value = serde_json::from_str(line).ok()?;
    let fields = event.get("fields").unwrap_or(&event);
    if fields.get("message")?.as_str()? != "control plane listening" {
        return None;
    }
    let address = |name: &str| fields.get(name)?.as_str()?.parse::<SocketAddr>().ok();
    Some((address("api_addr")?, address("management_addr")?))
}

/// `HEAD`'s short hash, `+dirty` with uncommitted changes.
pub(super) fn git_commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    match git(&["status", "--porcelain"]) {
        Some(changes) if !changes.is_empty() => format!("{commit}+dirty"),
        _ => commit,
    }
}
