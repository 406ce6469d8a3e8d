//! Random crops and the 8 dihedral transforms, drawn from a caller-provided seeded RNG
//! (the degradations are `spec::degrade`, their shared draws `draw`).

use image::RgbImage;
use rand::Rng;

use super::Image;

/// A `p`×`p` crop at (x, y) as f32 in [0, 1].
pub fn crop(img: &RgbImage, x: usize, y: usize, p: usize) -> Image {
    let w = img.width() as usize;
    let raw = img.as_raw();
    let mut data = Vec::with_capacity(p * p * 3);
    for row in y..y + p {
        let start = (row * w + x) * 3;
        data.extend(raw[start..start + p * 3].iter().map(|&v| v as f32 / 255.0));
    }
    Image {
        width: p,
        height: p,
        data,
    }
}

/// The `p`×`p` centre of an image `p + 2·margin` wide (drops the context a degradation read).
pub fn trim(img: &Image, margin: usize, p: usize) -> Image {
    let mut data = Vec::with_capacity(p * p * 3);
    for row in margin..margin + p {
        let start = (row * img.width + margin) * 3;
        data.extend_from_slice(&img.data[start..start + p * 3]);
    }
    Image {
        width: p,
        height: p,
        data,
    }
}

/// A uniformly random crop origin for a `p`×`p` patch (image at least `p` in both sides).
pub fn random_origin(rng: &mut impl Rng, img: &RgbImage, p: usize) -> (usize, usize) {
    let x = rng.gen_range(0..=img.width() as usize - p);
    let y = rng.gen_range(0..=img.height() as usize - p);
    (x, y)
}

/// Dihedral transform `k` in 0..8 of a square image: rotate 90° counter-clockwise `k % 4` times,
/// then flip vertically when `k >= 4` (the official augment's 8 modes, in another order).
pub fn dihedral(img: &Image, k: u8) -> Image {
    assert_eq!(img.width, img.height, "dihedral needs a square patch");
    let p = img.width;
    let mut out = vec![0f32; img.data.len()];
    for y in 0..p {
        for x in 0..p {
            // Output (y, x) reads the source at the inverse-mapped coordinate.
            let (mut sy, mut sx) = if k >= 4 { (p - 1 - y, x) } else { (y, x) };
            for _ in 0..k % 4 {
                // inverse of rot90 ccw: out[y][x] = in[x][p-1-y]
                (sy, sx) = (sx, p - 1 - sy);
            }
            let (o, s) = ((y * p + x) * 3, (sy * p + sx) * 3);
            out[o..o + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Image {
        width: p,
        height: p,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_dihedral_transforms_are_distinct_and_invertible() {
        let img = Image {
            width: 3,
            height: 3,
            data: (0..27).map(|v| v as f32).collect(),
        };
        let all: Vec<Image> = (0..8).map(|k| dihedral(&img, k)).collect();
        for i in 0..8 {
            for j in i + 1..8 {
                assert_ne!(all[i], all[j], "{i} vs {j}");
            }
        }
        // Four quarter turns and two flips are the identity.
        let mut r = img.clone();
        for _ in 0..4 {
            r = dihedral(&r, 1);
        }
        assert_eq!(r, img);
        assert_eq!(dihedral(&dihedral(&img, 4), 4), img);
        // rot90 ccw moves the top-right pixel to the top-left.
        assert_eq!(all[1].data[0..3], img.data[6..9]);
    }
}
