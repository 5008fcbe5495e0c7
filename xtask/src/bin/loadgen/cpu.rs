//! CPU time from `/proc`: what the watched processes and loadgen itself spent during a
//! measured window.

use crate::{CpuSpent, Error};

/// utime + stime of `/proc/PID/stat`, in clock ticks.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // fields are counted from after its last `)`. utime and stime are fields 14 and 15,
    // so the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub(crate) fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot read /proc/{pid}/stat: {stat}").into())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on otherwise).
pub(crate) fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// CPU readings of the watched processes and of loadgen itself, taken at the start of
/// a window.
pub(crate) struct CpuMeter {
    pub(crate) pids: Vec<u32>,
    pub(crate) start: Vec<u64>,
    pub(crate) own_start: u64,
    pub(crate) per_second: f64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        let stat = "4242 (control-plane) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "77 (tokio (worker) 1) R 1 77 77 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(15));
        assert_eq!(parse_cpu_ticks("77 (cut short) R 1"), None);
    }
}
