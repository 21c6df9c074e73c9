//! The SVG chart of every section's time and RSS ratios.

use super::*;

pub(crate) const COLORS: &[&str] = &[
    "#1f77b4", "#8c8c8c", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e",
];

/// An allocator's colour, the same in every part.
pub(crate) fn color(name: &str) -> &'static str {
    let i = ALLOC_NAMES
        .iter()
        .position(|&n| n == canonical(name))
        .unwrap_or(ALLOC_NAMES.len());
    COLORS[i % COLORS.len()]
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One grouped bar chart of ratios on a log2 axis from 1/8 to 8, bars
/// growing up or down from 1. Appends to `svg` at vertical offset `y0`;
/// returns the height used.
pub(crate) fn svg_chart(
    svg: &mut String,
    y0: f64,
    title: &str,
    names: &[&str],
    allocs: &[Alloc],
    values: &[Vec<Option<f64>>],
) -> f64 {
    const LEFT: f64 = 70.0;
    const BAR: f64 = 9.0;
    const GAP: f64 = 14.0;
    const PLOT_H: f64 = 240.0;
    const SPAN: f64 = 3.0; // log2(8)
    let group = allocs.len() as f64 * BAR + GAP;
    let width = LEFT + names.len() as f64 * group + 20.0;
    let top = y0 + 30.0;
    let mid = top + PLOT_H / 2.0;
    let y_of = |r: f64| mid - r.log2().clamp(-SPAN, SPAN) / SPAN * (PLOT_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(title)
    );
    for (i, a) in allocs.iter().enumerate() {
        let x = width - 110.0 * (allocs.len() - i) as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            y0 + 8.0,
            color(a.name),
            x + 14.0,
            y0 + 17.0,
            a.name
        );
    }
    for k in -3i32..=3 {
        let r = 2f64.powi(k);
        let y = y_of(r);
        let label = if k < 0 {
            format!("1/{}", 1 << -k)
        } else {
            format!("{}", 1 << k)
        };
        let (stroke, dash) = if k == 0 {
            ("#000", "")
        } else {
            ("#ddd", r#" stroke-dasharray="3,3""#)
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"{dash}/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{label}×</text>"#,
            width - 10.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (wi, name) in names.iter().enumerate() {
        let gx = LEFT + wi as f64 * group + GAP / 2.0;
        for (ai, v) in values[wi].iter().enumerate() {
            let x = gx + ai as f64 * BAR;
            match v {
                Some(r) => {
                    let y = y_of(*r);
                    let (ya, h) = if y < mid {
                        (y, mid - y)
                    } else {
                        (mid, y - mid)
                    };
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{ya:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: ×{r:.3}</title></rect>"#,
                        BAR - 1.0,
                        h.max(1.0),
                        color(allocs[ai].name),
                        esc(name),
                        allocs[ai].name
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d00" text-anchor="middle">✗<title>{} {}: FAILED</title></text>"##,
                        x + BAR / 2.0,
                        mid + 4.0,
                        esc(name),
                        allocs[ai].name
                    );
                }
            }
        }
        let lx = gx + group / 2.0 - GAP / 2.0;
        let ly = top + PLOT_H + 10.0;
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="11" text-anchor="end" transform="rotate(-40 {lx:.1} {ly:.1})">{}</text>"#,
            esc(name)
        );
    }
    30.0 + PLOT_H + 90.0
}

pub(crate) fn render_svg(sections: &[Section], o: &Opts) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    let mut width: f64 = 400.0;
    for sec in sections {
        let r = ratios(sec, o);
        let names: Vec<&str> = sec.workloads.iter().map(|w| w.name).collect();
        width =
            width.max(70.0 + names.len() as f64 * (sec.allocs.len() as f64 * 9.0 + 14.0) + 20.0);
        let base = sec.allocs[baseline(sec, o)].name;
        for (metric, label) in [(0, "time"), (1, "peak RSS")] {
            let vals: Vec<Vec<Option<f64>>> = r
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|x| x.map(|x| if metric == 0 { x.0 } else { x.1 }))
                        .collect()
                })
                .collect();
            let title = format!(
                "{}: {label} ratio vs {base}, threads = {} (lower is better)",
                sec.part.title(),
                sec.threads
            );
            y += svg_chart(&mut body, y, &title, &names, &sec.allocs, &vals);
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{y:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}
