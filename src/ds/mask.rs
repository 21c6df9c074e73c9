//! `CpuMask` and `NodeMask`: fixed-size bitsets (no heap), as the kernel's `cpumask_t`
//! and `nodemask_t`, read and written in the kernel's two text forms:
//!
//! - the list form of `cpuset.cpus` and `Cpus_allowed_list`: `0-3,8,10-11`, also with
//!   a stride, `0-15:2/4` (the first 2 of every 4);
//! - the mask form of `Cpus_allowed`: comma-separated 32-bit hex words, most
//!   significant first, `ff,ffffffff`.
//!
//! Parsing never panics and reports the first fault with its byte offset; printing
//! writes to any [`core::fmt::Write`] without allocating.

use core::fmt;

/// A bitset of `WORDS * 64` ids. Use it through [`CpuMask`] and [`NodeMask`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bitmap<const WORDS: usize> {
    words: [u64; WORDS],
}

/// A set of CPU ids, 0 to 4095 (the kernel's `cpumask_t` with `NR_CPUS = 4096`).
pub type CpuMask = Bitmap<64>;
/// A set of NUMA node ids, 0 to 1023 (the kernel's `nodemask_t`, `NODES_SHIFT = 10`).
pub type NodeMask = Bitmap<16>;

/// Why a mask's text was refused. `at` is the byte offset of the offending element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskError {
    /// Nothing between two commas (or a leading/trailing comma).
    EmptyElement {
        /// Byte offset of the empty element.
        at: usize,
    },
    /// Not a decimal number (list form) or not 1 to 8 hex digits (mask form).
    BadNumber {
        /// Byte offset of the element.
        at: usize,
    },
    /// A range whose start is after its end, as `3-1`.
    BadRange {
        /// Byte offset of the element.
        at: usize,
    },
    /// A stride `:used/group` with `used` 0, `group` 0 or `used > group`.
    BadStride {
        /// Byte offset of the element.
        at: usize,
    },
    /// An id at or past the mask's capacity.
    TooLarge {
        /// Byte offset of the element.
        at: usize,
        /// How many ids the mask holds.
        limit: usize,
    },
    /// The mask form needs at least one word.
    Empty,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EmptyElement { at } => write!(f, "empty element at byte {at}"),
            Self::BadNumber { at } => write!(f, "not a number at byte {at}"),
            Self::BadRange { at } => write!(f, "range start after its end at byte {at}"),
            Self::BadStride { at } => {
                write!(f, "stride needs 0 < used <= group at byte {at}")
            }
            Self::TooLarge { at, limit } => {
                write!(f, "id past the mask's {limit} bits at byte {at}")
            }
            Self::Empty => f.write_str("empty mask (the mask form needs a hex word)"),
        }
    }
}

impl<const WORDS: usize> Bitmap<WORDS> {
    /// How many ids the mask holds.
    pub const BITS: usize = WORDS * 64;

    /// The empty set.
    pub const fn new() -> Self {
        Self { words: [0; WORDS] }
    }

    /// The ids `0..n` (capped at [`BITS`](Self::BITS)).
    pub fn first_n(n: usize) -> Self {
        Self::range(0, n)
    }

    /// The ids `lo..hi` (capped at [`BITS`](Self::BITS)).
    pub fn range(lo: usize, hi: usize) -> Self {
        let mut m = Self::new();
        for i in lo..hi.min(Self::BITS) {
            m.set(i);
        }
        m
    }

    /// The mask from its 64-bit words, least significant first (the layout the kernel
    /// reads for `sched_setaffinity` and `set_mempolicy`).
    pub const fn from_words(words: [u64; WORDS]) -> Self {
        Self { words }
    }

    /// The 64-bit words, least significant first.
    pub const fn words(&self) -> &[u64; WORDS] {
        &self.words
    }

    /// The words, for a system call to fill in.
    pub fn words_mut(&mut self) -> &mut [u64; WORDS] {
        &mut self.words
    }

    /// Adds `id`. False (and no change) when `id` is past the capacity.
    pub fn set(&mut self, id: usize) -> bool {
        match self.words.get_mut(id / 64) {
            Some(w) => {
                *w |= 1 << (id % 64);
                true
            }
            None => false,
        }
    }

    /// Removes `id` (nothing when past the capacity).
    pub fn clear(&mut self, id: usize) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    /// Whether `id` is in the set.
    pub fn test(&self, id: usize) -> bool {
        self.words
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// `self ∩ other`.
    pub fn and(&self, other: &Self) -> Self {
        let mut r = *self;
        r.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= b);
        r
    }

    /// `self ∪ other`.
    pub fn or(&self, other: &Self) -> Self {
        let mut r = *self;
        r.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a |= b);
        r
    }

    /// `self \ other`.
    pub fn andnot(&self, other: &Self) -> Self {
        let mut r = *self;
        r.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= !b);
        r
    }

    /// Whether every id of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.words
            .iter()
            .zip(&other.words)
            .all(|(a, b)| a & !b == 0)
    }

    /// Whether the two sets share an id.
    pub fn intersects(&self, other: &Self) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// How many ids the set holds.
    pub fn weight(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The lowest id.
    pub fn first(&self) -> Option<usize> {
        self.next_from(0)
    }

    /// The highest id.
    pub fn last(&self) -> Option<usize> {
        let (i, w) = self.words.iter().enumerate().rev().find(|(_, &w)| w != 0)?;
        Some(i * 64 + 63 - w.leading_zeros() as usize)
    }

    /// The lowest id after `id` (the kernel's `cpumask_next`).
    pub fn next(&self, id: usize) -> Option<usize> {
        self.next_from(id.checked_add(1)?)
    }

    /// The lowest id after `id`, wrapping to the first (the kernel's `next_node_in`).
    pub fn next_wrap(&self, id: usize) -> Option<usize> {
        self.next(id).or_else(|| self.first())
    }

    /// The lowest id at or after `from`.
    fn next_from(&self, from: usize) -> Option<usize> {
        let mut i = from / 64;
        let mut w = *self.words.get(i)? & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                return Some(i * 64 + w.trailing_zeros() as usize);
            }
            i += 1;
            w = *self.words.get(i)?;
        }
    }

    /// The ids in increasing order.
    pub fn iter(&self) -> Iter<'_, WORDS> {
        Iter {
            mask: self,
            from: 0,
        }
    }

    /// Parses the list form, `0-3,8,10-11` or `0-15:2/4`. Surrounding whitespace (a
    /// trailing newline) is ignored; an empty string is the empty set.
    pub fn parse_list(s: &[u8]) -> Result<Self, MaskError> {
        let (s, base) = trim(s);
        let mut m = Self::new();
        if s.is_empty() {
            return Ok(m);
        }
        let mut at = base;
        for part in s.split(|&b| b == b',') {
            m.parse_list_element(part, at)?;
            at += part.len() + 1;
        }
        Ok(m)
    }

    fn parse_list_element(&mut self, part: &[u8], at: usize) -> Result<(), MaskError> {
        if part.is_empty() {
            return Err(MaskError::EmptyElement { at });
        }
        let (range, stride) = match part.iter().position(|&b| b == b':') {
            Some(c) => (&part[..c], Some(&part[c + 1..])),
            None => (part, None),
        };
        let (lo, hi) = match range.iter().position(|&b| b == b'-') {
            Some(d) => (
                decimal(&range[..d], at)?,
                decimal(&range[d + 1..], at + d + 1)?,
            ),
            None => {
                let n = decimal(range, at)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(MaskError::BadRange { at });
        }
        let (used, group) = match stride {
            None => (1, 1),
            Some(st) => {
                let Some(slash) = st.iter().position(|&b| b == b'/') else {
                    return Err(MaskError::BadStride { at });
                };
                let used = decimal(&st[..slash], at)?;
                let group = decimal(&st[slash + 1..], at)?;
                if used == 0 || group == 0 || used > group {
                    return Err(MaskError::BadStride { at });
                }
                (used, group)
            }
        };
        if hi >= Self::BITS {
            return Err(MaskError::TooLarge {
                at,
                limit: Self::BITS,
            });
        }
        for id in lo..=hi {
            if (id - lo) % group < used {
                self.set(id);
            }
        }
        Ok(())
    }

    /// Parses the mask form, `ff,ffffffff`: comma-separated words of 1 to 8 hex
    /// digits, most significant first. Surrounding whitespace is ignored. Words past
    /// the capacity must be zero.
    pub fn parse_mask(s: &[u8]) -> Result<Self, MaskError> {
        let (s, base) = trim(s);
        if s.is_empty() {
            return Err(MaskError::Empty);
        }
        let nwords = s.iter().filter(|&&b| b == b',').count() + 1;
        let mut m = Self::new();
        let mut at = base;
        for (i, word) in s.split(|&b| b == b',').enumerate() {
            if word.is_empty() {
                return Err(MaskError::EmptyElement { at });
            }
            if word.len() > 8 {
                return Err(MaskError::BadNumber { at });
            }
            let mut v: u32 = 0;
            for &b in word {
                let d = (b as char)
                    .to_digit(16)
                    .ok_or(MaskError::BadNumber { at })?;
                v = (v << 4) | d;
            }
            // Word `i` from the left is 32-bit word `nwords - 1 - i` from the right.
            let index = nwords - 1 - i;
            if v != 0 {
                if index * 32 >= Self::BITS {
                    return Err(MaskError::TooLarge {
                        at,
                        limit: Self::BITS,
                    });
                }
                m.words[index / 2] |= (v as u64) << (32 * (index % 2));
            }
            at += word.len() + 1;
        }
        Ok(m)
    }

    /// Writes the list form (`0-3,8,10-11`; nothing for the empty set).
    pub fn write_list(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let mut next = self.first();
        let mut sep = "";
        while let Some(lo) = next {
            let mut hi = lo;
            while self.test(hi + 1) {
                hi += 1;
            }
            if lo == hi {
                write!(w, "{sep}{lo}")?;
            } else {
                write!(w, "{sep}{lo}-{hi}")?;
            }
            sep = ",";
            next = self.next(hi);
        }
        Ok(())
    }

    /// Writes the mask form for a mask of `nbits` bits, as the kernel prints
    /// `Cpus_allowed` (`nbits` = `nr_cpu_ids`): the leading word has just the digits
    /// those bits need, the others 8. Ids at or past `nbits` are left out.
    pub fn write_mask(&self, w: &mut impl fmt::Write, nbits: usize) -> fmt::Result {
        let nbits = nbits.clamp(1, Self::BITS);
        let nwords = nbits.div_ceil(32);
        for index in (0..nwords).rev() {
            let mut v = (self.words[index / 2] >> (32 * (index % 2))) as u32;
            let bits_here = (nbits - index * 32).min(32);
            if bits_here < 32 {
                v &= (1u32 << bits_here) - 1;
            }
            if index == nwords - 1 {
                write!(w, "{v:0width$x}", width = bits_here.div_ceil(4))?;
            } else {
                write!(w, ",{v:08x}")?;
            }
        }
        Ok(())
    }

    /// The list form as a [`fmt::Display`] value.
    pub fn list(&self) -> impl fmt::Display + '_ {
        ListForm(self)
    }

    /// The mask form of `nbits` bits as a [`fmt::Display`] value.
    pub fn mask(&self, nbits: usize) -> impl fmt::Display + '_ {
        MaskForm(self, nbits)
    }
}

impl<const WORDS: usize> Default for Bitmap<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// The list form.
impl<const WORDS: usize> fmt::Display for Bitmap<WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_list(f)
    }
}

impl<const WORDS: usize> fmt::Debug for Bitmap<WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        self.write_list(f)?;
        f.write_str("}")
    }
}

/// The mask form, as wide as the highest id needs.
impl<const WORDS: usize> fmt::LowerHex for Bitmap<WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_mask(f, self.last().map_or(1, |l| l + 1))
    }
}

impl<const WORDS: usize> core::str::FromStr for Bitmap<WORDS> {
    type Err = MaskError;
    /// Parses the list form.
    fn from_str(s: &str) -> Result<Self, MaskError> {
        Self::parse_list(s.as_bytes())
    }
}

struct ListForm<'a, const WORDS: usize>(&'a Bitmap<WORDS>);

impl<const WORDS: usize> fmt::Display for ListForm<'_, WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_list(f)
    }
}

struct MaskForm<'a, const WORDS: usize>(&'a Bitmap<WORDS>, usize);

impl<const WORDS: usize> fmt::Display for MaskForm<'_, WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_mask(f, self.1)
    }
}

/// The ids of a mask in increasing order.
pub struct Iter<'a, const WORDS: usize> {
    mask: &'a Bitmap<WORDS>,
    from: usize,
}

impl<const WORDS: usize> Iterator for Iter<'_, WORDS> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let id = self.mask.next_from(self.from)?;
        self.from = id + 1;
        Some(id)
    }
}

impl<'a, const WORDS: usize> IntoIterator for &'a Bitmap<WORDS> {
    type Item = usize;
    type IntoIter = Iter<'a, WORDS>;
    fn into_iter(self) -> Iter<'a, WORDS> {
        self.iter()
    }
}

/// `s` without surrounding ASCII whitespace, and the offset of what is left.
fn trim(s: &[u8]) -> (&[u8], usize) {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    (&s[start..end], start)
}

/// A decimal id; numbers too long to be an id are `TooLarge`, not wrapped.
fn decimal(s: &[u8], at: usize) -> Result<usize, MaskError> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(MaskError::BadNumber { at });
    }
    let mut v: usize = 0;
    for &b in s {
        v = v.saturating_mul(10).saturating_add((b - b'0') as usize);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a: CpuMask = "0-3,8".parse().unwrap();
        let b: CpuMask = "2-9".parse().unwrap();
        assert_eq!(a.and(&b), "2-3,8".parse().unwrap());
        assert_eq!(a.or(&b), "0-9".parse().unwrap());
        assert_eq!(a.andnot(&b), "0-1".parse().unwrap());
        assert!(a.and(&b).is_subset(&a) && !a.is_subset(&b));
        assert_eq!((a.weight(), a.first(), a.last()), (5, Some(0), Some(8)));
        assert_eq!(
            (a.next(3), a.next(8), a.next_wrap(8)),
            (Some(8), None, Some(0))
        );
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 8]);
        assert!(!a.set(4096) && !a.test(4096) && CpuMask::new().first().is_none());
    }

    #[test]
    fn kernel_mask_widths() {
        let mut s = String::new();
        let m = CpuMask::first_n(2);
        m.write_mask(&mut s, 2).unwrap();
        assert_eq!(s, "3");
        let m: CpuMask = "0,39".parse().unwrap();
        assert_eq!(format!("{m:x}"), "80,00000001");
        assert_eq!(format!("{}", m.mask(64)), "00000080,00000001");
    }
}
