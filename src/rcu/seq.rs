//! `rcu_seq`: a grace-period sequence number whose low two bits hold the state
//! (0 idle, 1 in progress), as the kernel's `rcu_seq_*` helpers.

/// Bits of the state.
pub const STATE_MASK: u64 = 3;

/// The state bits of `s`.
#[inline]
pub fn state(s: u64) -> u64 {
    s & STATE_MASK
}

/// The value after a grace period starts.
#[inline]
pub fn start(s: u64) -> u64 {
    s + 1
}

/// The value after the grace period in progress ends.
#[inline]
pub fn end(s: u64) -> u64 {
    (s | STATE_MASK) + 1
}

/// The value `gp_seq` will have once a full grace period has elapsed after `s` was
/// read (`rcu_seq_snap`): the end of the next grace period, or of the one after the
/// current one when a grace period is in progress.
#[inline]
pub fn snap(s: u64) -> u64 {
    (s + 2 * STATE_MASK + 1) & !STATE_MASK
}

/// Whether the grace period that `snap` waits for has completed at `cur`.
#[inline]
pub fn done(cur: u64, snap: u64) -> bool {
    cur.wrapping_sub(snap) as i64 >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_needs_a_full_grace_period() {
        let idle = 8;
        assert_eq!(snap(idle), 12);
        let running = start(idle);
        assert_eq!(state(running), 1);
        assert_eq!(
            snap(running),
            16,
            "the running grace period may have missed the update"
        );
        assert_eq!(end(running), 12);
        assert!(!done(end(running), snap(running)));
        assert!(done(end(start(end(running))), snap(running)));
    }
}
