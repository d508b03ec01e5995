//! Plots for the run reports (`minipay bench --report`, `minipay chaos
//! --report`): a [`Chart`] of x/y [`Series`] over seconds since the start,
//! with shaded [`Band`]s for fault periods, rendered by [`svg`] into one
//! standalone `<svg>` element, and [`page`] for a whole self-contained HTML
//! document (no scripts, stylesheets or fonts fetched from anywhere).
//!
//! It knows nothing of payments, clusters or faults: callers turn their
//! figures into series and bands. Invariants: every number written into
//! the SVG is finite (points that are not, and points at or below zero on a
//! logarithmic axis, are left out rather than drawn at NaN); every text
//! taken from a caller goes through [`escape`]; a series draws at most
//! [`POINTS_MAX`] points, so a page stays small however long the run.

use std::fmt::Write as _;

/// The most points drawn for one series; longer series are downsampled,
/// keeping each stretch's lowest and highest point so spikes stay visible.
pub const POINTS_MAX: usize = 1_000;
/// Tick marks aimed for on a linear axis.
const TICKS_TARGET: f64 = 6.0;
/// The most tick marks on any axis (a logarithmic axis skips decades past it).
const TICKS_MAX: usize = 20;
/// A logarithmic axis spanning at most this many decades ticks 1, 2 and 5
/// times each power of ten; a wider one only the powers.
const LOG_DECADES_WITH_MULTIPLES: usize = 3;
/// Distinct colours for series, in order; series past these repeat them
/// dashed, so no two series look the same.
const SERIES_COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 250.0;
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_BOTTOM: f64 = 52.0;
const TITLE_HEIGHT: f64 = 28.0;
const LEGEND_ROW_HEIGHT: f64 = 16.0;
/// Width of one legend character, estimated (no font metrics in here).
const LEGEND_CHAR_WIDTH: f64 = 6.5;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Points joined in order.
    Line,
    /// One dot per point (raw latencies, say).
    Dots,
}

/// One named set of points; x is seconds since the start of the run.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

/// A shaded x-interval drawn behind the data (a fault period), labelled.
#[derive(Clone, Debug)]
pub struct Band {
    pub start: f64,
    pub end: f64,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    /// A logarithmic y axis (latencies spanning decades).
    pub log_y: bool,
}

/// Escapes text for HTML and XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A whole self-contained HTML document: the title, `summary_html` as given
/// (the caller escapes what it puts in), then each chart. Table cells are
/// left-aligned, except `<td class="number">`.
pub fn page(title: &str, summary_html: &str, charts: &[Chart]) -> String {
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(html, "<title>{}</title>", escape(title));
    html.push_str(
        "<style>\nbody { font-family: sans-serif; color: #222; max-width: 800px; \
         margin: 1.5em auto; padding: 0 1em; }\n\
         figure { margin: 1.5em 0; }\nsvg { max-width: 100%; height: auto; }\n\
         table { border-collapse: collapse; }\n\
         th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }\n\
         td.number { text-align: right; font-variant-numeric: tabular-nums; }\n\
         th { background: #f4f4f4; }\ncode, pre { font-size: 90%; }\n</style>\n",
    );
    html.push_str("</head>\n<body>\n");
    let _ = writeln!(html, "<h1>{}</h1>", escape(title));
    html.push_str(summary_html);
    html.push('\n');
    for chart in charts {
        html.push_str("<figure>\n");
        html.push_str(&svg(chart));
        html.push_str("</figure>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// One standalone `<svg>` element: title, legend, axes with ticks and
/// numbers, bands shaded behind the data with their labels, then the series.
pub fn svg(chart: &Chart) -> String {
    let drawn: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|series| downsample(&drawable_points(&series.points, chart.log_y)))
        .collect();
    let bands: Vec<(f64, f64, &str)> = chart
        .bands
        .iter()
        .filter(|band| band.start.is_finite() && band.end.is_finite())
        .map(|band| {
            (
                band.start.min(band.end),
                band.start.max(band.end),
                band.label.as_str(),
            )
        })
        .collect();
    let (x_axis, y_axis) = axes(&drawn, &bands, chart.log_y);

    let legend = legend_layout(&chart.series);
    let legend_rows = legend.last().map_or(0, |entry| entry.row + 1);
    let plot = PlotArea {
        left: MARGIN_LEFT,
        top: TITLE_HEIGHT + legend_rows as f64 * LEGEND_ROW_HEIGHT + 10.0,
        width: WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
        height: PLOT_HEIGHT,
    };
    let height = plot.top + plot.height + MARGIN_BOTTOM;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\">"
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&chart.title));
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        WIDTH / 2.0,
        escape(&chart.title)
    );
    write_legend(&mut out, &chart.series, &legend);
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>",
        plot.left, plot.top, plot.width, plot.height
    );
    write_bands(&mut out, &plot, &x_axis, &bands);
    write_axes(&mut out, &plot, &x_axis, &y_axis, chart);
    for (index, (series, points)) in chart.series.iter().zip(&drawn).enumerate() {
        write_series(
            &mut out,
            &plot,
            &x_axis,
            &y_axis,
            index,
            series.mark,
            points,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Where the data goes inside the SVG, in SVG units.
struct PlotArea {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl PlotArea {
    fn x(&self, axis: &Axis, value: f64) -> f64 {
        self.left + axis.fraction(value) * self.width
    }

    fn y(&self, axis: &Axis, value: f64) -> f64 {
        self.top + (1.0 - axis.fraction(value)) * self.height
    }
}

/// One axis: its drawn range (rounded out to ticks) and its tick values.
#[derive(Debug)]
struct Axis {
    min: f64,
    max: f64,
    ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    /// A linear axis covering `low..=high`, widened to round tick values.
    fn linear(low: f64, high: f64) -> Axis {
        assert!(
            low.is_finite() && high.is_finite(),
            "axis range {low}..{high}"
        );
        assert!(low <= high, "axis range {low}..{high}");
        let (low, high) = if low == high {
            if low == 0.0 {
                (0.0, 1.0)
            } else {
                (low - low.abs() / 2.0, high + high.abs() / 2.0)
            }
        } else {
            (low, high)
        };
        let step = nice_step((high - low) / TICKS_TARGET);
        let min = (low / step).floor() * step;
        let max = (high / step).ceil() * step;
        let mut ticks = Vec::new();
        let mut index = 0.0;
        while min + index * step <= max + step * 1e-9 {
            assert!(
                ticks.len() <= TICKS_MAX,
                "ticks for {min}..{max} step {step}"
            );
            ticks.push(min + index * step);
            index += 1.0;
        }
        assert!(ticks.len() >= 2);
        Axis {
            min,
            max,
            ticks,
            log: false,
        }
    }

    /// A logarithmic axis covering `low..=high` (both above zero), widened
    /// to whole decades; a tick per decade, or per several when they are many.
    fn logarithmic(low: f64, high: f64) -> Axis {
        assert!(
            low > 0.0 && low <= high && high.is_finite(),
            "axis range {low}..{high}"
        );
        let exponent_low = low.log10().floor() as i32;
        let mut exponent_high = high.log10().ceil() as i32;
        if exponent_high == exponent_low {
            exponent_high += 1;
        }
        let decades = (exponent_high - exponent_low) as usize;
        let stride = decades.div_ceil(TICKS_MAX - 1).max(1);
        // Over a few decades, 2 and 5 times each power are ticked too, so
        // the reader has more than two or three numbers to go by.
        let multiples: &[f64] = if decades <= LOG_DECADES_WITH_MULTIPLES {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        let ticks: Vec<f64> = (exponent_low..=exponent_high)
            .step_by(stride)
            .flat_map(|exponent| multiples.iter().map(move |m| m * 10f64.powi(exponent)))
            .filter(|&tick| tick <= 10f64.powi(exponent_high))
            .collect();
        assert!(ticks.len() <= TICKS_MAX);
        Axis {
            min: 10f64.powi(exponent_low),
            max: 10f64.powi(exponent_high),
            ticks,
            log: true,
        }
    }

    /// Where `value` lies along the axis, 0 at `min` and 1 at `max`.
    fn fraction(&self, value: f64) -> f64 {
        let fraction = if self.log {
            (value.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (value - self.min) / (self.max - self.min)
        };
        debug_assert!(fraction.is_finite(), "{value} on {self:?}");
        fraction
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    assert!(raw > 0.0 && raw.is_finite(), "step {raw}");
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The points that can be drawn: finite, and above zero on a log axis.
fn drawable_points(points: &[(f64, f64)], log_y: bool) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0))
        .collect()
}

/// At most [`POINTS_MAX`] of `points`, in order: each of `POINTS_MAX / 2`
/// stretches keeps its lowest and its highest point.
fn downsample(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= POINTS_MAX {
        return points.to_vec();
    }
    let stretch = points.len().div_ceil(POINTS_MAX / 2);
    let mut kept = Vec::with_capacity(POINTS_MAX);
    for chunk in points.chunks(stretch) {
        let lowest = (0..chunk.len()).min_by(|&a, &b| chunk[a].1.total_cmp(&chunk[b].1));
        let highest = (0..chunk.len()).max_by(|&a, &b| chunk[a].1.total_cmp(&chunk[b].1));
        let (Some(lowest), Some(highest)) = (lowest, highest) else {
            unreachable!("chunks are never empty")
        };
        kept.push(chunk[lowest.min(highest)]);
        if lowest != highest {
            kept.push(chunk[lowest.max(highest)]);
        }
    }
    assert!(kept.len() <= POINTS_MAX, "{} points kept", kept.len());
    kept
}

/// Both axes, covering every drawable point and every band; x starts at
/// zero, and so does a linear y, unless something lies below it.
fn axes(drawn: &[Vec<(f64, f64)>], bands: &[(f64, f64, &str)], log_y: bool) -> (Axis, Axis) {
    let xs = drawn
        .iter()
        .flatten()
        .map(|point| point.0)
        .chain(bands.iter().flat_map(|band| [band.0, band.1]));
    let (x_low, x_high) = bounds(xs).unwrap_or((0.0, 1.0));
    let x_axis = Axis::linear(x_low.min(0.0), x_high.max(0.0));
    let ys = drawn.iter().flatten().map(|point| point.1);
    let y_axis = match (bounds(ys), log_y) {
        (Some((low, high)), true) => Axis::logarithmic(low, high),
        (None, true) => Axis::logarithmic(1.0, 10.0),
        (Some((low, high)), false) => Axis::linear(low.min(0.0), high.max(0.0)),
        (None, false) => Axis::linear(0.0, 1.0),
    };
    (x_axis, y_axis)
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, value| match range {
        None => Some((value, value)),
        Some((low, high)) => Some((low.min(value), high.max(value))),
    })
}

/// A tick's number: short, no trailing zeros, exponents for the extremes.
fn format_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs();
    if !(1e-3..1e7).contains(&magnitude) {
        return format!("{value:e}");
    }
    let fixed = format!("{value:.3}");
    fixed
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

struct LegendEntry {
    x: f64,
    row: usize,
}

/// Legend entries left to right, wrapping onto more rows when wide.
fn legend_layout(series: &[Series]) -> Vec<LegendEntry> {
    let mut entries = Vec::with_capacity(series.len());
    let (mut x, mut row) = (MARGIN_LEFT, 0);
    for one in series {
        let width = 28.0 + one.name.chars().count() as f64 * LEGEND_CHAR_WIDTH + 16.0;
        if x + width > WIDTH - MARGIN_RIGHT && x > MARGIN_LEFT {
            x = MARGIN_LEFT;
            row += 1;
        }
        entries.push(LegendEntry { x, row });
        x += width;
    }
    entries
}

fn series_style(index: usize) -> (&'static str, &'static str) {
    let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
    let dash = if index >= SERIES_COLOURS.len() {
        " stroke-dasharray=\"5 3\""
    } else {
        ""
    };
    (colour, dash)
}

fn write_legend(out: &mut String, series: &[Series], legend: &[LegendEntry]) {
    assert_eq!(series.len(), legend.len());
    for (index, (one, entry)) in series.iter().zip(legend).enumerate() {
        let (colour, dash) = series_style(index);
        let y = TITLE_HEIGHT + entry.row as f64 * LEGEND_ROW_HEIGHT + 4.0;
        out.push_str("<g>");
        match one.mark {
            Mark::Line => {
                let _ = write!(
                    out,
                    "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
                    entry.x,
                    entry.x + 22.0
                );
            }
            Mark::Dots => {
                let _ = write!(
                    out,
                    "<circle cx=\"{}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>",
                    entry.x + 11.0
                );
            }
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text></g>",
            entry.x + 28.0,
            y + 4.0,
            escape(&one.name)
        );
    }
}

/// Rows of band labels at most; a label that fits in none is left out (its
/// band still shows it on hover, as its `<title>`).
pub const BAND_LABEL_ROWS_MAX: usize = 5;

/// The width a label takes at font size 10, roughly (for placing labels
/// without overlap; no font metrics here).
fn label_width(label: &str) -> f64 {
    label.chars().count() as f64 * 5.6 + 4.0
}

fn write_bands(out: &mut String, plot: &PlotArea, x_axis: &Axis, bands: &[(f64, f64, &str)]) {
    // Where each row of labels ends so far: a label goes in the first row
    // it does not overlap.
    let mut row_ends: Vec<f64> = Vec::with_capacity(BAND_LABEL_ROWS_MAX);
    for &(start, end, label) in bands {
        let left = plot.x(x_axis, start);
        // A zero-length band (an instant fault) still shows as a thin strip.
        let width = (plot.x(x_axis, end) - left).max(1.0);
        let _ = writeln!(
            out,
            "<rect class=\"band\" x=\"{left:.1}\" y=\"{}\" width=\"{width:.1}\" height=\"{}\" \
             fill=\"#f4a261\" fill-opacity=\"0.25\"><title>{}</title></rect>",
            plot.top,
            plot.height,
            escape(label)
        );
        let text_left = left + 2.0;
        let row = match row_ends.iter().position(|&row_end| row_end <= text_left) {
            Some(row) => row,
            None if row_ends.len() < BAND_LABEL_ROWS_MAX => {
                row_ends.push(f64::NEG_INFINITY);
                row_ends.len() - 1
            }
            None => continue,
        };
        row_ends[row] = text_left + label_width(label);
        let label_y = plot.top + 12.0 + row as f64 * 12.0;
        let _ = writeln!(
            out,
            "<text x=\"{text_left:.1}\" y=\"{label_y}\" font-size=\"10\" fill=\"#8a4b08\">{}</text>",
            escape(label)
        );
    }
}

fn write_axes(out: &mut String, plot: &PlotArea, x_axis: &Axis, y_axis: &Axis, chart: &Chart) {
    let bottom = plot.top + plot.height;
    for &tick in &x_axis.ticks {
        let x = plot.x(x_axis, tick);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eeeeee\"/>\
             <line x1=\"{x:.1}\" y1=\"{bottom}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#444444\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            plot.top,
            bottom,
            bottom + 5.0,
            bottom + 17.0,
            format_number(tick)
        );
    }
    for &tick in &y_axis.ticks {
        let y = plot.y(y_axis, tick);
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eeeeee\"/>\
             <line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#444444\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            plot.left,
            plot.left + plot.width,
            plot.left - 5.0,
            plot.left,
            plot.left - 8.0,
            y + 4.0,
            format_number(tick)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        plot.left + plot.width / 2.0,
        bottom + 38.0,
        escape(&chart.x_label)
    );
    let y_middle = plot.top + plot.height / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"16\" y=\"{y_middle}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {y_middle})\">{}</text>",
        escape(&chart.y_label)
    );
}

fn write_series(
    out: &mut String,
    plot: &PlotArea,
    x_axis: &Axis,
    y_axis: &Axis,
    index: usize,
    mark: Mark,
    points: &[(f64, f64)],
) {
    let (colour, dash) = series_style(index);
    let positions = points
        .iter()
        .map(|&(x, y)| (plot.x(x_axis, x), plot.y(y_axis, y)));
    // A line of one point would draw nothing: it shows as a dot instead.
    if mark == Mark::Line && points.len() >= 2 {
        let mut coordinates = String::with_capacity(points.len() * 14);
        for (x, y) in positions {
            let _ = write!(coordinates, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash} points=\"{}\"/>",
            coordinates.trim_end()
        );
    } else if !points.is_empty() {
        let _ = write!(out, "<g fill=\"{colour}\">");
        for (x, y) in positions {
            let _ = write!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\"/>");
        }
        out.push_str("</g>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every element opened is closed in order, the way an XML
    /// parser would, skipping `<!DOCTYPE …>`; returns the element names seen.
    fn assert_balanced(text: &str) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("a tag is closed") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a '<' inside the tag {tag:?}");
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing {name}");
                continue;
            }
            let name = tag
                .split_whitespace()
                .next()
                .expect("a tag name")
                .trim_end_matches('/');
            seen.push(name.to_string());
            if !tag.ends_with('/') && name != "meta" {
                open.push(name.to_string());
            }
        }
        assert!(open.is_empty(), "never closed: {open:?}");
        seen
    }

    fn assert_numbers_finite(text: &str) {
        assert!(!text.contains("NaN"), "NaN in {text}");
        assert!(!text.contains("inf"), "infinity in {text}");
    }

    fn line(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            mark: Mark::Line,
            points,
        }
    }

    fn chart(series: Vec<Series>, bands: Vec<Band>, log_y: bool) -> Chart {
        Chart {
            title: "payments".to_string(),
            x_label: "seconds".to_string(),
            y_label: "payments/s".to_string(),
            series,
            bands,
            log_y,
        }
    }

    #[test]
    fn escape_replaces_markup_characters() {
        assert_eq!(
            escape(r#"a<b & "c" 'd'>"#),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn svg_is_balanced_and_escapes_every_caller_text() {
        let mut chart = chart(
            vec![
                line("p<50>", vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]),
                Series {
                    name: "raw & \"dots\"".to_string(),
                    mark: Mark::Dots,
                    points: vec![(0.5, 2.5), (1.5, 0.5)],
                },
            ],
            vec![Band {
                start: 0.5,
                end: 1.2,
                label: "kill <bank-a>".to_string(),
            }],
            false,
        );
        chart.title = "a < b & c".to_string();
        chart.y_label = "\"ms\"".to_string();
        let svg = svg(&chart);
        let elements = assert_balanced(&svg);
        assert_eq!(elements[0], "svg");
        assert!(elements.contains(&"polyline".to_string()));
        assert!(elements.contains(&"circle".to_string()));
        for raw in [
            "p<50>",
            "raw & \"dots\"",
            "kill <bank-a>",
            "a < b & c",
            "\"ms\"",
        ] {
            assert!(!svg.contains(raw), "unescaped {raw}");
        }
        for escaped in [
            "p&lt;50&gt;",
            "raw &amp; &quot;dots&quot;",
            "kill &lt;bank-a&gt;",
        ] {
            assert!(svg.contains(escaped), "missing {escaped}");
        }
        assert_numbers_finite(&svg);
    }

    #[test]
    fn empty_charts_and_single_points_draw_without_dividing_by_zero() {
        for log_y in [false, true] {
            let cases = [
                chart(vec![], vec![], log_y),
                chart(vec![line("empty", vec![])], vec![], log_y),
                chart(vec![line("one", vec![(3.0, 7.0)])], vec![], log_y),
                chart(
                    vec![line("flat", vec![(0.0, 5.0), (0.0, 5.0)])],
                    vec![],
                    log_y,
                ),
                chart(
                    vec![line("nan", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)])],
                    vec![],
                    log_y,
                ),
            ];
            for case in &cases {
                let svg = svg(case);
                assert_balanced(&svg);
                assert_numbers_finite(&svg);
            }
        }
        let single = svg(&chart(vec![line("one", vec![(3.0, 7.0)])], vec![], false));
        assert!(single.contains("<circle"), "a single point shows as a dot");
    }

    #[test]
    fn log_y_leaves_out_zeros_and_ticks_decades() {
        let svg = svg(&chart(
            vec![line(
                "p99",
                vec![(0.0, 0.0), (1.0, 0.5), (2.0, 40.0), (3.0, 0.0)],
            )],
            vec![],
            true,
        ));
        assert_balanced(&svg);
        assert_numbers_finite(&svg);
        for tick in [">0.1<", ">0.2<", ">1<", ">5<", ">10<", ">100<"] {
            assert!(svg.contains(tick), "tick {tick} in {svg}");
        }
        let polyline = svg.split("points=\"").nth(1).expect("a polyline");
        let drawn = polyline.split('"').next().expect("its points");
        assert_eq!(
            drawn.split_whitespace().count(),
            2,
            "only the positive points"
        );
    }

    #[test]
    fn crowded_band_labels_never_overlap_and_the_rest_are_titles() {
        let bands: Vec<Band> = (0..80)
            .map(|index| Band {
                start: f64::from(index) * 0.25,
                end: f64::from(index) * 0.25 + 0.1,
                label: format!("pause bank_{index}"),
            })
            .collect();
        let svg = svg(&chart(
            vec![line("rate", vec![(0.0, 1.0), (20.0, 2.0)])],
            bands,
            false,
        ));
        assert_balanced(&svg);
        // Every band names its fault on hover.
        assert_eq!(svg.matches("<title>pause bank_").count(), 80);
        // Drawn labels: (row y, left x, text); none overlaps another in its row.
        let mut drawn: Vec<(String, f64, String)> = svg
            .lines()
            .filter(|line| line.contains("fill=\"#8a4b08\""))
            .map(|line| {
                let attr = |name: &str| {
                    line.split(&format!("{name}=\""))
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_owned()
                };
                let text = line
                    .split('>')
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .to_owned();
                (attr("y"), attr("x").parse().unwrap(), text)
            })
            .collect();
        assert!(drawn.len() < 80, "some labels left to their titles");
        assert!(drawn.len() >= BAND_LABEL_ROWS_MAX, "the rows are used");
        let rows: std::collections::BTreeSet<&str> =
            drawn.iter().map(|(y, _, _)| y.as_str()).collect();
        assert!(rows.len() <= BAND_LABEL_ROWS_MAX);
        drawn.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for pair in drawn.windows(2) {
            if pair[0].0 == pair[1].0 {
                assert!(
                    pair[0].1 + label_width(&pair[0].2) <= pair[1].1,
                    "{pair:?} overlap"
                );
            }
        }
    }

    #[test]
    fn bands_are_shaded_behind_the_data_with_their_labels() {
        let svg = svg(&chart(
            vec![line("rate", vec![(0.0, 10.0), (10.0, 12.0)])],
            vec![
                Band {
                    start: 2.0,
                    end: 4.0,
                    label: "partition".to_string(),
                },
                Band {
                    start: 6.0,
                    end: 6.0,
                    label: "kill gateway".to_string(),
                },
                Band {
                    start: 30.0,
                    end: 20.0,
                    label: "pause bank-b".to_string(),
                },
            ],
            false,
        ));
        assert_balanced(&svg);
        assert_eq!(svg.matches("class=\"band\"").count(), 3);
        for label in ["partition", "kill gateway", "pause bank-b"] {
            assert!(svg.contains(label), "label {label}");
        }
        assert!(
            svg.find("class=\"band\"") < svg.find("<polyline"),
            "bands drawn first"
        );
        assert!(svg.contains(">30<"), "the x axis reaches the last band");
    }

    #[test]
    fn long_series_are_downsampled_keeping_spikes() {
        let mut points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64 / 100.0, 1.0)).collect();
        points[54_321].1 = 999.0;
        let kept = downsample(&points);
        assert!(kept.len() <= POINTS_MAX);
        assert!(
            kept.iter().any(|point| point.1 == 999.0),
            "the spike survives"
        );
        assert!(
            kept.windows(2).all(|pair| pair[0].0 <= pair[1].0),
            "order kept"
        );
        let svg = svg(&chart(vec![line("long", points)], vec![], false));
        let polyline = svg.split("points=\"").nth(1).expect("a polyline");
        let drawn = polyline.split('"').next().expect("its points");
        assert!(drawn.split_whitespace().count() <= POINTS_MAX);
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        let axis = Axis::linear(0.0, 97.0);
        assert_eq!(axis.ticks, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let axis = Axis::linear(0.0, 0.0031);
        assert!(axis.max >= 0.0031 && axis.ticks.len() <= TICKS_MAX);
        let axis = Axis::logarithmic(1e-300, 1e300);
        assert!(axis.ticks.len() <= TICKS_MAX);
        let axis = Axis::logarithmic(3.0, 70.0);
        assert_eq!(axis.ticks, vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        let axis = Axis::logarithmic(0.5, 40_000.0);
        assert_eq!(axis.ticks.len(), 7, "decades only: {:?}", axis.ticks);
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(1_000.0), "1000");
        assert_eq!(format_number(0.0001), "1e-4");
    }

    #[test]
    fn page_is_self_contained_and_holds_every_chart() {
        let charts = [
            chart(vec![line("a", vec![(0.0, 1.0), (1.0, 2.0)])], vec![], false),
            chart(vec![line("b", vec![(0.0, 1.0), (1.0, 2.0)])], vec![], true),
        ];
        let html = page("bench <run>", "<p>42 payments</p>", &charts);
        assert_balanced(&html);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>bench &lt;run&gt;</title>"));
        assert!(html.contains("<p>42 payments</p>"));
        assert_eq!(html.matches("<svg").count(), 2);
        for external in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!html.contains(external), "{external} in the page");
        }
    }
}
