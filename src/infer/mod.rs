//! Inference: one image through a restorer, whole or in overlapping tiles blended with linear
//! ramps; folders of images; the output is clamped to [0, 1].

use candle::{Device, Tensor};

use crate::config::DataRange;
use crate::data::Image;
use crate::model::Restorer;
use crate::{Error, Result};

/// Tiled inference settings: square tiles of `tile` pixels overlapping by `overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub tile: usize,
    pub overlap: usize,
    /// Tiles run through the network together.
    pub batch: usize,
}

impl Tiling {
    /// `tile` with the default overlap of tile/4 (at least 16 px, at most tile/2).
    pub fn new(tile: usize) -> Self {
        Self {
            tile,
            overlap: (tile / 4).max(16).min(tile / 2),
            batch: 4,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.tile < 16 || self.overlap >= self.tile {
            return Err(Error::invalid_input(format!(
                "tile must be at least 16 and larger than the overlap, got tile {} overlap {}",
                self.tile, self.overlap
            )));
        }
        Ok(())
    }
}

/// Tile origins covering `0..size`: stride `tile − overlap`, the last flush with the edge.
fn origins(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let stride = tile - overlap;
    let mut v: Vec<usize> = (0..)
        .map(|k| k * stride)
        .take_while(|&o| o + tile < size)
        .collect();
    v.push(size - tile);
    v.dedup();
    v
}

/// Blend weights along one axis of a tile at `origin`: a linear ramp over the overlap on each
/// side that lies inside the image (tile borders see zero padding, so their pixels count least),
/// flat on sides that touch the image border.
fn ramp(origin: usize, len: usize, size: usize, overlap: usize) -> Vec<f32> {
    let up = |d: usize| ((d as f32 + 0.5) / overlap.max(1) as f32).min(1.0);
    (0..len)
        .map(|i| {
            let left = if origin == 0 { 1.0 } else { up(i) };
            let right = if origin + len == size {
                1.0
            } else {
                up(len - 1 - i)
            };
            left.min(right)
        })
        .collect()
}

/// Restores one image (any size) with a network working in `range`; `tiling` splits it into
/// blended tiles.
pub fn restore_image(
    net: &Restorer,
    range: DataRange,
    img: &Image,
    device: &Device,
    tiling: Option<Tiling>,
) -> Result<Image> {
    let xs = range.to_net(&img.to_tensor(device)?)?;
    let out = restore_tensor(net, &xs, tiling)?;
    Image::from_tensor(&range.from_net(&out)?.clamp(0f32, 1f32)?)
}

/// One (3, h, w) tensor in the network's range through `net`, whole or tiled.
fn restore_tensor(net: &Restorer, xs: &Tensor, tiling: Option<Tiling>) -> Result<Tensor> {
    let (_c, h, w) = xs.dims3()?;
    Ok(match tiling {
        Some(t) if h > t.tile || w > t.tile => restore_tiled(net, xs, t)?,
        _ => net.restore(&xs.unsqueeze(0)?, false)?.squeeze(0)?,
    })
}

/// One of the eight symmetries of the square (the dihedral group D4): an optional transpose of
/// the image axes, then optional flips of the rows and of the columns.
#[derive(Debug, Clone, Copy)]
struct Symmetry {
    transpose: bool,
    flip_rows: bool,
    flip_cols: bool,
}

impl Symmetry {
    fn all() -> impl Iterator<Item = Self> {
        (0..8u8).map(|k| Self {
            transpose: k & 4 != 0,
            flip_rows: k & 2 != 0,
            flip_cols: k & 1 != 0,
        })
    }

    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        let mut t = xs.clone();
        if self.transpose {
            t = t.transpose(1, 2)?.contiguous()?;
        }
        if self.flip_rows {
            t = flip(&t, 1)?;
        }
        if self.flip_cols {
            t = flip(&t, 2)?;
        }
        Ok(t)
    }

    fn invert(self, ys: &Tensor) -> Result<Tensor> {
        let mut t = ys.clone();
        if self.flip_cols {
            t = flip(&t, 2)?;
        }
        if self.flip_rows {
            t = flip(&t, 1)?;
        }
        if self.transpose {
            t = t.transpose(1, 2)?.contiguous()?;
        }
        Ok(t)
    }
}

/// `xs` reversed along `dim`.
fn flip(xs: &Tensor, dim: usize) -> Result<Tensor> {
    let n = xs.dim(dim)?;
    let idx = Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, xs.device())?;
    Ok(xs.contiguous()?.index_select(&idx, dim)?)
}

/// [`restore_image`] with geometric self-ensemble (Lim et al. 2017, "EDSR+"): the image goes
/// through `net` under each of the eight flips and transposes of the square, each output is
/// mapped back, and the eight are averaged. Eight times the compute of one pass; the noise a
/// denoiser leaves behind is partly independent across the eight, so the average keeps less
/// of it.
pub fn restore_image_x8(
    net: &Restorer,
    range: DataRange,
    img: &Image,
    device: &Device,
    tiling: Option<Tiling>,
) -> Result<Image> {
    let xs = range.to_net(&img.to_tensor(device)?)?;
    let mut sum: Option<Tensor> = None;
    for s in Symmetry::all() {
        let y = s.invert(&restore_tensor(net, &s.apply(&xs)?, tiling)?)?;
        sum = Some(match sum {
            Some(acc) => (acc + y)?,
            None => y,
        });
    }
    let mean = (sum.expect("eight symmetries") / 8.0)?;
    Image::from_tensor(&range.from_net(&mean)?.clamp(0f32, 1f32)?)
}

/// The side an image is replicate-padded to before it enters `net`.
pub fn padded_side(net: &Restorer, side: usize) -> usize {
    side.div_ceil(net.multiple()) * net.multiple()
}

/// Restores several images in one forward pass. Their padded sizes ([`padded_side`]) must be
/// equal; each is replicate-padded exactly as [`restore_image`] pads it alone, so the results
/// equal the one-image results.
pub fn restore_batch(
    net: &Restorer,
    range: DataRange,
    images: &[&Image],
    device: &Device,
) -> Result<Vec<Image>> {
    let Some(first) = images.first() else {
        return Ok(Vec::new());
    };
    let (ph, pw) = (
        padded_side(net, first.height),
        padded_side(net, first.width),
    );
    let xs = images
        .iter()
        .map(|img| {
            if (padded_side(net, img.height), padded_side(net, img.width)) != (ph, pw) {
                return Err(Error::invalid_input(format!(
                    "a batch needs one padded size: {}×{} does not pad to {pw}×{ph}",
                    img.width, img.height
                )));
            }
            let x = range.to_net(&img.to_tensor(device)?)?;
            Ok(x.pad_with_same(1, 0, ph - img.height)?
                .pad_with_same(2, 0, pw - img.width)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = net.restore(&Tensor::stack(&xs, 0)?, false)?;
    images
        .iter()
        .enumerate()
        .map(|(k, img)| {
            let y = out
                .get(k)?
                .narrow(1, 0, img.height)?
                .narrow(2, 0, img.width)?;
            Image::from_tensor(&range.from_net(&y)?.clamp(0f32, 1f32)?)
        })
        .collect()
}

fn restore_tiled(net: &Restorer, xs: &Tensor, t: Tiling) -> Result<Tensor> {
    t.validate()?;
    // Pad the whole image as an untiled pass would, so border tiles see the same borders.
    let (_c, h0, w0) = xs.dims3()?;
    let m = net.multiple();
    let xs = xs
        .pad_with_same(1, 0, (m - h0 % m) % m)?
        .pad_with_same(2, 0, (m - w0 % m) % m)?;
    let (_c, h, w) = xs.dims3()?;
    let (th, tw) = (t.tile.min(h), t.tile.min(w));
    let mut boxes = Vec::new();
    for y in origins(h, th, t.overlap) {
        for x in origins(w, tw, t.overlap) {
            boxes.push((y, x));
        }
    }
    let mut acc = vec![0f32; 3 * h * w];
    let mut norm = vec![0f32; h * w];
    for chunk in boxes.chunks(t.batch.max(1)) {
        let tiles = chunk
            .iter()
            .map(|&(y, x)| xs.narrow(1, y, th)?.narrow(2, x, tw))
            .collect::<candle::Result<Vec<_>>>()?;
        let out = net.restore(&Tensor::stack(&tiles, 0)?, false)?;
        let out = out.flatten_all()?.to_vec1::<f32>()?;
        for (k, &(y, x)) in chunk.iter().enumerate() {
            let tile = &out[k * 3 * th * tw..(k + 1) * 3 * th * tw];
            let (wy, wx) = (ramp(y, th, h, t.overlap), ramp(x, tw, w, t.overlap));
            for i in 0..th {
                for j in 0..tw {
                    let wv = wy[i] * wx[j];
                    let p = (y + i) * w + (x + j);
                    norm[p] += wv;
                    for c in 0..3 {
                        acc[c * h * w + p] += wv * tile[c * th * tw + i * tw + j];
                    }
                }
            }
        }
    }
    for c in 0..3 {
        for p in 0..h * w {
            acc[c * h * w + p] /= norm[p];
        }
    }
    let out = Tensor::from_vec(acc, (3, h, w), xs.device())?;
    Ok(out.narrow(1, 0, h0)?.narrow(2, 0, w0)?)
}

/// The (input, output) files of a restore: one file, or every image of a folder into an output
/// folder (same file names). Refuses to restore a folder into itself.
pub fn restore_plan(
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<Vec<(std::path::PathBuf, std::path::PathBuf)>> {
    use crate::data::list_images;
    Ok(if input.is_dir() {
        let same = output.exists()
            && std::fs::canonicalize(input).ok() == std::fs::canonicalize(output).ok();
        if same {
            return Err(Error::invalid_input(format!(
                "output folder {} is the input folder; restoring in place would overwrite the originals",
                output.display()
            )));
        }
        if output.is_file() {
            return Err(Error::invalid_input(format!(
                "input {} is a folder, so the output {} must be a folder too",
                input.display(),
                output.display()
            )));
        }
        list_images(input)?
            .into_iter()
            .map(|p| {
                let o = output.join(p.file_name().expect("listed files have names"));
                (p, o)
            })
            .collect()
    } else {
        if !crate::data::io::is_image(output) {
            return Err(Error::invalid_input(format!(
                "output {} needs an image extension ({})",
                output.display(),
                crate::data::io::EXTENSIONS.join(", ")
            )));
        }
        vec![(input.to_path_buf(), output.to_path_buf())]
    })
}

/// Restores one file, or every image of a folder into an output folder (same file names).
/// Returns the files written.
pub fn restore_path(
    model: &crate::artifact::LoadedModel,
    input: &std::path::Path,
    output: &std::path::Path,
    tiling: Option<Tiling>,
    self_ensemble: bool,
    progress: bool,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::data::{load_rgb, save_rgb};
    let jobs = restore_plan(input, output)?;
    let bar = if progress && jobs.len() > 1 {
        indicatif::ProgressBar::new(jobs.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut written = Vec::with_capacity(jobs.len());
    for (src, dst) in jobs {
        let img = Image::from_rgb8(&load_rgb(&src)?);
        let restore = if self_ensemble {
            restore_image_x8
        } else {
            restore_image
        };
        let out = restore(
            &model.net,
            model.manifest.range,
            &img,
            &model.device,
            tiling,
        )?;
        // Written under a temporary name, then renamed: no half-written image under the real name.
        crate::fsio::write_with(&dst, |partial| save_rgb(partial, &out.to_rgb8()))?;
        written.push(dst);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_the_axis() {
        assert_eq!(origins(100, 128, 32), vec![0]);
        assert_eq!(origins(128, 64, 16), vec![0, 48, 64]);
        assert_eq!(origins(200, 64, 16), vec![0, 48, 96, 136]);
        for o in origins(517, 96, 24).windows(2) {
            assert!(o[1] - o[0] <= 96 - 24);
        }
    }

    /// The eight symmetries are distinct on a non-square image with distinct pixels, and each
    /// one's inverse brings the image back exactly.
    #[test]
    fn symmetries_are_the_eight_of_the_square_and_invert() {
        let xs = Tensor::arange(0f32, 2. * 3. * 5., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 5))
            .unwrap();
        let mut seen: Vec<Vec<f32>> = Vec::new();
        for s in Symmetry::all() {
            let t = s.apply(&xs).unwrap();
            let dims = if s.transpose { (2, 5, 3) } else { (2, 3, 5) };
            assert_eq!(t.dims3().unwrap(), dims, "{s:?}");
            let back = s.invert(&t).unwrap();
            let diff = (back - &xs).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{s:?}");
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(!seen.contains(&v), "{s:?} repeats another symmetry");
            seen.push(v);
        }
        assert_eq!(seen.len(), 8);
        // One hand-checked case: transpose then flip the (new) rows.
        let t = Symmetry {
            transpose: true,
            flip_rows: true,
            flip_cols: false,
        }
        .apply(&xs.narrow(0, 0, 1).unwrap())
        .unwrap();
        let rows = t.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rows[0], vec![4., 9., 14.]);
        assert_eq!(rows[4], vec![0., 5., 10.]);
    }
}
