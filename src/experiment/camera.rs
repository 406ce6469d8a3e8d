//! The `[camera]` setting: a simulated real domain (unlabeled photos, validation and supervised
//! pairs) made from clean photos by one degradation recipe.

use super::*;

/// A simulated real domain made from clean photos: sorted photos with index % `val_every` == 0
/// are held out (degraded once, with their clean versions, for validation), the rest are the
/// synthetic domain's clean photos and, degraded `copies` times, the unlabeled real domain (and
/// the pairs of the supervised upper bound). The degradation is the camera pipeline `noise` or
/// any recipe `degradation` (`{ kind = "isp", … }`); exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSetting {
    pub clean: PathBuf,
    #[serde(default = "default_val_every")]
    pub val_every: usize,
    #[serde(default = "default_copies")]
    pub copies: usize,
    #[serde(default)]
    pub noise: Option<crate::data::camera::CameraNoise>,
    #[serde(default)]
    pub degradation: Option<Degradation>,
}

impl CameraSetting {
    /// The one degradation of the setting, checked.
    fn recipe(&self) -> Result<Degradation> {
        match (&self.noise, &self.degradation) {
            (Some(n), None) => Ok(Degradation::Camera(n.clone())),
            (None, Some(d)) => {
                d.validate("camera.degradation")?;
                Ok(d.clone())
            }
            _ => Err(Error::invalid(
                "camera",
                "give exactly one of `noise` (the camera pipeline) and `degradation`",
            )),
        }
    }
}

fn default_val_every() -> usize {
    5
}

fn default_copies() -> usize {
    2
}

/// Writes the camera setting's folders under `root` (once; reused when present).
pub(super) fn prepare_camera(c: &CameraSetting, root: &Path) -> Result<()> {
    let recipe = c.recipe()?;
    let done = root.join(".complete");
    if done.exists() {
        return Ok(());
    }
    let photos = list_images(&c.clean)?;
    if photos.len() < 2 {
        return Err(Error::data(format!(
            "{}: the camera setting needs at least 2 photos",
            c.clean.display()
        )));
    }
    for (i, p) in photos.iter().enumerate() {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{i}"));
        let img = Image::from_rgb8(&load_rgb(p)?);
        // One seed per photo and copy: the folders do not depend on the order of work.
        let rng = |copy: u64| rand_chacha::ChaCha8Rng::seed_from_u64((i as u64) << 8 | copy);
        if i % c.val_every.max(1) == 0 {
            save_rgb(
                &root.join("val/gt").join(format!("{name}.png")),
                &img.to_rgb8(),
            )?;
            let mut noisy = img.clone();
            degrade(&mut rng(255), &mut noisy, &recipe);
            save_rgb(
                &root.join("val/lq").join(format!("{name}.png")),
                &noisy.to_rgb8(),
            )?;
        } else {
            save_rgb(
                &root.join("train-clean").join(format!("{name}.png")),
                &img.to_rgb8(),
            )?;
            for copy in 0..c.copies {
                let mut noisy = img.clone();
                degrade(&mut rng(copy as u64), &mut noisy, &recipe);
                let file = format!("{name}-{copy}.png");
                save_rgb(&root.join("real").join(&file), &noisy.to_rgb8())?;
                save_rgb(&root.join("real-pairs/lq").join(&file), &noisy.to_rgb8())?;
                save_rgb(&root.join("real-pairs/gt").join(&file), &img.to_rgb8())?;
            }
        }
    }
    std::fs::write(&done, b"").map_err(|e| Error::io(&done, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(extra: &str) -> Result<Degradation> {
        let c: CameraSetting = toml::from_str(&format!("clean = \"photos\"\n{extra}"))
            .map_err(|e| Error::invalid("camera", e.to_string()))?;
        c.recipe()
    }

    #[test]
    fn camera_setting_takes_the_camera_pipeline_or_any_recipe() {
        let camera =
            setting("noise = { shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }")
                .expect("camera noise");
        assert!(matches!(camera, Degradation::Camera(_)));
        let isp =
            setting("degradation = { kind = \"isp\", noise_blur = [1.2, 2.0], jpeg = [70, 85] }")
                .expect("isp recipe");
        match isp {
            Degradation::Isp(i) => {
                assert_eq!(i.noise_blur, [1.2, 2.0]);
                assert_eq!(i.jpeg, [70, 85]);
            }
            other => panic!("expected isp, got {other:?}"),
        }
    }

    #[test]
    fn camera_setting_needs_exactly_one_valid_degradation() {
        let both = setting(
            "noise = { shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }\n\
             degradation = { kind = \"awgn\", sigma = [0, 50] }",
        )
        .expect_err("two degradations");
        assert!(both.to_string().contains("exactly one"), "{both}");
        let none = setting("").expect_err("no degradation");
        assert!(none.to_string().contains("exactly one"), "{none}");
        let bad = setting("degradation = { kind = \"isp\", jpeg = [85, 70] }")
            .expect_err("reversed range");
        assert!(
            bad.to_string().contains("camera.degradation.jpeg"),
            "the error names the key: {bad}"
        );
    }
}
