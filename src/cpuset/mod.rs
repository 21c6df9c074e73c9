//! Cpusets: hierarchical CPU and memory-node restriction, the kernel's
//! `kernel/cgroup/cpuset.c` moved to user space.
//!
//! The top cpuset is what the process may use (online CPUs and nodes with memory,
//! within its `Cpus_allowed` / `Mems_allowed` and cgroup v2 cpuset). Children narrow
//! it: each has a name, `cpuset.cpus` and `cpuset.mems` (empty: the parent's), flags,
//! and effective sets = configured ∩ parent's effective, or the parent's effective
//! when that is empty. Changes are validated as `validate_change` does and refused
//! with an error naming the rule, the tree left unchanged.
//!
//! ```no_run
//! use cpuslab::cpuset::Cpuset;
//! use cpuslab::topology::CpuMask;
//!
//! let batch = Cpuset::top().create_child("batch").unwrap();
//! batch.set_cpus(&"1".parse::<CpuMask>().unwrap()).unwrap();
//! batch.attach_current().unwrap(); // this thread now runs on CPU 1 only
//! ```
//!
//! The process's tree lives in a static table (no heap: attach and rescan run on
//! threads inside the allocator's world); [`CpusetTree`] is the same tree as a value,
//! for describing other machines. Placement ([`mem_node_for`], [`node_allowed`]) reads
//! published atomics without a lock; [`rescan`] handles hotplug.

mod attach;
mod error;
mod flags;
mod hotplug;
mod placement;
mod pressure;
mod process;
mod tasks;
mod tree;
mod validate;

pub use error::{CpusetError, Resource};
pub use flags::CpusetFlags;
pub(crate) use hotplug::check_machine;
pub use hotplug::{
    clear_dead_cpus, cpu_dead, dead_cpus, rescan, rescan_at, HotplugReport, HotplugWatch,
};
pub(crate) use hotplug::{cpu_dead_hook, register_cpu_dead};
pub use placement::{
    alternate_slab_node, current_mems_allowed, mem_node_for, mem_node_for_kind, nearest_node,
    node_allowed, placement_active, spread_node, MemKind, NodeOrder, Placement,
};
pub(crate) use pressure::memory_pressure_bump;
pub use process::migrations;
pub(crate) use process::{fork_child, fork_parent, fork_prepare};
pub use tasks::MAX_THREADS;
pub use tree::{Cpuset, CpusetTree, MAX_CPUSETS, NAME_MAX};
