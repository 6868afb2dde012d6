//! PNG figures of fields (plotters, text in the embedded DejaVu Sans): a grid of panels, each one
//! field with its title and its own colour bar labelled with the field's range. Fields use a
//! sequential map; errors and residuals a diverging one, symmetric about zero.

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use std::path::Path;

/// A column of a figure: its title and whether its fields are signed errors (diverging map).
pub struct Column {
    pub title: String,
    pub diverging: bool,
}

impl Column {
    pub fn field(title: impl Into<String>) -> Self {
        Column {
            title: title.into(),
            diverging: false,
        }
    }
    pub fn error(title: impl Into<String>) -> Self {
        Column {
            title: title.into(),
            diverging: true,
        }
    }
    /// A field column: diverging for a signed field (vorticity), sequential otherwise.
    pub fn of(title: impl Into<String>, signed: bool) -> Self {
        Column {
            title: title.into(),
            diverging: signed,
        }
    }
}

const FONT: &str = "sans-serif";
const TITLE_H: u32 = 20;
const GAP: u32 = 8;
const BAR_W: u32 = 10;
const LABEL_W: u32 = 62;

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("the embedded font did not load"))
}

fn diverging(t: f64) -> RGBColor {
    // blue - white - red
    const STOPS: [[f64; 3]; 3] = [[33., 102., 172.], [247., 247., 247.], [178., 24., 43.]];
    let t = t.clamp(0.0, 1.0) * 2.0;
    let i = (t.floor() as usize).min(1);
    let f = t - i as f64;
    let c = |k: usize| (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// Compact number for colour-bar labels.
fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-2..1e3).contains(&a) {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// The value range a panel's colours span, and the colour of a value.
struct Scale {
    lo: f64,
    hi: f64,
    diverging: bool,
}

impl Scale {
    fn of(field: &[f32], diverging: bool) -> Self {
        let (lo, hi) = field
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), &v| {
                (a.min(v as f64), b.max(v as f64))
            });
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        if diverging {
            let m = lo.abs().max(hi.abs()).max(1e-30);
            Scale {
                lo: -m,
                hi: m,
                diverging,
            }
        } else {
            Scale { lo, hi, diverging }
        }
    }
    fn colour(&self, v: f64) -> RGBColor {
        let t = if self.hi > self.lo {
            (v - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        };
        if self.diverging {
            diverging(t)
        } else {
            ViridisRGB::get_color(t.clamp(0.0, 1.0) as f32)
        }
    }
}

/// One panel: a row-major n x n field with its title.
pub struct Panel<'a> {
    pub title: String,
    pub field: &'a [f32],
    pub diverging: bool,
}

/// Writes rows of row-major n x n fields under the columns' titles (see [`save_panels`]).
pub fn save_fields<F: AsRef<[f32]>>(
    path: &Path,
    rows: &[Vec<F>],
    n: usize,
    columns: &[Column],
    zoom: usize,
) -> Result<()> {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    anyhow::ensure!(
        columns.len() >= cols,
        "{} column titles for {cols} columns",
        columns.len()
    );
    let panels: Vec<Vec<Panel>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(columns)
                .map(|(f, c)| Panel {
                    title: c.title.clone(),
                    field: f.as_ref(),
                    diverging: c.diverging,
                })
                .collect()
        })
        .collect();
    save_panels(path, &panels, n, zoom)
}

/// Writes rows of panels (row 0 of a field is y = 0, drawn at the bottom as plots of the unit
/// square are), each pixel drawn `zoom` x `zoom`.
pub fn save_panels(path: &Path, rows: &[Vec<Panel>], n: usize, zoom: usize) -> Result<()> {
    register_font()?;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let side = (n * zoom) as u32;
    let (cell_w, cell_h) = (side + GAP + BAR_W + LABEL_W, TITLE_H + side + GAP);
    let (w, h) = (cols as u32 * cell_w + GAP, rows.len() as u32 * cell_h + GAP);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e| anyhow!("drawing {}: {e:?}", path.display());
        let font = (FONT, 13).into_font();
        let small = (FONT, 11).into_font();
        for (r, row) in rows.iter().enumerate() {
            for (c, panel) in row.iter().enumerate() {
                let field = panel.field;
                anyhow::ensure!(
                    field.len() == n * n,
                    "a panel of {} values on {n}x{n}",
                    field.len()
                );
                let scale = Scale::of(field, panel.diverging);
                let (x0, y0) = (
                    (GAP + c as u32 * cell_w) as i32,
                    (GAP + r as u32 * cell_h) as i32,
                );
                root.draw(&Text::new(panel.title.clone(), (x0, y0), font.clone()))
                    .map_err(err)?;
                let top = y0 + TITLE_H as i32;
                let z = zoom as i32;
                for j in 0..n {
                    for i in 0..n {
                        let y = top + (n - 1 - j) as i32 * z;
                        let x = x0 + i as i32 * z;
                        let v = field[j * n + i];
                        let fill = if v.is_finite() {
                            scale.colour(v as f64)
                        } else {
                            RGBColor(128, 128, 128)
                        };
                        root.draw(&Rectangle::new([(x, y), (x + z, y + z)], fill.filled()))
                            .map_err(err)?;
                    }
                }
                // colour bar: top is the high end
                let bx = x0 + (side + GAP) as i32;
                let steps = side as i32;
                for k in 0..steps {
                    let v = scale.hi - (scale.hi - scale.lo) * k as f64 / (steps - 1).max(1) as f64;
                    root.draw(&Rectangle::new(
                        [(bx, top + k), (bx + BAR_W as i32, top + k + 1)],
                        scale.colour(v).filled(),
                    ))
                    .map_err(err)?;
                }
                let lx = bx + BAR_W as i32 + 3;
                root.draw(&Text::new(label(scale.hi), (lx, top), small.clone()))
                    .map_err(err)?;
                root.draw(&Text::new(
                    label(0.5 * (scale.hi + scale.lo)),
                    (lx, top + steps / 2 - 6),
                    small.clone(),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    label(scale.lo),
                    (lx, top + steps - 12),
                    small.clone(),
                ))
                .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    write_png(path, &buf, w, h)
}

/// Writes an RGB buffer of w x h pixels as a PNG, creating the directory.
fn write_png(path: &Path, buf: &[u8], w: u32, h: u32) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(buf)?;
    Ok(())
}

/// A labelled point of a scatter plot.
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// A scatter plot on log axes, each point labelled (points with a non-positive or non-finite
/// coordinate are left out, and named in the caption).
pub fn save_scatter_loglog(
    path: &Path,
    caption: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> Result<()> {
    register_font()?;
    let ok = |p: &&Point| p.x.is_finite() && p.y.is_finite() && p.x > 0.0 && p.y > 0.0;
    let shown: Vec<&Point> = points.iter().filter(ok).collect();
    anyhow::ensure!(!shown.is_empty(), "no point to plot in {}", path.display());
    let left: Vec<&str> = points
        .iter()
        .filter(|p| !ok(p))
        .map(|p| p.label.as_str())
        .collect();
    let range = |f: fn(&Point) -> f64| {
        let (lo, hi) = shown
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(f(p)), b.max(f(p))));
        (lo / 3.0)..(hi * 3.0)
    };
    let (xr, yr) = (range(|p| p.x), range(|p| p.y));
    let (w, h) = (720u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let err = |e| anyhow!("drawing {}: {e:?}", path.display());
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let caption = if left.is_empty() {
            caption.to_string()
        } else {
            format!("{caption} (not shown: {})", left.join(", "))
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FONT, 16))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xr.log_scale(), yr.log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .x_label_formatter(&|v| label(*v))
            .y_label_formatter(&|v| label(*v))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(shown.iter().map(|p| {
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 5, RGBColor(33, 102, 172).filled())
                    + Text::new(p.label.clone(), (8, -6), (FONT, 13))
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    write_png(path, &buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panel shows the field's colours where they belong: the low corner (row 0 = y 0) at the
    /// bottom left, the colour bar spans the range, and the titles are drawn (dark pixels above).
    #[test]
    fn panels_put_values_where_they_belong() {
        let n = 4;
        let field: Vec<f32> = (0..n * n).map(|k| k as f32).collect();
        let err: Vec<f32> = (0..n * n).map(|k| k as f32 - 7.5).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        let zoom = 8;
        save_fields(
            &path,
            &[vec![field.clone(), err]],
            n,
            &[Column::field("u"), Column::error("error of u")],
            zoom,
        )
        .unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut img = vec![0u8; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        let w = info.width as usize;
        let px = |x: usize, y: usize| {
            let o = (y * w + x) * 3;
            [img[o], img[o + 1], img[o + 2]]
        };
        let top = (GAP + TITLE_H) as usize;
        let side = n * zoom;
        let low = ViridisRGB::get_color(0.0f32);
        let high = ViridisRGB::get_color(1.0f32);
        // value 0 (i 0, j 0) at the bottom left, value 15 (i 3, j 3) at the top right
        assert_eq!(px(GAP as usize + 2, top + side - 2), [low.0, low.1, low.2]);
        assert_eq!(
            px(GAP as usize + side - 2, top + 2),
            [high.0, high.1, high.2]
        );
        // the error panel is white at zero and saturated at +-7.5
        let x1 = (GAP + side as u32 + GAP + BAR_W + LABEL_W) as usize;
        let red = diverging(1.0);
        assert_eq!(px(x1 + side - 2, top + 2), [red.0, red.1, red.2]);
        // titles: some dark text pixels in the title band
        let dark = (0..w)
            .flat_map(|x| (GAP as usize..top).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y).iter().all(|&c| c < 100))
            .count();
        assert!(dark > 20, "{dark} dark pixels in the titles");
    }
}
