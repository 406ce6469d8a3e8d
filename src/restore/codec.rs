//! Image decoding and encoding for the Restore service, within its limits: an encoded input is
//! sized from its header before any pixel is decoded, a raw one must match its stated size,
//! and an input over `max_image_pixels` is tiled (or refused). The types here are the
//! domain's; `grpc::convert` turns a request's images into them. Blocking (CPU work); call
//! from `spawn_blocking`.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{ImageFormat, ImageReader, RgbImage};

use super::config::LimitsConfig;
use crate::data::Image;
use crate::infer::Tiling;
use crate::{Error, Result};

/// One input image of a request, as it came.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// PNG, JPEG or WebP bytes.
    Encoded(&'a [u8]),
    Raw(RawInput<'a>),
}

/// Raw pixels, row-major, channels interleaved.
#[derive(Debug, Clone, Copy)]
pub struct RawInput<'a> {
    pub width: u32,
    pub height: u32,
    /// 0 = 3.
    pub channels: u32,
    /// None: a pixel type this server does not know.
    pub pixel: Option<PixelType>,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    U8,
    /// Little-endian f32 in [0, 1].
    F32,
}

/// The tiling a request asks for (0 = the server's setting).
#[derive(Debug, Clone, Copy, Default)]
pub struct TileRequest {
    pub tile_size: u32,
    pub tile_overlap: u32,
}

/// The format a restored image is encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
    RawU8,
    RawF32,
}

/// A decoded input and how long decoding took.
pub struct Decoded {
    pub image: Image,
    pub tiling: Option<Tiling>,
    pub decode: Duration,
}

impl LimitsConfig {
    /// Pixel checks for a `width`×`height` input; the tiling it needs, if any.
    pub fn admit_size(
        &self,
        k: usize,
        width: u64,
        height: u64,
        req: &TileRequest,
        multiple: usize,
    ) -> Result<Option<Tiling>> {
        let l = self;
        let pixels = width.saturating_mul(height);
        if width == 0 || height == 0 {
            return Err(Error::invalid_input(format!(
                "image {k}: zero size ({width}×{height})"
            )));
        }
        if pixels > l.max_input_pixels as u64 {
            return Err(Error::invalid_input(format!(
                "image {k}: {width}×{height} = {pixels} pixels exceeds max_input_pixels = {}",
                l.max_input_pixels
            )));
        }
        if pixels <= l.max_image_pixels as u64 {
            return Ok(None);
        }
        let tile = if req.tile_size > 0 {
            req.tile_size as usize
        } else {
            l.tile_size
        };
        if tile == 0 {
            return Err(Error::invalid_input(format!(
                "image {k}: {width}×{height} = {pixels} pixels exceeds max_image_pixels = {} and \
                 tiling is off (set tile_size in the request)",
                l.max_image_pixels
            )));
        }
        let tile = tile.div_ceil(multiple) * multiple;
        let mut t = Tiling::new(tile);
        if req.tile_overlap > 0 {
            t.overlap = req.tile_overlap as usize;
        } else if l.tile_overlap > 0 {
            t.overlap = l.tile_overlap;
        }
        t.validate()
            .map_err(|e| Error::invalid_input(format!("image {k}: {e}")))?;
        Ok(Some(t))
    }

    /// Decodes input `k` of a request within the limits: encoded images are sized from their
    /// header before any pixel is decoded; raw images must match their stated size exactly.
    /// `multiple` is the model's size multiple (tiles are rounded up to it). ~100 lines: one
    /// match over the input kinds, each checking in the order its errors are documented.
    pub fn decode(
        &self,
        k: usize,
        input: &Input<'_>,
        req: &TileRequest,
        multiple: usize,
    ) -> Result<Decoded> {
        let t0 = Instant::now();
        let (image, tiling) = match *input {
            Input::Encoded(data) => {
                let reader = ImageReader::new(Cursor::new(data))
                    .with_guessed_format()
                    .map_err(|e| Error::invalid_input(format!("image {k}: {e}")))?;
                match reader.format() {
                    Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
                    other => {
                        return Err(Error::invalid_input(format!(
                            "image {k}: not a PNG, JPEG or WebP image ({} bytes{})",
                            data.len(),
                            other
                                .map(|f| format!(", looks like {f:?}"))
                                .unwrap_or_default()
                        )))
                    }
                }
                let (w, h) = reader
                    .into_dimensions()
                    .map_err(|e| Error::invalid_input(format!("image {k}: {e}")))?;
                let tiling = self.admit_size(k, w as u64, h as u64, req, multiple)?;
                let mut reader = ImageReader::new(Cursor::new(data))
                    .with_guessed_format()
                    .map_err(|e| Error::invalid_input(format!("image {k}: {e}")))?;
                let mut limits = image::Limits::default();
                limits.max_image_width = Some(w);
                limits.max_image_height = Some(h);
                reader.limits(limits);
                let img = reader
                    .decode()
                    .map_err(|e| Error::invalid_input(format!("image {k}: cannot decode: {e}")))?;
                (Image::from_rgb8(&img.to_rgb8()), tiling)
            }
            Input::Raw(r) => {
                let channels = if r.channels == 0 { 3 } else { r.channels };
                if channels != 3 {
                    return Err(Error::invalid_input(format!(
                        "image {k}: raw images must have 3 channels (RGB), got {channels}"
                    )));
                }
                let tiling = self.admit_size(k, r.width as u64, r.height as u64, req, multiple)?;
                let n = r.width as usize * r.height as usize * 3;
                let data = match r.pixel {
                    Some(PixelType::U8) => {
                        if r.data.len() != n {
                            return Err(Error::invalid_input(format!(
                                "image {k}: raw u8 {}×{}×3 needs {n} bytes, got {}",
                                r.width,
                                r.height,
                                r.data.len()
                            )));
                        }
                        r.data.iter().map(|&v| v as f32 / 255.0).collect()
                    }
                    Some(PixelType::F32) => {
                        if r.data.len() != n * 4 {
                            return Err(Error::invalid_input(format!(
                                "image {k}: raw f32 {}×{}×3 needs {} bytes, got {}",
                                r.width,
                                r.height,
                                n * 4,
                                r.data.len()
                            )));
                        }
                        let v: Vec<f32> = r
                            .data
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
                            return Err(Error::invalid_input(format!(
                                "image {k}: raw f32 value {} at index {bad} is not finite",
                                v[bad]
                            )));
                        }
                        v
                    }
                    None => {
                        return Err(Error::invalid_input(format!(
                            "image {k}: raw pixel_type must be PIXEL_TYPE_U8 or PIXEL_TYPE_F32"
                        )))
                    }
                };
                (
                    Image {
                        width: r.width as usize,
                        height: r.height as usize,
                        data,
                    },
                    tiling,
                )
            }
        };
        Ok(Decoded {
            image,
            tiling,
            decode: t0.elapsed(),
        })
    }
}

/// Encodes a restored image in the requested format.
pub fn encode(img: &Image, format: OutputFormat, jpeg_quality: u8) -> Result<Vec<u8>> {
    let rgb: RgbImage = img.to_rgb8();
    let mut out = Vec::new();
    let err = |e: image::ImageError| Error::invalid_input(format!("encoding the result: {e}"));
    match format {
        OutputFormat::Png => {
            rgb.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .map_err(err)?;
        }
        OutputFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality)
                .encode_image(&rgb)
                .map_err(err)?;
        }
        OutputFormat::Webp => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    rgb.as_raw(),
                    rgb.width(),
                    rgb.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(err)?;
        }
        OutputFormat::RawU8 => out = rgb.into_raw(),
        OutputFormat::RawF32 => {
            out.reserve(img.data.len() * 4);
            for v in &img.data {
                out.extend_from_slice(&v.clamp(0.0, 1.0).to_le_bytes());
            }
        }
    }
    Ok(out)
}
