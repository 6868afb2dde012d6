//! PNG figures of fields: a grid of panels, each panel one field with its own colour range.

use anyhow::{Context, Result};
use std::path::Path;

#[derive(Clone, Copy)]
enum Cmap {
    /// Sequential (viridis-like): fields.
    Seq,
    /// Diverging, symmetric about zero (blue - white - red): errors and residuals.
    Div,
}

const VIRIDIS: [[f32; 3]; 5] = [
    [68., 1., 84.],
    [59., 82., 139.],
    [33., 145., 140.],
    [94., 201., 98.],
    [253., 231., 37.],
];
const DIVERGING: [[f32; 3]; 3] = [[33., 102., 172.], [247., 247., 247.], [178., 24., 43.]];

fn lerp(stops: &[[f32; 3]], t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f32;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f32;
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (stops[i][k] * (1.0 - f) + stops[i + 1][k] * f).round() as u8;
    }
    c
}

/// One panel: a row-major n x n field.
struct Panel<'a> {
    pub field: &'a [f32],
    pub n: usize,
    pub cmap: Cmap,
}

/// Writes rows of panels, each pixel drawn `zoom` x `zoom`, with a 4-pixel white gutter.
fn save_grid(path: &Path, rows: &[Vec<Panel>], zoom: usize) -> Result<()> {
    let gut = 4;
    let n = rows.iter().flatten().map(|p| p.n).max().unwrap_or(1);
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let cell = n * zoom + gut;
    let (w, h) = (cols * cell + gut, rows.len() * cell + gut);
    let mut img = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, p) in row.iter().enumerate() {
            let (lo, hi) = p
                .field
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let amax = lo.abs().max(hi.abs()).max(1e-30);
            for j in 0..p.n {
                for i in 0..p.n {
                    let v = p.field[j * p.n + i];
                    let col = match p.cmap {
                        Cmap::Seq => {
                            lerp(&VIRIDIS, if hi > lo { (v - lo) / (hi - lo) } else { 0.5 })
                        }
                        Cmap::Div => lerp(&DIVERGING, 0.5 + 0.5 * v / amax),
                    };
                    // Row 0 is y = 0: draw it at the bottom, as plots of the unit square do.
                    for dy in 0..zoom {
                        for dx in 0..zoom {
                            let y = gut + r * cell + (p.n - 1 - j) * zoom + dy;
                            let x = gut + c * cell + i * zoom + dx;
                            img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&col);
                        }
                    }
                }
            }
        }
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(())
}

/// Writes rows of row-major n x n fields, column k drawn with the diverging map where
/// `diverging(k)` (errors, residuals) and the sequential one otherwise.
pub fn save_fields<F: AsRef<[f32]>>(
    path: &Path,
    rows: &[Vec<F>],
    n: usize,
    diverging: impl Fn(usize) -> bool,
    zoom: usize,
) -> Result<()> {
    let panels: Vec<Vec<Panel>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(k, f)| Panel {
                    field: f.as_ref(),
                    n,
                    cmap: if diverging(k) { Cmap::Div } else { Cmap::Seq },
                })
                .collect()
        })
        .collect();
    save_grid(path, &panels, zoom)
}
