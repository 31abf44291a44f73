//! CPU facts a worker reports (architecture, CPU model, allowed cores) and pinning a process to
//! a core set, which is how one machine hosts several heterogeneous "devices".

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Why a core set could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The core list does not parse.
    #[error("invalid core set {spec:?}: {reason} (expected e.g. \"0-3,6\")")]
    Parse {
        /// The text given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused the affinity change.
    #[error("cannot pin to cores {cores:?}: {source}")]
    Pin {
        /// The cores asked for.
        cores: Vec<usize>,
        /// The OS error.
        source: nix::Error,
    },
    /// The current affinity could not be read.
    #[error("cannot read CPU affinity: {0}")]
    Read(nix::Error),
}

/// Parses a Linux-style core list (`"0-3,6"`), sorted and without duplicates.
pub fn parse_core_set(spec: &str) -> Result<Vec<usize>, CpuError> {
    let err = |reason: String| CpuError::Parse {
        spec: spec.to_owned(),
        reason,
    };
    let mut cores = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| err(format!("{s:?} is not a core number")))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(err(format!("range {part} runs backwards")));
                }
                cores.extend(a..=b);
            }
            None => cores.push(num(part)?),
        }
    }
    if cores.is_empty() {
        return Err(err("no cores".into()));
    }
    if let Some(&c) = cores.iter().find(|&&c| c >= CpuSet::count()) {
        return Err(err(format!("core {c} is beyond what the kernel supports")));
    }
    cores.sort_unstable();
    cores.dedup();
    Ok(cores)
}

/// Cores the calling thread may run on.
pub fn allowed_cores() -> Result<Vec<usize>, CpuError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(CpuError::Read)?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins every thread of this process, and every thread it starts later, to `cores`.
///
/// Threads inherit the affinity of the thread that creates them, so call this early in
/// `main`; threads that already exist are pinned one by one too.
pub fn pin_process(cores: &[usize]) -> Result<(), CpuError> {
    let pin_err = |source| CpuError::Pin {
        cores: cores.to_vec(),
        source,
    };
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c).map_err(pin_err)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(pin_err)?;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            // A thread may exit between listing and pinning; that is not an error.
            match sched_setaffinity(Pid::from_raw(tid), &set) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => return Err(pin_err(e)),
            }
        }
    }
    Ok(())
}

/// The CPU model name (`/proc/cpuinfo`), or `"unknown"`.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    field("model name")
        .or_else(|| field("Hardware"))
        .or_else(|| field("CPU part").map(|p| format!("ARM CPU part {p}")))
        .unwrap_or_else(|| "unknown".into())
}

/// A device class name for this machine when none is configured: `<arch>-local-<n>c`.
pub fn default_device_class(cores: usize) -> String {
    format!("{}-local-{cores}c", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse() {
        assert_eq!(parse_core_set("0-3,6").expect("valid"), [0, 1, 2, 3, 6]);
        assert_eq!(parse_core_set(" 2, 1,2 ").expect("valid"), [1, 2]);
        for bad in ["", "a", "3-1", "1-", "99999"] {
            assert!(parse_core_set(bad).is_err(), "{bad:?} accepted");
        }
    }
}
