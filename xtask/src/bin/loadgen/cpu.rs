//! CPU time from `/proc`: what the watched processes and loadgen itself spent during a
//! measured window.

use crate::{CpuSpent, Error, proc_stat};

fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    proc_stat::cpu_ticks(&stat)
        .map(|ticks| ticks.own)
        .ok_or_else(|| format!("cannot read /proc/{pid}/stat: {stat}").into())
}

/// CPU readings of the watched processes and of loadgen itself, taken at the start of
/// a window.
pub(crate) struct CpuMeter {
    pids: Vec<u32>,
    start: Vec<u64>,
    own_start: u64,
    per_second: f64,
}

impl CpuMeter {
    pub(crate) fn start(pids: &[u32], per_second: f64) -> Result<Self, Error> {
        Ok(Self {
            pids: pids.to_vec(),
            start: pids
                .iter()
                .map(|pid| cpu_ticks(*pid))
                .collect::<Result<_, _>>()?,
            own_start: cpu_ticks(std::process::id())?,
            per_second,
        })
    }

    /// The watched processes' CPU seconds since `start`, and loadgen's own.
    pub(crate) fn stop(self) -> Result<(Vec<CpuSpent>, f64), Error> {
        let own = cpu_ticks(std::process::id())?.saturating_sub(self.own_start);
        let watched = self
            .pids
            .iter()
            .zip(self.start)
            .map(|(pid, start)| {
                let spent = cpu_ticks(*pid)?.saturating_sub(start);
                Ok(CpuSpent {
                    pid: *pid,
                    seconds: spent as f64 / self.per_second,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok((watched, own as f64 / self.per_second))
    }
}
