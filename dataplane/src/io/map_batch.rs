//! Reading many elements of a per-CPU array map in few system calls
//! (`BPF_MAP_LOOKUP_BATCH`), which aya does not offer.
//!
//! The XDP tier's owner harvests one counter slot per flow entry every
//! tick: one `BPF_MAP_LOOKUP_ELEM` per slot costs a system call each, about
//! a CPU's worth at a hundred thousand entries five times a second. A batch
//! read of the slots in use costs one call per [`CHUNK`] slots.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Elements asked for per system call.
pub const CHUNK: u32 = 8192;

/// Per-CPU `(packets, bytes)` pairs of a per-CPU array of
/// `struct { u64 packets; u64 bytes; }`, read in batches.
pub struct PerCpuPairs {
    cpus: usize,
    keys: Vec<u32>,
    /// `CHUNK` elements of `cpus` pairs each, as the kernel writes them.
    values: Vec<[u64; 2]>,
}

impl PerCpuPairs {
    /// A reader for a map on a machine with `cpus` possible CPUs.
    pub fn new(cpus: usize) -> PerCpuPairs {
        PerCpuPairs {
            cpus: cpus.max(1),
            keys: vec![0; CHUNK as usize],
            values: vec![[0; 2]; CHUNK as usize * cpus.max(1)],
        }
    }

    /// Puts the sums over CPUs of elements `0..n` of `map` into `out`
    /// (resized to `n`).
    pub fn read(
        &mut self,
        map: BorrowedFd<'_>,
        n: u32,
        out: &mut Vec<(u64, u64)>,
    ) -> io::Result<()> {
        out.clear();
        // The batch starts after the key `in_batch` points to; none: at 0.
        let mut prev: u32 = 0;
        while (out.len() as u32) < n {
            let want = (n - out.len() as u32).min(CHUNK);
            let mut next: u32 = 0;
            let got = self.lookup(map, (!out.is_empty()).then_some(&prev), &mut next, want)?;
            if got == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the map ended early"));
            }
            for (k, per_cpu) in self.keys[..got].iter().zip(self.values.chunks_exact(self.cpus)) {
                if *k as usize != out.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "keys out of order"));
                }
                out.push(per_cpu.iter().fold((0, 0), |(p, b), v| (p + v[0], b + v[1])));
            }
            prev = next;
        }
        out.truncate(n as usize);
        Ok(())
    }

    /// One `BPF_MAP_LOOKUP_BATCH` of at most `want` elements after `prev`;
    /// returns how many it filled.
    fn lookup(
        &mut self,
        map: BorrowedFd<'_>,
        prev: Option<&u32>,
        next: &mut u32,
        want: u32,
    ) -> io::Result<usize> {
        // union bpf_attr, the batch member.
        #[repr(C)]
        struct Attr {
            in_batch: u64,
            out_batch: u64,
            keys: u64,
            values: u64,
            count: u32,
            map_fd: u32,
            elem_flags: u64,
            flags: u64,
        }
        let mut attr = Attr {
            in_batch: prev.map_or(0, |p| p as *const u32 as u64),
            out_batch: next as *mut u32 as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.values.as_mut_ptr() as u64,
            count: want.min(CHUNK),
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: a valid BPF_MAP_LOOKUP_BATCH attribute: the key and value
        // buffers hold `count` elements (values: `cpus` 16-byte pairs each,
        // the kernel's per-CPU stride for this value size) and, like the
        // batch cursors, outlive the call; the kernel writes `count` back.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut Attr,
                std::mem::size_of::<Attr>() as u32,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // ENOENT: the end of the map, after `count` elements.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        Ok(attr.count as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

    fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is the union member `cmd` takes, and outlives the
        // call; its size is passed with it.
        let r = unsafe {
            libc::syscall(libc::SYS_bpf, cmd, attr as *const A, std::mem::size_of::<A>() as u32)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }

    /// A per-CPU array of `n` pairs, or None where BPF maps cannot be made.
    fn map(n: u32) -> Option<OwnedFd> {
        #[repr(C)]
        struct Create {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            pad: [u32; 16],
        }
        let a = Create {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 16,
            max_entries: n,
            pad: [0; 16],
        };
        let fd = bpf(BPF_MAP_CREATE, &a).ok()?;
        // SAFETY: a new descriptor the kernel returned, owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn set(fd: &OwnedFd, key: u32, per_cpu: &[[u64; 2]]) {
        #[repr(C)]
        struct Update {
            map_fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let a = Update {
            map_fd: fd.as_raw_fd() as u32,
            pad: 0,
            key: &key as *const u32 as u64,
            value: per_cpu.as_ptr() as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &a).expect("updating the map");
    }

    /// Sums over CPUs, across chunk boundaries, up to a bound below the
    /// map's size and up to its very end.
    #[test]
    fn reads_sums_over_cpus_in_chunks() {
        let n = 2 * CHUNK + 7;
        let Some(fd) = map(n) else {
            assert!(std::env::var_os("CI").is_none(), "CI: cannot create a BPF map (root?)");
            eprintln!("skipped: cannot create a BPF map (needs root)");
            return;
        };
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        for key in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, n - 1] {
            let v: Vec<[u64; 2]> =
                (0..cpus as u64).map(|c| [key as u64 + c, 1000 * c + 1]).collect();
            set(&fd, key, &v);
        }
        let want = |key: u32| {
            let c = cpus as u64;
            if [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, n - 1].contains(&key) {
                (key as u64 * c + c * (c - 1) / 2, 1000 * c * (c - 1) / 2 + c)
            } else {
                (0, 0)
            }
        };
        let mut r = PerCpuPairs::new(cpus);
        let mut out = Vec::new();
        for upto in [1, CHUNK + 1, n] {
            r.read(fd.as_fd(), upto, &mut out).expect("batch read");
            assert_eq!(out.len(), upto as usize);
            for (k, got) in out.iter().enumerate() {
                assert_eq!(*got, want(k as u32), "key {k} of {upto}");
            }
        }
    }
}
