//! `validate_change`: the kernel's rules for a change to one cpuset, checked on a trial
//! copy before anything is written, so a refused change leaves the tree as it was.
//!
//! Sets are compared as configured, with an empty set standing for what the parent
//! was given (see [`CpusetTree::base_cpus`]). The rules, in the kernel's order:
//! 1. every child's sets stay within the trial's, and an exclusive child keeps an
//!    exclusive parent;
//! 2. the trial stays within its parent's sets, and is exclusive only when its
//!    parent is;
//! 3. an exclusive cpuset (either side) shares nothing with a sibling.

use super::error::{CpusetError, Resource};
use super::flags::CpusetFlags;
use super::tree::{CpusetTree, Node};

/// Checks that `trial` may replace cpuset `cur` of `tree` (not the top).
pub(super) fn validate_change(
    tree: &CpusetTree,
    cur: u16,
    trial: &Node,
) -> Result<(), CpusetError> {
    let parent = trial.parent;
    let trial_cpus = if trial.cpus_allowed.is_empty() {
        tree.base_cpus(parent)
    } else {
        trial.cpus_allowed
    };
    let trial_mems = if trial.mems_allowed.is_empty() {
        tree.base_mems(parent)
    } else {
        trial.mems_allowed
    };

    // 1. Children within the trial.
    for c in tree.child_indices(cur) {
        let c = &tree.nodes[c as usize];
        if !c.cpus_allowed.is_subset(&trial_cpus) {
            return Err(CpusetError::ChildOutside(Resource::Cpus));
        }
        if !c.mems_allowed.is_subset(&trial_mems) {
            return Err(CpusetError::ChildOutside(Resource::Mems));
        }
        exclusive_within(&c.flags, &trial.flags)?;
    }

    // 2. The trial within its parent.
    let p = &tree.nodes[parent as usize];
    if !trial.cpus_allowed.is_subset(&tree.base_cpus(parent)) {
        return Err(CpusetError::NotWithinParent(Resource::Cpus));
    }
    if !trial.mems_allowed.is_subset(&tree.base_mems(parent)) {
        return Err(CpusetError::NotWithinParent(Resource::Mems));
    }
    exclusive_within(&trial.flags, &p.flags)?;

    // 3. Exclusive siblings are disjoint.
    for s in tree.child_indices(parent).filter(|&s| s != cur) {
        let s = &tree.nodes[s as usize];
        let either = |f: CpusetFlags| trial.flags.contains(f) || s.flags.contains(f);
        if either(CpusetFlags::CPU_EXCLUSIVE) && trial.cpus_allowed.intersects(&s.cpus_allowed) {
            return Err(CpusetError::ExclusiveOverlap(Resource::Cpus));
        }
        if either(CpusetFlags::MEM_EXCLUSIVE) && trial.mems_allowed.intersects(&s.mems_allowed) {
            return Err(CpusetError::ExclusiveOverlap(Resource::Mems));
        }
    }
    Ok(())
}

/// A child's exclusive flags need the same flags on its parent.
fn exclusive_within(child: &CpusetFlags, parent: &CpusetFlags) -> Result<(), CpusetError> {
    for (flag, r) in [
        (CpusetFlags::CPU_EXCLUSIVE, Resource::Cpus),
        (CpusetFlags::MEM_EXCLUSIVE, Resource::Mems),
    ] {
        if child.contains(flag) && !parent.contains(flag) {
            return Err(CpusetError::ParentNotExclusive(r));
        }
    }
    Ok(())
}
