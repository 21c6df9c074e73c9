//! The kernel's cpulist format: "0-3,8,10-11".

/// Calls `f` for every id in a cpulist such as `0-3,8,10-11` (trailing newline
/// allowed). Returns false, after calling `f` for the ids before it, at a malformed
/// element.
pub fn parse_cpulist(s: &[u8], mut f: impl FnMut(usize)) -> bool {
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    if s.is_empty() {
        return true;
    }
    for part in s.split(|&b| b == b',') {
        let (lo, hi) = match part.iter().position(|&b| b == b'-') {
            Some(dash) => (number(&part[..dash]), number(&part[dash + 1..])),
            None => (number(part), number(part)),
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => (lo..=hi).for_each(&mut f),
            _ => return false,
        }
    }
    true
}

fn number(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + (b - b'0') as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &str) -> (bool, [bool; 16]) {
        let mut seen = [false; 16];
        let ok = parse_cpulist(s.as_bytes(), |i| seen[i] = true);
        (ok, seen)
    }

    #[test]
    fn ranges_and_singles() {
        let (ok, seen) = collect("0-3,8,10-11\n");
        assert!(ok);
        let want: Vec<usize> = (0..16).filter(|&i| seen[i]).collect();
        assert_eq!(want, [0, 1, 2, 3, 8, 10, 11]);
    }

    #[test]
    fn malformed_is_refused() {
        assert!(!collect("3-1").0);
        assert!(!collect("a").0);
        assert!(!collect("1,,2").0);
        assert!(collect("").0);
    }
}
