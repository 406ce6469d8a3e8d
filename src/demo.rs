//! `noiseda demo`: trains a Unet-T on the CC0 photos built into the binary (no downloads) and
//! evaluates it on the same photos with AWGN σ=25.

use std::path::{Path, PathBuf};

use crate::config::JobSpec;
use crate::{Error, Result};

/// The bundled CC0 scikit-image photos (data/demo), compiled into the binary.
pub const PHOTOS: [(&str, &[u8]); 6] = [
    (
        "skimage_astronaut.png",
        include_bytes!("../data/demo/skimage_astronaut_9cea59d54e.png"),
    ),
    (
        "skimage_chelsea.png",
        include_bytes!("../data/demo/skimage_chelsea_5fc145ab54.png"),
    ),
    (
        "skimage_coffee.png",
        include_bytes!("../data/demo/skimage_coffee_4124caf9c7.png"),
    ),
    (
        "skimage_motorcycle_left.png",
        include_bytes!("../data/demo/skimage_motorcycle_left_0d16b18285.png"),
    ),
    (
        "skimage_motorcycle_right.png",
        include_bytes!("../data/demo/skimage_motorcycle_right_c072d4564a.png"),
    ),
    (
        "skimage_rocket.png",
        include_bytes!("../data/demo/skimage_rocket_81d3b8a166.png"),
    ),
];

/// The demo's job spec; `clean` is filled in by `prepare`.
pub const SPEC: &str = include_str!("../examples/demo.toml");

/// Writes the bundled photos under `out/data/clean` and returns the demo spec pointing at them.
pub fn prepare(out: &Path, steps: Option<u64>) -> Result<(JobSpec, PathBuf)> {
    let clean = out.join("data").join("clean");
    std::fs::create_dir_all(&clean).map_err(|e| Error::io(&clean, e))?;
    for (name, bytes) in PHOTOS {
        let p = clean.join(name);
        if !p.exists() {
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        }
    }
    let mut spec =
        JobSpec::from_toml(SPEC).map_err(|e| Error::config("examples/demo.toml", e.to_string()))?;
    spec.data.synthetic.clean = Some(clean.clone());
    if let Some(s) = steps {
        spec.steps = s;
    }
    spec.validate()?;
    Ok((spec, clean))
}
