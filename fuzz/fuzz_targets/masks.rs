//! The CPU and node mask parsers on arbitrary bytes: `CpuMask` / `NodeMask`
//! `parse_list` and `parse_mask`, and `topology::parse_cpulist`.
//!
//! Checked: nothing panics; an error's byte offset lies inside the input; whatever
//! parses prints (list form, mask form, `{:x}`, and the mask form cut to `nbits`) and
//! parses back to the same mask; `parse_cpulist` and `CpuMask::parse_list` agree on
//! the inputs both accept (plain `a-b` lists, ids below 4096).

#![no_main]

use cpuslab::topology::{parse_cpulist, Bitmap, CpuMask, MaskError, NodeMask};
use libfuzzer_sys::fuzz_target;

fn error_offset_inside(e: MaskError, len: usize, what: &str) {
    let at = match e {
        MaskError::EmptyElement { at }
        | MaskError::BadNumber { at }
        | MaskError::BadRange { at }
        | MaskError::BadStride { at }
        | MaskError::TooLarge { at, .. } => at,
        MaskError::Empty => return,
    };
    assert!(
        at <= len,
        "{what}: error {e:?} at byte {at} of a {len}-byte input"
    );
}

fn round_trip<const W: usize>(m: &Bitmap<W>, nbits: usize, what: &str) {
    let list = m.list().to_string();
    assert_eq!(
        Bitmap::<W>::parse_list(list.as_bytes()),
        Ok(*m),
        "{what}: list form {list:?}"
    );
    let hex = format!("{m:x}");
    assert_eq!(
        Bitmap::<W>::parse_mask(hex.as_bytes()),
        Ok(*m),
        "{what}: {{:x}} form {hex:?}"
    );
    let full = m.mask(Bitmap::<W>::BITS).to_string();
    assert_eq!(
        Bitmap::<W>::parse_mask(full.as_bytes()),
        Ok(*m),
        "{what}: full mask form {full:?}"
    );
    // The mask form of `nbits` bits leaves out the ids at or past it.
    let cut = m.and(&Bitmap::<W>::first_n(nbits.clamp(1, Bitmap::<W>::BITS)));
    let mut s = String::new();
    m.write_mask(&mut s, nbits).unwrap();
    assert_eq!(
        Bitmap::<W>::parse_mask(s.as_bytes()),
        Ok(cut),
        "{what}: mask form of {nbits} bits {s:?}"
    );
    let mut n = 0;
    for id in m {
        assert!(
            m.test(id) && id < Bitmap::<W>::BITS,
            "{what}: iter gave {id}"
        );
        n += 1;
    }
    assert_eq!(n, m.weight(), "{what}: weight");
}

fn parsers<const W: usize>(data: &[u8], nbits: usize, what: &str) {
    match Bitmap::<W>::parse_list(data) {
        Ok(m) => round_trip(&m, nbits, &format!("{what} parse_list")),
        Err(e) => error_offset_inside(e, data.len(), what),
    }
    match Bitmap::<W>::parse_mask(data) {
        Ok(m) => round_trip(&m, nbits, &format!("{what} parse_mask")),
        Err(e) => error_offset_inside(e, data.len(), what),
    }
}

/// `parse_cpulist` against `CpuMask::parse_list` on the inputs both read the same way.
fn cpulist(data: &[u8]) {
    // parse_cpulist calls back once per id and takes numbers of up to 9 digits, so a
    // range such as 0-999999999 costs a billion calls: keep runs of digits short.
    let mut run = 0;
    for &b in data {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if (6..=9).contains(&run) {
            return;
        }
    }
    let mut got = CpuMask::new();
    let mut big = false;
    let ok = parse_cpulist(data, |id| {
        if !got.set(id) {
            big = true;
        }
    });
    // Inputs both forms read alike: digits, '-' and ',', an optional trailing newline.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let plain = body
        .iter()
        .all(|&b| b.is_ascii_digit() || b == b'-' || b == b',');
    let short = body
        .split(|&b| !b.is_ascii_digit())
        .all(|digits| digits.len() <= 9);
    if !plain || !short {
        return;
    }
    match CpuMask::parse_list(data) {
        Ok(m) => {
            assert!(ok, "parse_cpulist refused {data:?}, parse_list read {m}");
            assert!(!big);
            assert_eq!(got, m, "parse_cpulist and parse_list differ on {data:?}");
        }
        Err(MaskError::TooLarge { .. }) => {}
        Err(e) => assert!(!ok, "parse_cpulist accepted {data:?}, parse_list: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the width of a cut mask form; the rest is the text.
    let (nbits, text) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % 4200, rest),
        _ => (1, data),
    };
    parsers::<64>(text, nbits, "CpuMask");
    parsers::<16>(text, nbits, "NodeMask");
    cpulist(text);
    if let Ok(s) = std::str::from_utf8(text) {
        assert_eq!(s.parse::<NodeMask>(), NodeMask::parse_list(text), "FromStr");
    }
});
