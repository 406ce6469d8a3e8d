//! Pins `noiseda::quality` to scikit-image: the PNG pairs and reference values in
//! `tests/fixtures/metrics/` were produced by `scripts/make_metrics_fixture.py`.

use std::path::{Path, PathBuf};

use noiseda::quality::{psnr, ssim, Channel, RgbF32};
use serde_json::Value;

const PSNR_TOL_DB: f64 = 1e-3;
const SSIM_TOL: f64 = 1e-5;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

/// Loads a PNG as (width, height, interleaved RGB f32 = u8 / 255).
fn load_rgb(path: &Path) -> (usize, usize, Vec<f32>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    let data = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    (w as usize, h as usize, data)
}

fn field_f64(entry: &Value, key: &str) -> f64 {
    entry[key]
        .as_f64()
        .unwrap_or_else(|| panic!("expected.json: missing number {key:?} in {entry}"))
}

fn field_str<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("expected.json: missing string {key:?} in {entry}"))
}

#[test]
fn metrics_match_skimage_fixture() {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("read expected.json");
    let expected: Value = serde_json::from_str(&text).expect("parse expected.json");
    let pairs = expected["pairs"].as_array().expect("expected.json: pairs");
    assert!(!pairs.is_empty(), "expected.json has no pairs");

    let mut failures = Vec::new();
    for entry in pairs {
        let name = field_str(entry, "name");
        let (gw, gh, gt) = load_rgb(&dir.join(field_str(entry, "gt")));
        let (nw, nh, noisy) = load_rgb(&dir.join(field_str(entry, "noisy")));
        assert_eq!((gw, gh), (nw, nh), "{name}: gt/noisy sizes differ");
        assert_eq!(
            (gw as f64, gh as f64),
            (field_f64(entry, "width"), field_f64(entry, "height")),
            "{name}: PNG size differs from expected.json"
        );
        let a = RgbF32 {
            width: gw,
            height: gh,
            data: &gt,
        };
        let b = RgbF32 {
            width: nw,
            height: nh,
            data: &noisy,
        };

        let checks = [
            ("psnr", psnr(a, b, Channel::Rgb).unwrap(), PSNR_TOL_DB),
            ("ssim", ssim(a, b, Channel::Rgb).unwrap(), SSIM_TOL),
            ("psnr_y", psnr(a, b, Channel::Y).unwrap(), PSNR_TOL_DB),
            ("ssim_y", ssim(a, b, Channel::Y).unwrap(), SSIM_TOL),
        ];
        for (key, got, tol) in checks {
            let want = field_f64(entry, key);
            let diff = (got - want).abs();
            if diff.is_nan() || diff >= tol {
                failures.push(format!(
                    "{name} {key}: got {got:.10}, skimage {want:.10}, |diff| {diff:.3e} >= {tol:e}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "metrics disagree with skimage {}:\n{}",
        expected["skimage_version"],
        failures.join("\n")
    );
}
