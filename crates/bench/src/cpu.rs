//! CPU time of a process (all its threads), from `/proc/<pid>/stat`: on a shared,
//! noisy machine the CPU an Envoy spends per request holds much better than the
//! requests/s it reaches, which move with whatever else runs.

use std::process::Command;

use anyhow::Context;

/// utime + stime of `pid` so far, in seconds.
pub fn seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    ticks_of(&stat).map(|t| t as f64 / clock_ticks_per_second())
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may hold spaces: fields are counted
/// after its closing one.
fn ticks_of(stat: &str) -> anyhow::Result<u64> {
    let after = stat
        .rsplit_once(')')
        .context("no command name in /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .context("a short /proc/<pid>/stat")?
            .parse()
            .context("a field of /proc/<pid>/stat")
    };
    Ok(field(14)? + field(15)?)
}

/// `getconf CLK_TCK`, 100 where it cannot be asked (Linux's USER_HZ everywhere).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_command_name_with_spaces() {
        let stat =
            "4242 (envoy worker) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 70 0 0 20 0 5 0 100 1000 200";
        assert_eq!(ticks_of(stat).unwrap(), 320);
        assert!(ticks_of("4242 (envoy) S 1").is_err());
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(seconds(std::process::id()).unwrap() > 0.0);
    }
}
