//! Medians, ratios and geometric means of a section, and its Markdown table.

use super::*;

/// Index of the allocator ratios are against: `--baseline`, else cpuslab,
/// else the first.
pub(crate) fn baseline(sec: &Section, o: &Opts) -> usize {
    let pos = |n: &str| sec.allocs.iter().position(|a| canonical(a.name) == n);
    pos(&o.baseline).or_else(|| pos("cpuslab")).unwrap_or(0)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median seconds and median peak RSS (KiB) of a cell, or None if any run
/// failed (a failure is never averaged away).
pub(crate) fn cell_medians(sec: &Section, wi: usize, ai: usize) -> Option<(f64, f64)> {
    let c = sec.cells.get(&(wi, ai))?;
    if !c.failures.is_empty() || c.samples.is_empty() {
        return None;
    }
    Some((
        median(c.samples.iter().map(|s| s.time.as_secs_f64()).collect()),
        median(c.samples.iter().map(|s| s.rss_kib as f64).collect()),
    ))
}

/// Ratios to the baseline per workload: (time, rss) for each allocator.
pub(crate) fn ratios(sec: &Section, o: &Opts) -> Vec<Vec<Option<(f64, f64)>>> {
    let b = baseline(sec, o);
    (0..sec.workloads.len())
        .map(|wi| {
            let base = cell_medians(sec, wi, b);
            (0..sec.allocs.len())
                .map(|ai| {
                    let (bt, br) = base?;
                    let (t, r) = cell_medians(sec, wi, ai)?;
                    Some((t / bt, r / br))
                })
                .collect()
        })
        .collect()
}

pub(crate) fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    (n > 0).then(|| (sum / n as f64).exp())
}

pub(crate) fn fmt_time(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

pub(crate) fn fmt_rss(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// A markdown table, padded so it also reads well as plain text.
pub(crate) fn render_table(sec: &Section, o: &Opts) -> String {
    let b = baseline(sec, o);
    let r = ratios(sec, o);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["workload".to_string()];
    head.extend(sec.allocs.iter().map(|a| format!("{} time", a.name)));
    head.extend(sec.allocs.iter().map(|a| format!("{} RSS", a.name)));
    rows.push(head);
    for (wi, w) in sec.workloads.iter().enumerate() {
        let mut row = vec![w.name.to_string()];
        for metric in 0..2 {
            for (ai, ratio) in r[wi].iter().enumerate() {
                row.push(match cell_medians(sec, wi, ai) {
                    None => "FAILED".to_string(),
                    Some((t, rss)) => {
                        let v = if metric == 0 {
                            fmt_time(t)
                        } else {
                            fmt_rss(rss)
                        };
                        match ratio {
                            Some(x) if ai != b => {
                                format!("{v} ×{:.2}", if metric == 0 { x.0 } else { x.1 })
                            }
                            _ => v,
                        }
                    }
                });
            }
        }
        rows.push(row);
    }
    let mut gm = vec!["geomean ratio".to_string()];
    for metric in 0..2 {
        for ai in 0..sec.allocs.len() {
            let g = geomean(r.iter().filter_map(|row| row[ai]).map(|x| {
                if metric == 0 {
                    x.0
                } else {
                    x.1
                }
            }));
            gm.push(g.map_or("-".to_string(), |g| format!("×{g:.2}")));
        }
    }
    rows.push(gm);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                if c == 0 {
                    let _ = write!(out, " {dashes} |");
                } else {
                    let _ = write!(out, " {}: |", &dashes[1..]);
                }
            }
            out.push('\n');
        }
    }
    out
}
