//! `/proc/PID/stat` as the bench and its helper binaries read it (the bench includes
//! this file in `xtask`, `loadgen` and `spawn-floor` alike, so there is one reading of
//! the format).

use std::str::SplitWhitespace;

/// The fields of a stat line from field 3 (the state) on. The command name (field 2) is
/// in parentheses and may itself hold spaces or parentheses, so the fields are counted
/// from its last `)`.
pub(crate) fn fields_after_name(stat: &str) -> Option<SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// A process's CPU time, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// utime + stime.
    pub(crate) own: u64,
    /// cutime + cstime: the children it has waited for.
    pub(crate) children: u64,
}

/// utime, stime, cutime and cstime (fields 14 to 17) of a stat line.
pub(crate) fn cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let mut fields = fields_after_name(stat)?.skip(11);
    let mut next = || fields.next()?.parse::<u64>().ok();
    let (utime, stime, cutime, cstime) = (next()?, next()?, next()?, next()?);
    Some(CpuTicks {
        own: utime + stime,
        children: cutime + cstime,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_own_and_children_fields_after_the_name() {
        let stat = "4242 (control-plane) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 20 5 20 0 9 0 123456 987654321 2048 18446744073709551615";
        let ticks = cpu_ticks(stat).expect("a stat line");
        assert_eq!((ticks.own, ticks.children), (325, 25));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "77 (tokio (worker) 1) R 1 77 77 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0";
        assert_eq!(
            cpu_ticks(stat),
            Some(CpuTicks {
                own: 15,
                children: 0
            })
        );
        assert_eq!(
            fields_after_name(stat).and_then(|mut f| f.next()),
            Some("R")
        );
        assert_eq!(cpu_ticks("77 (cut short) R 1"), None);
    }
}
