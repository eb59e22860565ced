//! The daemon's own resident memory, read right after it gives its free heap
//! pages back (`Daemon::release_memory`): what it holds, without the scratch
//! of whatever it did last. Shown by `status` and `/metrics`, and what the
//! soak judges (benches/src/bin/pps/soak.rs).

use std::io;

/// One reading of /proc/self/status, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// The whole resident set (VmRSS: the same count as statm's second field).
    pub resident_kib: u64,
    /// Its anonymous part (RssAnon: heap and stacks; the binary, libraries
    /// and the AF_XDP UMEM, a memfd, are not in it).
    pub anon_kib: u64,
}

/// Reads this process's resident set. Both figures come from one read of
/// /proc/self/status, so they describe the same moment.
pub fn read() -> io::Result<Resident> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    parse(&text).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "/proc/self/status has no VmRSS or RssAnon line")
    })
}

fn parse(status: &str) -> Option<Resident> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Resident { resident_kib: field("VmRSS:")?, anon_kib: field("RssAnon:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_resident_set_and_its_anonymous_part() {
        let status = "Name:\toverlayd\nVmHWM:\t  195308 kB\nVmRSS:\t  154476 kB\n\
                      RssAnon:\t  107852 kB\nRssFile:\t   12000 kB\n";
        assert_eq!(parse(status), Some(Resident { resident_kib: 154476, anon_kib: 107852 }));
        assert_eq!(parse("VmRSS:\t 1 kB\n"), None, "no RssAnon");
        assert_eq!(parse("VmRSS:\t x kB\nRssAnon:\t 1 kB\n"), None, "not a number");
    }

    #[test]
    fn reads_this_process() {
        let r = read().unwrap();
        assert!(r.resident_kib > 0 && r.anon_kib <= r.resident_kib, "{r:?}");
    }
}
