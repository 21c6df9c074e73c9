//! `CpusetError`: why a change to the tree was refused. Every refusal leaves the tree
//! as it was.

use core::fmt;

use crate::sys::affinity::SysError;
use crate::topology::MaskError;

/// Which of a cpuset's two sets a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `cpuset.cpus`.
    Cpus,
    /// `cpuset.mems`.
    Mems,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Self::Cpus => "cpus",
            Self::Mems => "mems",
        }
    }
}

/// A refused change, naming the rule of the kernel's `validate_change` (or of the
/// tree) that refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpusetError {
    /// A cpuset's cpus/mems must be within its parent's.
    NotWithinParent(Resource),
    /// A cpuset cannot lose cpus/mems that one of its children still holds.
    ChildOutside(Resource),
    /// An exclusive cpuset shares no cpu/mem with its siblings.
    ExclusiveOverlap(Resource),
    /// A cpuset can be exclusive only when its parent is.
    ParentNotExclusive(Resource),
    /// The top cpuset is what the process may use; only [`rescan`](super::rescan)
    /// changes it.
    TopIsReadOnly,
    /// The handle names a cpuset that was removed.
    Removed,
    /// The table of cpusets is full.
    TooManyCpusets,
    /// The table of attached threads is full.
    TooManyThreads,
    /// A name must be 1 to 31 bytes, not `.` or `..`, without `/` or NUL.
    BadName,
    /// A sibling already has that name.
    NameTaken,
    /// A cpuset with children cannot be removed.
    HasChildren,
    /// A cpuset with threads attached cannot be removed.
    HasThreads,
    /// No such cpuset file.
    UnknownFile,
    /// An effective file is computed, not written.
    ReadOnlyFile,
    /// A flag file takes `0` or `1`.
    BadFlagValue,
    /// Bits that name no flag.
    UnknownFlags(u32),
    /// The writer given to `read_file` refused the text.
    Format,
    /// The cpus/mems text did not parse.
    Parse(MaskError),
    /// The kernel refused the attach.
    Sys(SysError),
}

impl fmt::Display for CpusetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotWithinParent(r) => write!(
                f,
                "cpuset: {} must be within the parent's (rule: child within parent)",
                r.name()
            ),
            Self::ChildOutside(r) => write!(
                f,
                "cpuset: a child still holds those {} (rule: children within parent)",
                r.name()
            ),
            Self::ExclusiveOverlap(r) => write!(
                f,
                "cpuset: {} overlap an exclusive sibling (rule: exclusive siblings disjoint)",
                r.name()
            ),
            Self::ParentNotExclusive(r) => write!(
                f,
                "cpuset: {}_exclusive needs an exclusive parent (rule: exclusive within exclusive)",
                match r {
                    Resource::Cpus => "cpu",
                    Resource::Mems => "mem",
                }
            ),
            Self::TopIsReadOnly => {
                f.write_str("cpuset: the top cpuset follows the machine (rule: top is read-only)")
            }
            Self::Removed => f.write_str("cpuset: the cpuset was removed"),
            Self::TooManyCpusets => f.write_str("cpuset: the cpuset table is full"),
            Self::TooManyThreads => f.write_str("cpuset: the attached-thread table is full"),
            Self::BadName => f.write_str(
                "cpuset: a name is 1 to 31 bytes, not \".\" or \"..\", without '/' or NUL",
            ),
            Self::NameTaken => f.write_str("cpuset: a sibling has that name"),
            Self::HasChildren => f.write_str("cpuset: it has children (remove them first)"),
            Self::HasThreads => f.write_str("cpuset: threads are attached to it"),
            Self::UnknownFile => f.write_str("cpuset: no such file"),
            Self::ReadOnlyFile => f.write_str("cpuset: effective files are read-only"),
            Self::BadFlagValue => f.write_str("cpuset: a flag file takes 0 or 1"),
            Self::UnknownFlags(bits) => write!(f, "cpuset: unknown flag bits {bits:#x}"),
            Self::Format => f.write_str("cpuset: the writer refused the text"),
            Self::Parse(e) => write!(f, "cpuset: {e}"),
            Self::Sys(e) => write!(f, "cpuset: {e}"),
        }
    }
}

impl From<MaskError> for CpusetError {
    fn from(e: MaskError) -> Self {
        Self::Parse(e)
    }
}

impl From<SysError> for CpusetError {
    fn from(e: SysError) -> Self {
        Self::Sys(e)
    }
}
