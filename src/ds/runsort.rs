//! Sorting a short batch of addresses that arrives as a few ordered runs, in time
//! linear in its length for a fixed number of runs, with no heap, and with branches
//! that follow the runs rather than how two scattered addresses compare.
//!
//! A batch of objects a CPU takes from its node is the tail of one flush and the head
//! of another, each in the order its CPU freed them: two or three runs, ascending or
//! descending. A comparison sort of such a batch (the standard library's pattern-
//! defeating quicksort sees only one leading run) mispredicts about every other
//! comparison. Here the runs are found in one pass, ascending ones reversed, and the
//! runs merged pairwise, the merge's choice written as values (which the compiler
//! may turn into conditional moves).

/// Longest slice [`sort_descending`] merges in its stack buffer; longer ones are
/// sorted by the standard library.
pub const RUN_SORT_MAX: usize = 256;

/// Most runs a slice may have for the merge: with more, the slice is scattered enough
/// that the standard library's sort is as good.
const MAX_RUNS: usize = 8;

/// Sorts `v` into descending order (addresses, or anything small to copy).
pub fn sort_descending<T: Copy + Ord>(v: &mut [T]) {
    if v.len() < 2 || v.is_sorted_by(|a, b| a >= b) {
        return;
    }
    if v.len() > RUN_SORT_MAX {
        v.sort_unstable_by(|a, b| b.cmp(a));
        return;
    }
    // Run boundaries: `ends[k]` is one past run `k`; every run made descending.
    let mut ends = [0usize; MAX_RUNS];
    let mut runs = 0;
    let mut start = 0;
    while start < v.len() {
        let mut end = start + 1;
        if end < v.len() && v[end] > v[start] {
            while end < v.len() && v[end] >= v[end - 1] {
                end += 1;
            }
            v[start..end].reverse();
        } else {
            while end < v.len() && v[end] <= v[end - 1] {
                end += 1;
            }
        }
        if runs == MAX_RUNS {
            v.sort_unstable_by(|a, b| b.cmp(a));
            return;
        }
        ends[runs] = end;
        runs += 1;
        start = end;
    }
    // The merge buffer is filled when it is made: a short batch, a refill of one
    // batch, takes a short one (a producer's refills reach `RUN_SORT_MAX`).
    if v.len() <= SHORT {
        merge_runs::<T, SHORT>(v, &mut ends, runs);
    } else {
        merge_runs::<T, RUN_SORT_MAX>(v, &mut ends, runs);
    }
}

/// Length up to which [`sort_descending`] merges through a buffer of this size.
const SHORT: usize = 64;

/// Merges the `runs` descending runs of `v` (`ends[k]` one past run `k`) into one,
/// through a buffer of `N >= v.len()` elements.
fn merge_runs<T: Copy + Ord, const N: usize>(
    v: &mut [T],
    ends: &mut [usize; MAX_RUNS],
    mut runs: usize,
) {
    let mut buf = [v[0]; N];
    // Merge neighbouring runs until one is left.
    while runs > 1 {
        let mut merged = 0;
        let mut lo = 0;
        let mut k = 0;
        while k < runs {
            if k + 1 == runs {
                ends[merged] = ends[k];
                merged += 1;
                break;
            }
            let (mid, hi) = (ends[k], ends[k + 1]);
            merge_descending(&mut v[lo..hi], mid - lo, &mut buf);
            ends[merged] = hi;
            merged += 1;
            lo = hi;
            k += 2;
        }
        runs = merged;
    }
}

/// Merges the descending runs `v[..mid]` and `v[mid..]` into one, through `buf`.
///
/// Runs that do not interleave are put in order as blocks: the objects a refill takes
/// from its node's slabs come a slab at a time, each slab's a descending run over an
/// address range of its own, so two such runs are in order already or the wrong way
/// round (slabs taken in ascending order, as the frees of a program that frees in
/// allocation order leave them). Moved as blocks, they cost a copy, not a comparison
/// and a choice per object.
fn merge_descending<T: Copy + Ord, const N: usize>(v: &mut [T], mid: usize, buf: &mut [T; N]) {
    let n = v.len();
    if v[mid - 1] >= v[mid] {
        return;
    }
    buf[..n].copy_from_slice(v);
    if buf[n - 1] >= buf[0] {
        // The right run lies wholly above the left: it goes first.
        v[..n - mid].copy_from_slice(&buf[mid..n]);
        v[n - mid..].copy_from_slice(&buf[..mid]);
        return;
    }
    let (mut i, mut j) = (0, mid);
    for slot in v.iter_mut() {
        // Take from the left run unless it is used up, or the right run's head is
        // larger; the indices advance by the choice as a value, not down two paths.
        let take_right = i == mid || (j < n && buf[j] > buf[i]);
        let from = if take_right { j } else { i };
        *slot = buf[from];
        j += usize::from(take_right);
        i += usize::from(!take_right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mut v: Vec<usize>) {
        let mut want = v.clone();
        want.sort_unstable_by(|a, b| b.cmp(a));
        sort_descending(&mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn sorts_runs_and_anything_else() {
        check(vec![]);
        check(vec![5]);
        check((0..64).collect());
        check((0..64).rev().collect());
        // Two ascending runs, the tail of one flush and the head of the next.
        check((100..104).chain(0..60).collect());
        // Mixed directions and equal neighbours.
        check(vec![3, 3, 9, 1, 1, 7, 8, 8, 2, 0, 5, 6]);
        check((0..200).map(|i| (i * 7919) % 211).collect());
        // A refill's objects from its node's slabs: a descending run a slab, over
        // ranges apart, the slabs in ascending, descending or mixed order, and runs
        // that touch (one slab's lowest next to the next one's highest).
        let slab = |k: usize| (0..64).rev().map(move |i| k * 100 + i);
        check((0..4).flat_map(slab).collect());
        check((0..4).rev().flat_map(slab).collect());
        check([2, 0, 3, 1].into_iter().flat_map(slab).collect());
        check(
            (0..3)
                .flat_map(|k| (0..=10).rev().map(move |i| k * 10 + i))
                .collect(),
        );
        // Every run count up to more than the merge takes, at every length.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in (0..=70).chain([100, 191, 255, 256, 257, 300]) {
            for runs in 1..=10 {
                let mut v = Vec::new();
                for r in 0..runs {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let base = (seed >> 40) as usize;
                    let take = len / runs + usize::from(r < len % runs);
                    let run: Vec<usize> = (0..take).map(|k| base + 3 * k).collect();
                    if seed & 1 == 0 {
                        v.extend(run);
                    } else {
                        v.extend(run.into_iter().rev());
                    }
                }
                check(v);
            }
        }
    }
}
