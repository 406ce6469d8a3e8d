//! Training curves as PNG: the loss, diffusion and validation series of one or more runs'
//! `metrics.jsonl`, drawn with plotters and a font compiled into the binary (no system fonts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

use super::{read_metric_log, MetricPoint, Split};
use crate::{Error, Result};

/// DejaVu Sans (Bitstream Vera license, data/fonts/DejaVu-LICENSE.txt).
const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");
const FAMILY: &str = "noiseda-sans";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font does not parse. This is a bug.");
        }
    });
}

/// A named run: its label in the legend and its metric points.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub points: Vec<MetricPoint>,
}

impl Run {
    /// Loads `dir/metrics.jsonl`.
    pub fn load(label: impl Into<String>, dir: &Path) -> Result<Self> {
        Ok(Self {
            label: label.into(),
            points: read_metric_log(&dir.join("metrics.jsonl"))?,
        })
    }

    /// (step, value) of one series, in step order.
    pub fn series(&self, split: Split, series: &str) -> Vec<(f64, f64)> {
        let by_step: BTreeMap<u64, f64> = self
            .points
            .iter()
            .filter(|p| p.split == split && p.series == series && p.value.is_finite())
            .map(|p| (p.step, p.value))
            .collect();
        by_step.into_iter().map(|(s, v)| (s as f64, v)).collect()
    }
}

/// Exponential moving average (weight `alpha` on the past), for noisy per-step losses.
fn smooth(points: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let mut acc = None;
    points
        .iter()
        .map(|&(x, y)| {
            let s = acc.map_or(y, |a: f64| alpha * a + (1.0 - alpha) * y);
            acc = Some(s);
            (x, s)
        })
        .collect()
}

/// One line of a panel; `color` indexes [`COLORS`] (one colour per run across panels).
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    color: usize,
}

/// One panel: a title, its lines and where the legend sits (away from where curves usually
/// are: losses fall, PSNR rises).
struct Panel {
    title: String,
    /// Label of the x axis ("step" unless said otherwise).
    x_label: &'static str,
    lines: Vec<Line>,
    legend: SeriesLabelPosition,
}

/// The tab10 palette; the last (grey) is kept for reference lines.
const COLORS: [RGBColor; 11] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(127, 127, 127),
];

/// Draws the training curves of `runs` side by side: smoothed Charbonnier loss, the diffusion
/// MSEs (runs that have them) and validation PSNR, with `reference_psnr` (e.g. the noisy
/// input's) as a dashed line. Returns the path written.
pub fn training_curves(
    runs: &[Run],
    reference_psnr: Option<(&str, f64)>,
    out: &Path,
) -> Result<PathBuf> {
    register_font();
    let mut panels = vec![Panel {
        x_label: "step",
        title: "Charbonnier loss (smoothed)".into(),
        lines: runs
            .iter()
            .enumerate()
            .map(|(i, r)| Line {
                label: r.label.clone(),
                points: smooth(&r.series(Split::Train, "charbonnier"), 0.9),
                dashed: false,
                color: i,
            })
            .collect(),
        legend: SeriesLabelPosition::UpperRight,
    }];
    let diffusion: Vec<_> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            [("d_pos", false), ("d_neg", true)]
                .into_iter()
                .filter_map(move |(s, dashed)| {
                    let pts = r.series(Split::Train, s);
                    (!pts.is_empty()).then(|| Line {
                        label: format!("{} {s}", r.label),
                        points: smooth(&pts, 0.9),
                        dashed,
                        color: i,
                    })
                })
        })
        .collect();
    if !diffusion.is_empty() {
        panels.push(Panel {
            x_label: "step",
            title: "diffusion ε-MSE (smoothed)".into(),
            lines: diffusion,
            legend: SeriesLabelPosition::UpperRight,
        });
    }
    let mut psnr: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Line {
            label: r.label.clone(),
            points: r.series(Split::Val, "psnr"),
            dashed: false,
            color: i,
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    if !psnr.is_empty() {
        if let Some((label, v)) = reference_psnr {
            let last = runs
                .iter()
                .flat_map(|r| r.points.iter().map(|p| p.step))
                .max()
                .unwrap_or(1) as f64;
            psnr.push(Line {
                label: label.to_string(),
                points: vec![(0.0, v), (last, v)],
                dashed: true,
                color: COLORS.len() - 1,
            });
        }
        panels.push(Panel {
            x_label: "step",
            title: "validation PSNR (dB)".into(),
            lines: psnr,
            legend: SeriesLabelPosition::LowerRight,
        });
    }
    draw(&panels, out).map_err(|e| Error::data(format!("drawing {}: {e}", out.display())))?;
    Ok(out.to_path_buf())
}

/// One line of `points` (x, y) with its own axis label and title.
pub fn xy_curve(
    title: &str,
    x_label: &'static str,
    label: &str,
    points: &[(f64, f64)],
    out: &Path,
) -> Result<PathBuf> {
    register_font();
    let panel = Panel {
        title: title.to_string(),
        x_label,
        lines: vec![Line {
            label: label.to_string(),
            points: points.to_vec(),
            dashed: false,
            color: 0,
        }],
        legend: SeriesLabelPosition::UpperLeft,
    };
    draw(&[panel], out).map_err(|e| Error::data(format!("drawing {}: {e}", out.display())))?;
    Ok(out.to_path_buf())
}

/// One panel: validation PSNR against step of each run, with `reference_psnr` dashed (the
/// experiment's curves: one line per arm).
pub fn validation_curves(
    runs: &[Run],
    reference_psnr: Option<(&str, f64)>,
    out: &Path,
) -> Result<PathBuf> {
    register_font();
    let mut lines: Vec<Line> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Line {
            label: r.label.clone(),
            points: r.series(Split::Val, "psnr"),
            dashed: false,
            color: i % (COLORS.len() - 1),
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(Error::data("no validation PSNR to draw"));
    }
    if let Some((label, v)) = reference_psnr {
        let last = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        lines.push(Line {
            label: label.to_string(),
            points: vec![(0.0, v), (last, v)],
            dashed: true,
            color: COLORS.len() - 1,
        });
    }
    let panel = Panel {
        x_label: "step",
        title: "validation PSNR (dB), mean over seeds".into(),
        lines,
        legend: SeriesLabelPosition::LowerRight,
    };
    draw(&[panel], out).map_err(|e| Error::data(format!("drawing {}: {e}", out.display())))?;
    Ok(out.to_path_buf())
}

fn draw(panels: &[Panel], out: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let width = 520 * panels.len() as u32;
    let root = BitMapBackend::new(out, (width, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (panel, area) in panels.iter().zip(areas) {
        let all: Vec<(f64, f64)> = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .collect();
        // Steps from 0; y labels with as many decimals as the range needs.
        let (_, x1) = bounds(all.iter().map(|p| p.0).chain([0.0]));
        let x0 = 0.0;
        let (y0, y1) = bounds(all.iter().map(|p| p.1));
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let decimals = (2.0 - (y1 - y0).log10().floor()).clamp(0.0, 5.0) as usize;
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for line in &panel.lines {
            let color = COLORS[line.color % COLORS.len()];
            let style = color.stroke_width(2);
            let pts = line.points.iter().copied();
            let legend = move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color);
            if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts, 6, 4, style))?
                    .label(&line.label)
                    .legend(legend);
            } else {
                chart
                    .draw_series(LineSeries::new(pts, style))?
                    .label(&line.label)
                    .legend(legend);
                // Markers, so that sparse series (validation) show even as single points.
                if line.points.len() <= 50 {
                    chart.draw_series(
                        line.points
                            .iter()
                            .map(|&p| Circle::new(p, 3, color.filled())),
                    )?;
                }
            }
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(panel.legend.clone())
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Side-by-side crops (e.g. noisy | vanilla | noise-da | ground truth), each the same
/// `side`×`side` window of its image at (x, y), magnified `zoom`× (nearest neighbour) under
/// its label, written as one PNG so a person can see what the numbers mean.
pub fn crop_strip(
    tiles: &[(String, &image::RgbImage)],
    at: (u32, u32),
    side: u32,
    zoom: u32,
    out: &Path,
) -> Result<PathBuf> {
    let img = crop_strip_image(tiles, at, side, zoom)
        .map_err(|e| Error::data(format!("crop strip {}: {e}", out.display())))?;
    crate::data::save_rgb(out, &img)?;
    Ok(out.to_path_buf())
}

/// The picture [`crop_strip`] writes.
pub fn crop_strip_image(
    tiles: &[(String, &image::RgbImage)],
    (x, y): (u32, u32),
    side: u32,
    zoom: u32,
) -> std::result::Result<image::RgbImage, String> {
    register_font();
    if tiles.is_empty() || side == 0 || zoom == 0 {
        return Err("nothing to draw".into());
    }
    let (label_h, gap) = (28u32, 6u32);
    let cell = side * zoom;
    let (w, h) = (tiles.len() as u32 * (cell + gap) - gap, cell + label_h);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (i, (_, img)) in tiles.iter().enumerate() {
        if x + side > img.width() || y + side > img.height() {
            return Err(format!(
                "window {side}x{side} at ({x}, {y}) leaves a {}x{} image",
                img.width(),
                img.height()
            ));
        }
        let x0 = i as u32 * (cell + gap);
        for dy in 0..cell {
            for dx in 0..cell {
                let p = *img.get_pixel(x + dx / zoom, y + dy / zoom);
                canvas.put_pixel(x0 + dx, label_h + dy, p);
            }
        }
    }
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        for (i, (label, _)) in tiles.iter().enumerate() {
            let x0 = (i as u32 * (cell + gap)) as i32;
            root.draw(&Text::new(
                label.clone(),
                (x0 + 4, 5),
                (FAMILY, 16).into_font().color(&BLACK),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(image::RgbImage::from_raw(w, h, buf).expect("buffer is w*h*3. This is a bug."))
}

/// (min, max) of finite values, widened when empty or flat.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_png_has_one_panel_per_kind_of_series() {
        let t = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for step in 1..=20u64 {
            let v = 1.0 / step as f64;
            lines += &format!(
                "{{\"step\":{step},\"wall\":0.0,\"series\":\"charbonnier\",\"split\":\"train\",\"value\":{v}}}\n"
            );
            lines += &format!(
                "{{\"step\":{step},\"wall\":0.0,\"series\":\"d_pos\",\"split\":\"train\",\"value\":{v}}}\n"
            );
            if step % 5 == 0 {
                lines += &format!(
                    "{{\"step\":{step},\"wall\":0.0,\"series\":\"psnr\",\"split\":\"val\",\"value\":{}}}\n",
                    20.0 + step as f64 / 4.0
                );
            }
        }
        lines += "{\"step\": 21, \"torn";
        std::fs::write(t.path().join("metrics.jsonl"), lines).unwrap();
        let run = Run::load("noise-da", t.path()).unwrap();
        assert_eq!(run.series(Split::Val, "psnr").len(), 4);
        let out = t.path().join("curves.png");
        training_curves(&[run], Some(("input", 21.0)), &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        // Three panels (loss, diffusion, PSNR) of 520 px, and ink on each.
        assert_eq!(img.dimensions(), (1560, 400));
        for k in 0..3 {
            let dark = (k * 520..(k + 1) * 520)
                .flat_map(|x| (0..400).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
                .count();
            assert!(dark > 500, "panel {k}: {dark} dark pixels");
        }
    }
}
