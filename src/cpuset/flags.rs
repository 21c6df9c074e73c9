//! `CpusetFlags`: the kernel's `cpuset_flagbits_t`, one bit per flag file.

use core::fmt;

/// Flags of a cpuset, each shown as a `0`/`1` file as in cgroup v1's cpuset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpusetFlags(pub u32);

impl CpusetFlags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// `cpuset.cpu_exclusive`: no sibling may share a CPU with this cpuset.
    pub const CPU_EXCLUSIVE: Self = Self(1 << 0);
    /// `cpuset.mem_exclusive`: no sibling may share a node; also a hardwall.
    pub const MEM_EXCLUSIVE: Self = Self(1 << 1);
    /// `cpuset.mem_hardwall`: allocations never fall back to nodes outside the set.
    pub const MEM_HARDWALL: Self = Self(1 << 2);
    /// `cpuset.memory_migrate`: pages follow the cpuset when its nodes change.
    pub const MEMORY_MIGRATE: Self = Self(1 << 3);
    /// `cpuset.memory_spread_page`: page refills rotate over the nodes.
    pub const SPREAD_PAGE: Self = Self(1 << 4);
    /// `cpuset.memory_spread_slab`: slab growth rotates over the nodes.
    pub const SPREAD_SLAB: Self = Self(1 << 5);
    /// `cpuset.sched_load_balance` (recorded and shown; user space has no scheduler
    /// domains to build from it).
    pub const SCHED_LOAD_BALANCE: Self = Self(1 << 6);

    /// Every flag with its file name, in the order the kernel lists the files.
    pub const FILES: [(Self, &'static str); 7] = [
        (Self::CPU_EXCLUSIVE, "cpuset.cpu_exclusive"),
        (Self::MEM_EXCLUSIVE, "cpuset.mem_exclusive"),
        (Self::MEM_HARDWALL, "cpuset.mem_hardwall"),
        (Self::SCHED_LOAD_BALANCE, "cpuset.sched_load_balance"),
        (Self::MEMORY_MIGRATE, "cpuset.memory_migrate"),
        (Self::SPREAD_PAGE, "cpuset.memory_spread_page"),
        (Self::SPREAD_SLAB, "cpuset.memory_spread_slab"),
    ];

    const ALL: u32 = (1 << 7) - 1;

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether a flag of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` with `other` set (`on`) or cleared.
    pub const fn with(self, other: Self, on: bool) -> Self {
        if on {
            Self(self.0 | other.0)
        } else {
            Self(self.0 & !other.0)
        }
    }

    /// Bits that name no flag.
    pub const fn unknown(self) -> u32 {
        self.0 & !Self::ALL
    }

    /// The flag shown by file `name` (`cpuset.` prefix optional).
    pub fn from_file(name: &str) -> Option<Self> {
        let name = name.strip_prefix("cpuset.").unwrap_or(name);
        Self::FILES
            .iter()
            .find(|(_, f)| f.strip_prefix("cpuset.") == Some(name))
            .map(|&(flag, _)| flag)
    }
}

impl core::ops::BitOr for CpusetFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for CpusetFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CpusetFlags(")?;
        let mut sep = "";
        for (flag, file) in Self::FILES {
            if self.contains(flag) {
                write!(f, "{sep}{}", &file["cpuset.".len()..])?;
                sep = "|";
            }
        }
        f.write_str(")")
    }
}
