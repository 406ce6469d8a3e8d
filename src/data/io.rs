//! Image files ↔ in-memory images: PNG, JPEG and WebP in, 8-bit RGB out (grayscale, 16-bit and
//! alpha are converted with a logged note); `Image` is interleaved HWC RGB f32 in [0, 1].

use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use image::RgbImage;

use crate::{Error, Result};

/// File extensions recognised as images (case-insensitive).
pub const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Decodes an image file into 8-bit RGB; the error names the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader
        .decode()
        .map_err(|e| Error::image(path, format!("cannot decode: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::image(path, "image is empty (0 pixels)"));
    }
    if !matches!(img, image::DynamicImage::ImageRgb8(_)) {
        tracing::info!(path = %path.display(), color = ?img.color(), "converted to 8-bit RGB");
    }
    Ok(img.to_rgb8())
}

/// Decodes image bytes (any supported format) into 8-bit RGB; `what` names the source.
pub fn decode_rgb_named(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::image(what, format!("cannot decode: {e}")))?;
    Ok(img.to_rgb8())
}

/// Writes an image; the format follows the extension (png, jpg, webp).
pub fn save_rgb(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    img.save(path)
        .map_err(|e| Error::image(path, format!("cannot write: {e}")))
}

/// Whether a path has an image extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a folder, sorted by name. An empty folder is an error.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::data(format!(
            "no images ({}) in {}",
            EXTENSIONS.join(", "),
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// An RGB image as interleaved HWC f32, nominally in [0, 1] (degraded images may leave it).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn from_rgb8(img: &RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    /// Clamps to [0, 1] and rounds to 8 bits.
    pub fn to_rgb8(&self) -> RgbImage {
        let raw = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, raw)
            .expect("Image buffer length is width*height*3. This is a bug.")
    }

    pub fn as_metric(&self) -> crate::quality::RgbF32<'_> {
        crate::quality::RgbF32 {
            width: self.width,
            height: self.height,
            data: &self.data,
        }
    }

    /// (3, h, w) f32 tensor.
    pub fn to_tensor(&self, dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.to_chw(),
            (3, self.height, self.width),
            dev,
        )?)
    }

    /// Planar CHW copy of the pixels.
    pub fn to_chw(&self) -> Vec<f32> {
        let n = self.width * self.height;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            out[i] = px[0];
            out[n + i] = px[1];
            out[2 * n + i] = px[2];
        }
        out
    }

    /// From a (3, h, w) tensor on any device.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (c, h, w) = t.dims3()?;
        if c != 3 {
            return Err(Error::invalid_input(format!(
                "expected 3 channels, got {c}"
            )));
        }
        let chw = t
            .to_dtype(candle::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n = h * w;
        let mut data = vec![0f32; 3 * n];
        for i in 0..n {
            data[3 * i] = chw[i];
            data[3 * i + 1] = chw[n + i];
            data[3 * i + 2] = chw[2 * n + i];
        }
        Ok(Self {
            width: w,
            height: h,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_keeps_pixels() {
        let img = Image {
            width: 3,
            height: 2,
            data: (0..18).map(|v| v as f32 / 17.0).collect(),
        };
        let t = img.to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 2, 3]);
        assert_eq!(Image::from_tensor(&t).unwrap(), img);
    }

    #[test]
    fn corrupt_and_empty_inputs_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = load_rgb(&bad).unwrap_err().to_string();
        assert!(err.contains("broken.png"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = list_images(&empty).unwrap_err().to_string();
        assert!(err.contains("no images") && err.contains("empty"), "{err}");
    }

    #[test]
    fn grayscale_and_rgba_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let gray = image::GrayImage::from_fn(4, 3, |x, _| image::Luma([x as u8 * 60]));
        let p = dir.path().join("g.png");
        gray.save(&p).unwrap();
        let rgb = load_rgb(&p).unwrap();
        assert_eq!(rgb.get_pixel(2, 1).0, [120, 120, 120]);
        let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 40]));
        let p = dir.path().join("a.webp");
        rgba.save(&p).unwrap();
        assert_eq!(load_rgb(&p).unwrap().get_pixel(1, 1).0, [10, 20, 30]);
    }
}
