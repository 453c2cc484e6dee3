//! PNG charts for `selfcon report`: line charts of several named series (one per run, or per
//! output) and scatter maps of 2-D points coloured by class, drawn with plotters into an RGB
//! buffer and encoded with `image`. Text uses the bundled DejaVu Sans (assets/), so no system
//! font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bundled file is a valid TrueType font (checked by the tests).
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Tableau's ten colours: distinguishable, also for the ten classes of the CIFAR-10-like sets.
pub fn colour(i: usize) -> RGBColor {
    const PALETTE: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// An axis tick: whole numbers without a decimal point, others with at most 4 significant digits.
fn tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        let s = if v.abs() < 1e-3 { format!("{v:.1e}") } else { s };
        if s.contains('.') && !s.contains('e') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("cannot draw the chart: {e}"))
}

fn save_png(path: &Path, buffer: Vec<u8>, (w, h): (u32, u32)) -> Result<()> {
    let image = image::RgbImage::from_raw(w, h, buffer).ok_or_else(|| plot_error(path, "buffer size"))?;
    let tmp = path.with_extension("png.tmp");
    image
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot write: {e}")))
}

/// A line chart of `series` (each with its legend entry) to `path`; `log_y` for quantities
/// spanning decades (the learning rate). Series without points are left out; with no points at
/// all nothing is written and `false` returned.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<bool> {
    register_font();
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    if all.is_empty() {
        return Ok(false);
    }
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    if log_y {
        y0 = all.iter().map(|p| p.1).filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
        if y0 == f64::MAX {
            y0 = 1e-6;
        }
        y1 = y1.max(y0 * 10.0);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, (FONT, 22)).margin(14).x_label_area_size(44).y_label_area_size(70);
        let draw = |chart_result: std::result::Result<(), String>| chart_result.map_err(|e| plot_error(path, e));
        if log_y {
            let mut chart =
                builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(|e| plot_error(path, e))?;
            draw(lines(&mut chart, x_label, y_label, series, true))?;
        } else {
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| plot_error(path, e))?;
            draw(lines(&mut chart, x_label, y_label, series, false))?;
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    save_png(path, buffer, (WIDTH, HEIGHT))?;
    Ok(true)
}

fn lines<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> std::result::Result<(), String>
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate().filter(|(_, s)| !s.points.is_empty()) {
        let c = colour(i);
        // Non-positive values have no place on a log axis.
        let points = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0));
        let drawn = if s.points.len() <= 30 {
            // Few points (per epoch): a marker on each.
            chart
                .draw_series(PointSeries::of_element(points.clone(), 4, c.filled(), &|p, size, style| {
                    EmptyElement::at(p) + Circle::new((0, 0), size, style)
                }))
                .map_err(|e| e.to_string())?;
            chart.draw_series(LineSeries::new(points, c.stroke_width(2))).map_err(|e| e.to_string())?
        } else {
            chart.draw_series(LineSeries::new(points, c.stroke_width(2))).map_err(|e| e.to_string())?
        };
        drawn
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// A scatter map: `points[i]` coloured by `classes[i]`, with a legend of `class_names`.
pub fn scatter_map(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    classes: &[i64],
    class_names: &[String],
) -> Result<()> {
    register_font();
    const SIDE: u32 = 620;
    let (w, h) = (SIDE + 170, SIDE);
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points.iter().map(f).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.04).max(1e-9);
        (lo - pad)..(hi + pad)
    };
    let (xs, ys) = (bounds(|p| p.0), bounds(|p| p.1));
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let (plot_area, legend_area) = root.split_horizontally(SIDE);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, (FONT, 20))
            .margin(10)
            .build_cartesian_2d(xs, ys)
            .map_err(|e| plot_error(path, e))?;
        chart.configure_mesh().disable_mesh().disable_axes().draw().map_err(|e| plot_error(path, e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .zip(classes)
                    .map(|(p, &c)| Circle::new(*p, 2, colour(c.max(0) as usize).mix(0.75).filled())),
            )
            .map_err(|e| plot_error(path, e))?;
        for (i, name) in class_names.iter().enumerate() {
            let y = 60 + i as i32 * 26;
            legend_area
                .draw(&Circle::new((14, y), 6, colour(i).filled()))
                .and_then(|_| legend_area.draw(&Text::new(name.clone(), (28, y - 9), (FONT, 15))))
                .map_err(|e| plot_error(path, e))?;
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    save_png(path, buffer, (w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_font_is_a_font() {
        assert!(plotters::style::register_font("selfcon-test", FontStyle::Normal, FONT_BYTES).is_ok());
    }

    #[test]
    fn charts_are_pngs_that_are_not_blank() {
        let dir = tempfile::tempdir().unwrap();
        let line = dir.path().join("line.png");
        let series = vec![
            Series { name: "a".into(), points: (0..50).map(|i| (i as f64, (i as f64).sin())).collect() },
            Series { name: "b".into(), points: vec![(0.0, 0.5), (10.0, 0.2)] },
        ];
        assert!(line_chart(&line, "t", "x", "y", &series, false).unwrap());
        assert!(!line_chart(&dir.path().join("none.png"), "t", "x", "y", &[], false).unwrap());
        let map = dir.path().join("map.png");
        let points: Vec<(f64, f64)> = (0..100).map(|i| ((i % 10) as f64, (i / 10) as f64)).collect();
        let classes: Vec<i64> = (0..100).map(|i| i % 10).collect();
        scatter_map(&map, "m", &points, &classes, &(0..10).map(|c| format!("class {c}")).collect::<Vec<_>>()).unwrap();
        for path in [line, map] {
            let img = image::open(&path).unwrap().to_rgb8();
            let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
            assert!(distinct.len() > 10, "{}: {} colours", path.display(), distinct.len());
        }
    }
}
