//! SVG plots of reports.
//!
//! Dependency-free renderers, each returning a standalone SVG 1.1 document of 800 x 500 pixels:
//!
//! - [`latency_cdf`]: the distribution of client latencies, one line per policy, with optional
//!   labelled vertical markers (latency targets).
//! - [`violation_curve`]: violation rate against offered load, one line with point markers per
//!   policy; [`violation_points`] builds its series from [`Report`]s.
//! - [`bars`]: one bar per name (violation ratio per baseline, goodput per policy, ...).
//!
//! Colours come from the Okabe-Ito palette (colour-blind friendly). The series named
//! `synergai` (any case) is always drawn in the first colour and thicker; the others take the
//! remaining colours in order, then repeat them dashed. Non-finite values (and values beyond
//! ±1e12) are skipped; a figure with nothing left to draw says "no data". The output depends
//! only on the input.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::report::Report;

/// Width and height of every figure, px.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
/// The plot area, px.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 620.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 440.0;
/// Left edge of the legend, px.
const LEGEND_X: f64 = 636.0;
const LEGEND_ROW: f64 = 20.0;
/// Characters of a name the legend shows.
const LEGEND_CHARS: usize = 19;
/// Approximate width of a character at the default font size, px.
const CHAR_PX: f64 = 7.0;
/// Values beyond this magnitude are treated like non-finite ones.
const MAX_ABS: f64 = 1e12;
/// A latency range spanning more decades than this gets a log axis.
const LOG_MIN_DECADES: f64 = 1.5;
/// Consecutive CDF points closer than this (px, both ways) are merged.
const CDF_MIN_STEP_PX: f64 = 0.5;

/// The name drawn in the first colour, thicker.
const OURS: &str = "synergai";
/// Okabe-Ito, without yellow (too pale on white); the first is reserved for [`OURS`].
const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
];
/// Dash patterns for when the colours run out.
const DASHES: [Option<&str>; 3] = [None, Some("7 4"), Some("2 3")];
const GRID: &str = "#e3e3e3";
const INK: &str = "#333333";
const MARKER: &str = "#666666";

/// A series of [`violation_curve`]: (policy name, points of (offered load, violation rate as a
/// fraction)).
pub type Curve = (String, Vec<(f64, f64)>);

/// The cumulative distribution of client latencies, one line per series.
///
/// `series` holds (policy name, latencies in ms); x is the latency (log scale when the values
/// span more than 1.5 decades, else linear), y the fraction of the series' requests at or below
/// it. `markers` holds (label, latency in ms) pairs drawn as labelled dashed vertical lines, such
/// as latency targets; the x range widens to show them.
pub fn latency_cdf(
    title: &str,
    series: &[(String, Vec<f64>)],
    markers: &[(String, f64)],
) -> String {
    let sorted: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut v: Vec<f64> = v.iter().copied().filter(|x| usable(*x)).collect();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    let Some((lo, hi)) = range(sorted.iter().flatten().copied()) else {
        return no_data(title);
    };
    let markers: Vec<(&str, f64)> = markers
        .iter()
        .filter(|(_, x)| usable(*x))
        .map(|(name, x)| (name.as_str(), *x))
        .collect();
    let (lo, hi) = markers
        .iter()
        .fold((lo, hi), |(lo, hi), (_, x)| (lo.min(*x), hi.max(*x)));
    let x = Scale::auto(lo, hi, 6);
    let y = Scale::linear(0.0, 1.0, 5);
    let mut svg = Svg::new(title);
    frame(
        &mut svg,
        Some(&x),
        &y,
        "client latency (ms)",
        "fraction of requests at or below",
    );

    let styles = styles(series.iter().map(|(name, _)| name.as_str()));
    for (values, style) in sorted.iter().zip(&styles) {
        if values.is_empty() {
            continue;
        }
        let points = thin(
            cdf_steps(values)
                .into_iter()
                .map(|(vx, vy)| (x_px(&x, vx), y_px(&y, vy))),
            CDF_MIN_STEP_PX,
        );
        svg.polyline(&points, style);
    }
    for (i, (label, at)) in markers.iter().enumerate() {
        let px = x_px(&x, *at);
        svg.line((px, TOP), (px, BOTTOM), MARKER, 1.5, Some("6 4"));
        let (tx, anchor) = if px > RIGHT - 80.0 {
            (px - 4.0, "end")
        } else {
            (px + 4.0, "start")
        };
        let ty = TOP + 14.0 + 14.0 * (i % 8) as f64;
        svg.text(tx, ty, anchor, &format!(r#"fill="{MARKER}""#), label);
    }
    legend(&mut svg, series, &sorted, &styles, Glyph::Line);
    svg.finish()
}

/// Violation rate against offered load, one line with point markers per series.
///
/// `series` holds (policy name, points); a point is (offered load, violation rate as a
/// fraction, as in [`Report::violation_rate`]). Points are drawn sorted by load; the rate is
/// shown in %, from 0 up to the largest rate rounded up to a nice value. `x_label` names the
/// load axis, e.g. `offered load (% of capacity)`.
pub fn violation_curve(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, pts)| {
            let mut pts: Vec<(f64, f64)> = pts
                .iter()
                .map(|&(x, y)| (x, y * 100.0))
                .filter(|&(x, y)| usable(x) && usable(y))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            pts
        })
        .collect();
    let Some((x_lo, x_hi)) = range(points.iter().flatten().map(|p| p.0)) else {
        return no_data(title);
    };
    let (y_lo, y_hi) = range(points.iter().flatten().map(|p| p.1)).unwrap_or((0.0, 0.0));
    let x = Scale::linear(x_lo, x_hi, 6);
    let y = Scale::from_zero(y_lo, y_hi, 5);
    let mut svg = Svg::new(title);
    frame(&mut svg, Some(&x), &y, x_label, "violation rate (%)");

    let styles = styles(series.iter().map(|(name, _)| name.as_str()));
    for (pts, style) in points.iter().zip(&styles) {
        if pts.is_empty() {
            continue;
        }
        let px: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(vx, vy)| (x_px(&x, vx), y_px(&y, vy)))
            .collect();
        svg.polyline(&px, style);
        for &(cx, cy) in &px {
            svg.circle(cx, cy, style);
        }
    }
    legend(&mut svg, series, &points, &styles, Glyph::LineAndPoint);
    svg.finish()
}

/// One bar per (name, value), in the given order, against a y axis labelled `y_label`.
///
/// The axis runs from 0 (or the smallest negative value) to the largest value rounded up to a
/// nice value. A non-finite value leaves its slot empty, marked `n/a`.
pub fn bars(title: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let Some((lo, hi)) = range(bars.iter().map(|b| b.1).filter(|v| usable(*v))) else {
        return no_data(title);
    };
    let y = Scale::from_zero(lo, hi, 5);
    let mut svg = Svg::new(title);
    frame(&mut svg, None, &y, "", y_label);

    let styles = styles(bars.iter().map(|(name, _)| name.as_str()));
    let slot = (RIGHT - LEFT) / bars.len() as f64;
    let width = (slot * 0.6).min(80.0);
    let rotate = slot < 70.0;
    let label_chars = if rotate {
        11
    } else {
        ((slot / CHAR_PX) as usize).max(3)
    };
    let zero = y_px(&y, 0.0);
    for (i, ((name, value), style)) in bars.iter().zip(&styles).enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        if usable(*value) {
            let top = y_px(&y, *value);
            svg.rect(
                cx - width / 2.0,
                top.min(zero),
                width,
                (top - zero).abs(),
                style,
            );
            let ty = if *value >= 0.0 { top - 5.0 } else { top + 14.0 };
            svg.text(cx, ty, "middle", "", &fmt_sig(*value, 4));
        } else {
            svg.text(
                cx,
                zero - 5.0,
                "middle",
                &format!(r#"fill="{MARKER}""#),
                "n/a",
            );
        }
        let label = truncate(name, label_chars);
        if rotate {
            let ly = BOTTOM + 14.0;
            let attrs = format!("transform=\"rotate(-35 {} {})\"", N(cx), N(ly));
            svg.text(cx, ly, "end", &attrs, &label);
        } else {
            svg.text(cx, BOTTOM + 18.0, "middle", "", &label);
        }
    }
    let values: Vec<Vec<f64>> = bars
        .iter()
        .map(|b| if usable(b.1) { vec![b.1] } else { Vec::new() })
        .collect();
    legend(&mut svg, bars, &values, &styles, Glyph::Swatch);
    svg.finish()
}

/// The series [`violation_curve`] wants, from reports, with the label of their x axis.
///
/// One series per policy (`synergai` first, the others by name), one point per report:
/// (load, [`Report::violation_rate`]). The load is [`Report::load_fraction`] in % when every
/// report has one, else [`Report::offered_rps`].
pub fn violation_points(reports: &[Report]) -> (&'static str, Vec<Curve>) {
    let by_fraction = !reports.is_empty() && reports.iter().all(|r| r.load_fraction.is_some());
    let mut by_policy: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in reports {
        let x = match r.load_fraction {
            Some(f) if by_fraction => f * 100.0,
            _ => r.offered_rps,
        };
        by_policy
            .entry(r.policy.as_str())
            .or_default()
            .push((x, r.violation_rate));
    }
    let mut series: Vec<Curve> = by_policy
        .into_iter()
        .map(|(name, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name.to_string(), pts)
        })
        .collect();
    series.sort_by_key(|(name, _)| !is_ours(name));
    let label = if by_fraction {
        "offered load (% of predicted capacity)"
    } else {
        "offered load (requests/s)"
    };
    (label, series)
}

// ---------------------------------------------------------------------------------------------
// Data helpers.

/// Whether a value can be drawn.
fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_ABS
}

/// The smallest and largest of `values`, `None` when there are none.
fn range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The empirical CDF of sorted values as a staircase: monotonic in both coordinates.
fn cdf_steps(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut pts = Vec::with_capacity(sorted.len() * 2);
    for (i, &v) in sorted.iter().enumerate() {
        pts.push((v, i as f64 / n));
        pts.push((v, (i + 1) as f64 / n));
    }
    pts
}

/// The points, dropping each one closer than `min_px` (both ways) to the last kept; the first
/// and last are always kept. A subsequence, so monotonicity is preserved.
fn thin(points: impl IntoIterator<Item = (f64, f64)>, min_px: f64) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    let mut pending = None;
    for p in points {
        match kept.last() {
            Some(&(x, y)) if (p.0 - x).abs() < min_px && (p.1 - y).abs() < min_px => {
                pending = Some(p);
            }
            _ => {
                kept.push(p);
                pending = None;
            }
        }
    }
    kept.extend(pending);
    kept
}

// ---------------------------------------------------------------------------------------------
// Scales and ticks.

/// A mapping of data values onto [0, 1], with the tick values to label.
#[derive(Debug, Clone, PartialEq)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Scale {
    /// Linear, covering [lo, hi] widened out to nice ticks (about `target` intervals).
    fn linear(lo: f64, hi: f64, target: usize) -> Scale {
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - pad, lo + pad)
        };
        let ticks = nice_ticks(lo, hi, target);
        let first = ticks.first().map_or(lo, |t| t.min(lo));
        let last = ticks.last().map_or(hi, |t| t.max(hi));
        Scale {
            lo: first,
            hi: last,
            log: false,
            ticks,
        }
    }

    /// Linear, covering 0 and [lo, hi]; [0, 1] when everything is 0.
    fn from_zero(lo: f64, hi: f64, target: usize) -> Scale {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Scale::linear(lo, hi, target)
    }

    /// Logarithmic over [lo, hi], both > 0, widened out to 1-2-5 values.
    fn log(lo: f64, hi: f64) -> Scale {
        let (lo, hi, ticks) = log_ticks(lo, hi);
        Scale {
            lo,
            hi,
            log: true,
            ticks,
        }
    }

    /// Logarithmic when [lo, hi] is positive and spans more than 1.5 decades, else linear.
    fn auto(lo: f64, hi: f64, target: usize) -> Scale {
        if lo > 0.0 && (hi / lo).log10() > LOG_MIN_DECADES {
            Scale::log(lo, hi)
        } else {
            Scale::linear(lo, hi, target)
        }
    }

    /// Where `v` lies between the ends, clamped to [0, 1] (0.5 for a degenerate scale).
    fn frac(&self, v: f64) -> f64 {
        let t = |x: f64| if self.log { x.log10() } else { x };
        let (a, b, x) = (t(self.lo), t(self.hi), t(v));
        let f = if b > a { (x - a) / (b - a) } else { 0.5 };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Pixel x of `v` in the plot area.
fn x_px(scale: &Scale, v: f64) -> f64 {
    LEFT + scale.frac(v) * (RIGHT - LEFT)
}

/// Pixel y of `v` in the plot area (up is larger).
fn y_px(scale: &Scale, v: f64) -> f64 {
    BOTTOM - scale.frac(v) * (BOTTOM - TOP)
}

/// A step of 1, 2 or 5 times a power of ten, the smallest at least `raw` (1 when `raw` is not
/// a positive number).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let n = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|&n| m <= n * (1.0 + 1e-9))
        .unwrap_or(10.0);
    n * mag
}

/// Evenly spaced ticks with a 1-2-5 step, about `target` intervals, the first at or below
/// `lo` and the last at or above `hi`. Empty unless `lo < hi`, both finite.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Vec::new();
    }
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step + 1e-9).floor();
    let last = (hi / step - 1e-9).ceil();
    let n = (last - first).clamp(0.0, 1000.0) as usize;
    (0..=n).map(|i| (first + i as f64) * step).collect()
}

/// 10 to the power `e`.
fn pow10(e: i32) -> f64 {
    10f64.powi(e)
}

/// The largest 1-2-5 value (times a power of ten) at or below `v` > 0.
fn floor_125(v: f64) -> f64 {
    let p = pow10(v.log10().floor() as i32);
    let m = v / p * (1.0 + 1e-9);
    [10.0, 5.0, 2.0, 1.0]
        .into_iter()
        .find(|&n| m >= n)
        .unwrap_or(0.5)
        * p
}

/// The smallest 1-2-5 value (times a power of ten) at or above `v` > 0.
fn ceil_125(v: f64) -> f64 {
    let p = pow10(v.log10().floor() as i32);
    let m = v / p / (1.0 + 1e-9);
    [0.5, 1.0, 2.0, 5.0]
        .into_iter()
        .find(|&n| m <= n)
        .unwrap_or(10.0)
        * p
}

/// Ends and ticks of a log axis over [lo, hi], both > 0: the ends are the 1-2-5 values around
/// the range; the ticks are its 1-2-5 values when there are at most 10 of them, else powers of
/// ten (every few decades over a wide range) plus the ends where there is room.
fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let a = floor_125(lo);
    let b = ceil_125(hi.max(lo));
    let (ea, eb) = (a.log10().floor() as i32 - 1, b.log10().ceil() as i32 + 1);
    let inside = |v: &f64| *v >= a * (1.0 - 1e-9) && *v <= b * (1.0 + 1e-9);
    let all: Vec<f64> = (ea..=eb)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * pow10(e)))
        .filter(inside)
        .collect();
    if all.len() <= 10 {
        return (a, b, all);
    }
    let decades = (b / a).log10();
    let every = (decades / 8.0).ceil().max(1.0) as i32;
    let mut ticks: Vec<f64> = (ea..=eb)
        .filter(|e| e.rem_euclid(every) == 0)
        .map(pow10)
        .filter(inside)
        .collect();
    for end in [a, b] {
        let far = ticks
            .iter()
            .all(|t| (t.log10() - end.log10()).abs() >= 0.06 * decades);
        if far {
            ticks.push(end);
        }
    }
    ticks.sort_by(f64::total_cmp);
    (a, b, ticks)
}

// ---------------------------------------------------------------------------------------------
// Text.

/// `s` with the XML special characters escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`, the last one an ellipsis when shortened.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A tick label: plain decimals, up to 4 places, exponent form for very large or small values.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    if a < 5e-13 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.2e}");
        return match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        };
    }
    let s = trim_zeros(&format!("{v:.4}")).to_string();
    if s == "-0" { "0".into() } else { s }
}

/// `v` rounded to `digits` significant digits, as [`fmt_num`] writes it.
fn fmt_sig(v: f64, digits: i32) -> String {
    if !v.is_finite() || v == 0.0 {
        return fmt_num(v);
    }
    let p = pow10(digits - 1 - v.abs().log10().floor() as i32);
    let r = (v * p).round() / p;
    fmt_num(if r.is_finite() { r } else { v })
}

/// A decimal without trailing zeros after the point (nor the point itself).
fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Whether a series name is ours.
fn is_ours(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case(OURS)
}

// ---------------------------------------------------------------------------------------------
// Drawing.

/// How a series is drawn.
#[derive(Debug, Clone, PartialEq)]
struct Style {
    colour: &'static str,
    width: f64,
    dash: Option<&'static str>,
    /// Fill opacity of areas (bars, swatches): lower once the colours repeat.
    opacity: f64,
}

/// The styles of series with these names: ours in the first colour and thicker, the others in
/// the remaining colours in order, dashed once those run out.
fn styles<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Style> {
    let others = PALETTE.len() - 1;
    let mut k = 0;
    names
        .into_iter()
        .map(|name| {
            if is_ours(name) {
                Style {
                    colour: PALETTE[0],
                    width: 3.0,
                    dash: None,
                    opacity: 1.0,
                }
            } else {
                let (i, tier) = (k % others, (k / others) % DASHES.len());
                k += 1;
                Style {
                    colour: PALETTE[1 + i],
                    width: 1.75,
                    dash: DASHES[tier],
                    opacity: 1.0 - 0.35 * tier as f64,
                }
            }
        })
        .collect()
}

/// A coordinate: one decimal, never non-finite.
struct N(f64);

impl fmt::Display for N {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() { self.0 } else { 0.0 };
        let s = format!("{v:.1}");
        f.write_str(s.strip_suffix(".0").unwrap_or(&s))
    }
}

/// An SVG document being written.
struct Svg(String);

impl Svg {
    /// The document's start: root element, background, title.
    fn new(title: &str) -> Svg {
        let mut svg = Svg(String::new());
        svg.raw(format_args!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">",
            w = N(WIDTH),
            h = N(HEIGHT),
        ));
        svg.raw(format_args!("<title>{}</title>", escape(title)));
        svg.raw(format_args!(
            "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>",
            N(WIDTH),
            N(HEIGHT)
        ));
        svg.text(
            WIDTH / 2.0,
            28.0,
            "middle",
            "font-size=\"16\" font-weight=\"bold\"",
            title,
        );
        svg
    }

    /// One line of markup.
    fn raw(&mut self, line: fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(line);
        self.0.push('\n');
    }

    /// A straight line.
    fn line(
        &mut self,
        from: (f64, f64),
        to: (f64, f64),
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let dash = dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        self.raw(format_args!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{}\"{dash}/>",
            N(from.0),
            N(from.1),
            N(to.0),
            N(to.1),
            N(width),
        ));
    }

    /// Text at (x, y) with `anchor` (start, middle, end) and further raw attributes; the text
    /// is escaped.
    fn text(&mut self, x: f64, y: f64, anchor: &str, attrs: &str, text: &str) {
        let sep = if attrs.is_empty() { "" } else { " " };
        self.raw(format_args!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\"{sep}{attrs}>{}</text>",
            N(x),
            N(y),
            escape(text),
        ));
    }

    /// A series' line through the points.
    fn polyline(&mut self, points: &[(f64, f64)], style: &Style) {
        let mut pts = String::new();
        for (i, (x, y)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(pts, "{sep}{},{}", N(*x), N(*y));
        }
        let dash = style
            .dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        self.raw(format_args!(
            "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" \
             stroke-linejoin=\"round\"{dash}/>",
            style.colour,
            N(style.width),
        ));
    }

    /// A point marker in a series' colour.
    fn circle(&mut self, x: f64, y: f64, style: &Style) {
        self.raw(format_args!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\"/>",
            N(x),
            N(y),
            N(style.width + 2.0),
            style.colour,
        ));
    }

    /// A filled rectangle (bar, swatch) in a series' colour.
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, style: &Style) {
        let opacity = if style.opacity < 1.0 {
            format!(" fill-opacity=\"{}\"", fmt_num(style.opacity))
        } else {
            String::new()
        };
        self.raw(format_args!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"{opacity}/>",
            N(x),
            N(y),
            N(w),
            N(h),
            style.colour,
        ));
    }

    /// The finished document.
    fn finish(mut self) -> String {
        self.0.push_str("</svg>\n");
        self.0
    }
}

/// Gridlines, ticks, tick labels, axes and axis labels. Without an x scale only the y axis is
/// drawn (categories label themselves) and `x_label` may be empty.
fn frame(svg: &mut Svg, x: Option<&Scale>, y: &Scale, x_label: &str, y_label: &str) {
    svg.raw(format_args!("<g class=\"axes\" fill=\"{INK}\">"));
    for &t in &y.ticks {
        let py = y_px(y, t);
        svg.line((LEFT, py), (RIGHT, py), GRID, 1.0, None);
        svg.line((LEFT - 5.0, py), (LEFT, py), INK, 1.0, None);
        svg.text(LEFT - 8.0, py + 4.0, "end", "", &fmt_num(t));
    }
    if let Some(x) = x {
        for &t in &x.ticks {
            let px = x_px(x, t);
            svg.line((px, TOP), (px, BOTTOM), GRID, 1.0, None);
            svg.line((px, BOTTOM), (px, BOTTOM + 5.0), INK, 1.0, None);
            svg.text(px, BOTTOM + 18.0, "middle", "", &fmt_num(t));
        }
    }
    svg.line((LEFT, TOP), (LEFT, BOTTOM), INK, 1.0, None);
    svg.line((LEFT, BOTTOM), (RIGHT, BOTTOM), INK, 1.0, None);
    let x_label = match x {
        Some(x) if x.log && !x_label.is_empty() => format!("{x_label}, log scale"),
        _ => x_label.to_string(),
    };
    if !x_label.is_empty() {
        svg.text((LEFT + RIGHT) / 2.0, BOTTOM + 42.0, "middle", "", &x_label);
    }
    let (lx, ly) = (18.0, (TOP + BOTTOM) / 2.0);
    let rotate = format!("transform=\"rotate(-90 {} {})\"", N(lx), N(ly));
    svg.text(lx, ly, "middle", &rotate, y_label);
    svg.raw(format_args!("</g>"));
}

/// What a legend entry shows beside the name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Glyph {
    Line,
    LineAndPoint,
    Swatch,
}

/// The legend, right of the plot area: one entry per series, `(no data)` after the name of an
/// empty one, `+N more` when they do not all fit.
fn legend<T, V>(
    svg: &mut Svg,
    series: &[(String, T)],
    data: &[Vec<V>],
    styles: &[Style],
    glyph: Glyph,
) {
    let rows = ((BOTTOM - TOP) / LEGEND_ROW) as usize;
    let shown = if series.len() > rows {
        rows - 1
    } else {
        series.len()
    };
    svg.raw(format_args!("<g class=\"legend\" fill=\"{INK}\">"));
    for (i, (((name, _), values), style)) in
        series.iter().zip(data).zip(styles).take(shown).enumerate()
    {
        let y = TOP + 10.0 + LEGEND_ROW * i as f64;
        let (x0, x1) = (LEGEND_X, LEGEND_X + 24.0);
        match glyph {
            Glyph::Line | Glyph::LineAndPoint => {
                svg.line((x0, y), (x1, y), style.colour, style.width, style.dash);
                if glyph == Glyph::LineAndPoint {
                    svg.circle((x0 + x1) / 2.0, y, style);
                }
            }
            Glyph::Swatch => svg.rect(x0 + 5.0, y - 7.0, 14.0, 14.0, style),
        }
        let mut label = truncate(name, LEGEND_CHARS);
        if values.is_empty() {
            label.push_str(" (no data)");
        }
        let weight = if is_ours(name) {
            "font-weight=\"bold\""
        } else {
            ""
        };
        svg.text(x1 + 6.0, y + 4.0, "start", weight, &label);
    }
    if shown < series.len() {
        let y = TOP + 10.0 + LEGEND_ROW * shown as f64;
        svg.text(
            LEGEND_X,
            y + 4.0,
            "start",
            "",
            &format!("+{} more", series.len() - shown),
        );
    }
    svg.raw(format_args!("</g>"));
}

/// A figure with only its title and "no data".
fn no_data(title: &str) -> String {
    let mut svg = Svg::new(title);
    svg.raw(format_args!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{GRID}\"/>",
        N(LEFT),
        N(TOP),
        N(RIGHT - LEFT),
        N(BOTTOM - TOP),
    ));
    svg.text(
        (LEFT + RIGHT) / 2.0,
        (TOP + BOTTOM) / 2.0,
        "middle",
        &format!("fill=\"{MARKER}\" font-size=\"16\""),
        "no data",
    );
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunInfo;

    /// A minimal well-formedness check: tags nest and close, attributes are quoted, `&` starts
    /// an entity, and there is exactly one root element, `<svg>`.
    fn check_xml(doc: &str) -> Result<(), String> {
        fn check_chars(s: &str) -> Result<(), String> {
            for (i, _) in s.match_indices('&') {
                let rest = &s[i..];
                let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                    .iter()
                    .any(|e| rest.starts_with(e));
                if !entity {
                    return Err(format!("bare & in {s:?}"));
                }
            }
            if s.contains('>') || s.contains('<') {
                return Err(format!("bare < or > in {s:?}"));
            }
            Ok(())
        }
        if !doc.starts_with("<svg") {
            return Err("does not start with <svg".into());
        }
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = doc;
        while let Some(open) = rest.find('<') {
            check_chars(&rest[..open])?;
            if stack.is_empty() && !rest[..open].trim().is_empty() {
                return Err("text outside the root".into());
            }
            rest = &rest[open + 1..];
            let close = rest.find('>').ok_or("tag not closed")?;
            let tag = &rest[..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            if stack.is_empty() {
                roots += 1;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?;
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            let attrs = &body[name.len()..];
            for part in attrs.split('"').step_by(2) {
                // Between values: ` name=`; a value must follow every `=`.
                check_chars(part)?;
            }
            for part in attrs.split('"').skip(1).step_by(2) {
                check_chars(part)?;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_chars(rest)?;
        if !rest.trim().is_empty() {
            return Err("text after the root".into());
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    /// Checks every figure should pass.
    fn assert_valid(svg: &str) {
        if let Err(e) = check_xml(svg) {
            panic!("not well-formed: {e}\n{svg}");
        }
        assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        let lower = svg.to_ascii_lowercase();
        assert!(!lower.contains("nan"), "NaN in output");
        assert!(!lower.contains("inf"), "inf in output");
        // Every number in a coordinate attribute parses and is finite.
        for attr in [
            "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "width", "height",
        ] {
            let key = format!(" {attr}=\"");
            for (i, _) in svg.match_indices(&key) {
                let v = &svg[i + key.len()..];
                let v = &v[..v.find('"').expect("closing quote")];
                let n: f64 = v
                    .parse()
                    .unwrap_or_else(|_| panic!("{attr}={v:?} is not a number"));
                assert!(n.is_finite());
            }
        }
    }

    /// The points of every polyline, in order.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.match_indices("<polyline points=\"")
            .map(|(i, m)| {
                let rest = &svg[i + m.len()..];
                rest[..rest.find('"').expect("closing quote")]
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').expect("x,y");
                        (x.parse().expect("x"), y.parse().expect("y"))
                    })
                    .collect()
            })
            .collect()
    }

    /// The stroke colour of each polyline.
    fn strokes(svg: &str) -> Vec<(String, f64)> {
        svg.lines()
            .filter(|l| l.starts_with("<polyline"))
            .map(|l| {
                let attr = |key: &str| {
                    let i = l.find(key).expect("attribute") + key.len();
                    l[i..i + l[i..].find('"').expect("quote")].to_string()
                };
                (
                    attr(" stroke=\""),
                    attr("stroke-width=\"").parse().expect("width"),
                )
            })
            .collect()
    }

    fn latencies(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        // Deterministic, spread geometrically between lo and hi, not in order.
        (0..n)
            .map(|i| {
                let t = ((i * 7919) % n) as f64 / (n - 1).max(1) as f64;
                lo * (hi / lo).powf(t)
            })
            .collect()
    }

    fn cdf_series() -> Vec<(String, Vec<f64>)> {
        vec![
            ("round-robin".into(), latencies(500, 0.5, 5000.0)),
            ("synergai".into(), latencies(300, 2.0, 900.0)),
            ("least-loaded".into(), vec![40.0, 40.0, 40.0, 12.0]),
        ]
    }

    #[test]
    fn plot_cdf_is_valid_svg_with_one_line_and_legend_entry_per_series() {
        let series = cdf_series();
        let markers = vec![("target 100 ms".to_string(), 100.0)];
        let svg = latency_cdf("latency", &series, &markers);
        assert_valid(&svg);
        assert_eq!(svg.matches("<polyline").count(), series.len());
        for (name, _) in &series {
            assert!(
                svg.contains(&format!(">{name}</text>")),
                "legend lacks {name}"
            );
        }
        assert!(svg.contains(">target 100 ms</text>"));
        assert!(svg.contains("stroke-dasharray=\"6 4\""), "marker line");
        assert!(svg.contains("width=\"800\" height=\"500\""));
    }

    #[test]
    fn plot_cdf_lines_are_monotonic_and_reach_both_ends() {
        let series = cdf_series();
        let svg = latency_cdf("latency", &series, &[]);
        let lines = polylines(&svg);
        assert_eq!(lines.len(), series.len());
        for pts in &lines {
            assert!(pts.len() >= 2);
            for w in pts.windows(2) {
                assert!(w[1].0 >= w[0].0, "x goes back: {w:?}");
                // SVG y grows downwards: a rising fraction means a falling pixel y.
                assert!(w[1].1 <= w[0].1, "fraction falls: {w:?}");
            }
            let first = pts.first().expect("points");
            let last = pts.last().expect("points");
            assert_eq!(first.1, BOTTOM, "starts at fraction 0");
            assert_eq!(last.1, TOP, "ends at fraction 1");
        }
        // The thinning keeps big series small.
        let big = vec![("synergai".to_string(), latencies(100_000, 1.0, 1000.0))];
        let svg = latency_cdf("big", &big, &[]);
        assert!(
            polylines(&svg)[0].len() < 3000,
            "{} points",
            polylines(&svg)[0].len()
        );
        assert!(svg.len() < 100_000);
    }

    #[test]
    fn plot_synergai_gets_first_colour_and_thicker_line() {
        let series = vec![
            ("baseline".to_string(), vec![1.0, 2.0]),
            ("SynergAI".to_string(), vec![1.0, 3.0]),
            ("other".to_string(), vec![2.0, 3.0]),
        ];
        let svg = latency_cdf("t", &series, &[]);
        let s = strokes(&svg);
        assert_eq!(s[1].0, PALETTE[0]);
        assert!(s[1].1 > s[0].1 && s[1].1 > s[2].1);
        assert_ne!(s[0].0, PALETTE[0]);
        assert_ne!(s[2].0, PALETTE[0]);
        assert_ne!(s[0].0, s[2].0);
        // Without synergai, the first colour stays unused.
        let svg = latency_cdf("t", &series[..1], &[]);
        assert_ne!(strokes(&svg)[0].0, PALETTE[0]);
    }

    #[test]
    fn plot_styles_stay_distinct_past_the_palette() {
        let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let st = styles(names.iter().map(String::as_str));
        for i in 0..st.len() {
            for j in i + 1..st.len().min(i + (PALETTE.len() - 1) * DASHES.len()) {
                assert_ne!(st[i], st[j], "{i} and {j}");
            }
        }
    }

    #[test]
    fn plot_escapes_names_and_titles() {
        let name = "A&B <x> \"q\"".to_string();
        let svg = latency_cdf(
            "p&l <t>",
            &[(name.clone(), vec![1.0, 2.0])],
            &[("a<b".into(), 1.5)],
        );
        assert_valid(&svg);
        assert!(svg.contains("A&amp;B &lt;x&gt; &quot;q&quot;"));
        assert!(svg.contains("p&amp;l &lt;t&gt;"));
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("A&B"));
        let svg = violation_curve("&", "x & y", &[(name.clone(), vec![(1.0, 0.1)])]);
        assert_valid(&svg);
        assert!(svg.contains("x &amp; y"));
        let svg = bars("&", "<y>", &[(name, 1.0)]);
        assert_valid(&svg);
        assert!(svg.contains("&lt;y&gt;"));
        assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
    }

    #[test]
    fn plot_never_emits_non_finite_numbers() {
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300];
        let mut v = bad.to_vec();
        v.extend([3.0, 4.0, 10.0]);
        let svg = latency_cdf(
            "t",
            &[("a".into(), v), ("b".into(), bad.to_vec())],
            &[("skipped".into(), f64::NAN), ("t".into(), 5.0)],
        );
        assert_valid(&svg);
        assert!(!svg.contains(">skipped<"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(">b (no data)</text>"));

        let pts = vec![
            (f64::NAN, 0.1),
            (1.0, f64::INFINITY),
            (2.0, 0.2),
            (3.0, 0.3),
        ];
        let svg = violation_curve("t", "load", &[("a".into(), pts)]);
        assert_valid(&svg);
        assert_eq!(polylines(&svg)[0].len(), 2);

        let svg = bars("t", "y", &[("a".into(), f64::NAN), ("b".into(), 2.0)]);
        assert_valid(&svg);
        assert!(svg.contains(">n/a</text>"));
    }

    #[test]
    fn plot_empty_input_renders_no_data() {
        let empty_cdf: Vec<(String, Vec<f64>)> = vec![("a".into(), vec![f64::NAN])];
        let empty_curve: Vec<(String, Vec<(f64, f64)>)> = vec![("a".into(), vec![])];
        for svg in [
            latency_cdf("t", &[], &[]),
            latency_cdf("t", &empty_cdf, &[("target".into(), 100.0)]),
            violation_curve("t", "x", &[]),
            violation_curve("t", "x", &empty_curve),
            bars("t", "y", &[]),
            bars("t", "y", &[("a".into(), f64::INFINITY)]),
        ] {
            assert_valid(&svg);
            assert!(svg.contains(">no data</text>"));
            assert!(!svg.contains("<polyline"));
        }
    }

    #[test]
    fn plot_single_points_and_equal_values_render() {
        let svg = latency_cdf("t", &[("a".into(), vec![7.0])], &[]);
        assert_valid(&svg);
        assert_eq!(polylines(&svg)[0].len(), 2);
        let svg = latency_cdf(
            "t",
            &[("a".into(), vec![5.0; 10]), ("b".into(), vec![5.0])],
            &[],
        );
        assert_valid(&svg);
        let svg = latency_cdf("t", &[("zero".into(), vec![0.0, 0.0])], &[]);
        assert_valid(&svg);
        let svg = violation_curve("t", "x", &[("a".into(), vec![(50.0, 0.0)])]);
        assert_valid(&svg);
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "one point, one legend marker"
        );
        let svg = violation_curve("t", "x", &[("a".into(), vec![(50.0, 0.2), (50.0, 0.2)])]);
        assert_valid(&svg);
        let svg = bars("t", "y", &[("a".into(), 3.0), ("b".into(), 3.0)]);
        assert_valid(&svg);
        let svg = bars("t", "y", &[("a".into(), 0.0)]);
        assert_valid(&svg);
        let svg = bars("t", "y", &[("a".into(), -2.0), ("b".into(), 1.0)]);
        assert_valid(&svg);
    }

    #[test]
    fn plot_violation_curve_sorts_by_load_and_shows_percent() {
        let series = vec![
            (
                "synergai".to_string(),
                vec![(90.0, 0.02), (50.0, 0.0), (70.0, 0.01)],
            ),
            (
                "fifo".to_string(),
                vec![(70.0, 0.2), (50.0, 0.05), (90.0, 0.37)],
            ),
        ];
        let svg = violation_curve("violations", "offered load (% of capacity)", &series);
        assert_valid(&svg);
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2);
        for pts in &lines {
            assert_eq!(pts.len(), 3);
            assert!(pts.windows(2).all(|w| w[1].0 > w[0].0));
        }
        // 37% rounds up to a 40% axis.
        assert!(svg.contains(">40</text>"));
        assert_eq!(Scale::from_zero(0.0, 37.0, 5).hi, 40.0);
        assert!(svg.contains(">violation rate (%)</text>"));
        assert_eq!(svg.matches("<circle").count(), 6 + 2);
        assert!(svg.contains(">synergai</text>") && svg.contains(">fifo</text>"));
    }

    #[test]
    fn plot_bars_one_per_name() {
        let data = vec![
            ("synergai".to_string(), 1.0),
            ("round-robin".to_string(), 3.4),
            ("random".to_string(), 5.2),
        ];
        let svg = bars("violation ratio", "violations / synergai's", &data);
        assert_valid(&svg);
        // Background plus one rect per bar plus one swatch per legend entry.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * data.len());
        assert!(svg.contains(">5.2</text>"));
        assert!(svg.contains(&format!("fill=\"{}\"", PALETTE[0])));
        let many: Vec<(String, f64)> = (0..40)
            .map(|i| (format!("baseline-{i}"), i as f64))
            .collect();
        let svg = bars("many", "y", &many);
        assert_valid(&svg);
        assert!(svg.contains("more</text>"), "legend overflow noted");
    }

    #[test]
    fn plot_log_scale_for_wide_latency_ranges() {
        let x = Scale::auto(0.5, 5000.0, 6);
        assert!(x.log);
        assert_eq!((x.lo, x.hi), (0.5, 5000.0));
        for t in [1.0, 10.0, 100.0, 1000.0] {
            assert!(
                x.ticks.iter().any(|v| (v - t).abs() < 1e-9 * t),
                "{t} in {:?}",
                x.ticks
            );
        }
        assert!(x.ticks.len() <= 10);
        let svg = latency_cdf("t", &[("a".into(), vec![0.5, 3.0, 5000.0])], &[]);
        assert!(svg.contains(", log scale</text>"));
        assert!(svg.contains(">1000</text>") && svg.contains(">0.5</text>"));

        // Narrow ranges stay linear, as do ranges with zero.
        assert!(!Scale::auto(10.0, 300.0, 6).log);
        assert!(!Scale::auto(0.0, 5000.0, 6).log);
        assert!(Scale::auto(10.0, 400.0, 6).log);
        // A narrow log range labels its 1-2-5 values.
        let x = Scale::auto(3.0, 400.0, 6);
        assert_eq!(
            x.ticks,
            vec![2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        // A very wide one thins to a few powers of ten.
        let x = Scale::auto(1e-6, 1e9, 6);
        assert!(x.log && x.ticks.len() <= 12, "{:?}", x.ticks);
        // Mapping is monotonic and covers [0, 1].
        let x = Scale::auto(0.5, 5000.0, 6);
        assert_eq!(x.frac(0.5), 0.0);
        assert_eq!(x.frac(5000.0), 1.0);
        assert!((x.frac(50.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn plot_nice_ticks_are_1_2_5_sequences() {
        for (lo, hi, target) in [
            (0.0, 1.0, 5),
            (0.0, 37.0, 5),
            (13.0, 87.0, 6),
            (-3.0, 7.5, 5),
            (0.001, 0.0042, 4),
            (120.0, 80_000.0, 6),
            (1e-5, 3e-5, 5),
        ] {
            let ticks = nice_ticks(lo, hi, target);
            assert!(ticks.len() >= 2, "{lo}..{hi}: {ticks:?}");
            assert!(ticks.len() <= 2 * target + 2, "{lo}..{hi}: {ticks:?}");
            let tol = 1e-9 * (hi - lo);
            let last = *ticks.last().expect("ticks");
            assert!(
                ticks[0] <= lo + tol && last >= hi - tol,
                "{lo}..{hi}: {ticks:?}"
            );
            let step = ticks[1] - ticks[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                "step {step} of {ticks:?}"
            );
            for w in ticks.windows(2) {
                assert!(
                    (w[1] - w[0] - step).abs() < 1e-9 * step.max(1.0),
                    "{ticks:?}"
                );
            }
            for t in &ticks {
                assert!(
                    ((t / step) - (t / step).round()).abs() < 1e-6,
                    "{t} not a multiple"
                );
            }
        }
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(nice_ticks(0.0, 37.0, 5), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        assert!(nice_ticks(1.0, 1.0, 5).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.15), 0.2);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!((floor_125(0.7), ceil_125(0.7)), (0.5, 1.0));
        assert_eq!((floor_125(1000.0), ceil_125(1000.0)), (1000.0, 1000.0));
        assert_eq!((floor_125(4321.0), ceil_125(4321.0)), (2000.0, 5000.0));
    }

    #[test]
    fn plot_numbers_format_plainly() {
        assert_eq!(fmt_num(0.6000000000000001), "0.6");
        assert_eq!(fmt_num(1000.0), "1000");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(2.5e-5), "2.5e-5");
        assert_eq!(fmt_num(3e9), "3e9");
        assert_eq!(fmt_sig(0.123456, 4), "0.1235");
        assert_eq!(fmt_sig(12345.6, 4), "12350");
        assert_eq!(N(f64::NAN).to_string(), "0");
        assert_eq!(N(12.0).to_string(), "12");
        assert_eq!(N(12.25).to_string(), "12.2");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn plot_output_is_deterministic() {
        let series = cdf_series();
        assert_eq!(
            latency_cdf("t", &series, &[]),
            latency_cdf("t", &series, &[])
        );
        let curve = vec![("a".to_string(), vec![(1.0, 0.1), (2.0, 0.2)])];
        assert_eq!(
            violation_curve("t", "x", &curve),
            violation_curve("t", "x", &curve)
        );
    }

    #[test]
    fn plot_violation_points_from_reports() {
        let report = |policy: &str, fraction: Option<f64>, rate: f64| {
            let mut r = Report::new(
                RunInfo {
                    policy: policy.into(),
                    duration_s: 10.0,
                    load_fraction: fraction,
                    ..RunInfo::default()
                },
                &[],
            );
            r.violation_rate = rate;
            r
        };
        let reports = vec![
            report("fifo", Some(0.9), 0.3),
            report("synergai", Some(0.9), 0.01),
            report("fifo", Some(0.5), 0.1),
            report("synergai", Some(0.5), 0.0),
        ];
        let (label, series) = violation_points(&reports);
        assert!(label.contains('%'));
        assert_eq!(series[0].0, "synergai");
        assert_eq!(series[0].1, vec![(50.0, 0.0), (90.0, 0.01)]);
        assert_eq!(series[1].1, vec![(50.0, 0.1), (90.0, 0.3)]);
        assert_valid(&violation_curve("v", label, &series));

        let (label, _) = violation_points(&[report("fifo", None, 0.1)]);
        assert!(label.contains("requests/s"));
    }

    #[test]
    fn plot_xml_check_catches_broken_documents() {
        assert!(check_xml("<svg><g></svg>").is_err());
        assert!(check_xml("<svg><text>a & b</text></svg>").is_err());
        assert!(check_xml("<svg></svg><svg></svg>").is_err());
        assert!(check_xml("<svg x=\"1></svg>").is_err());
        assert!(check_xml("<svg><text>a &amp; b</text><g/></svg>").is_ok());
    }
}
