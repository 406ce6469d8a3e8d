//! Folder datasets: clean photos (degraded on the fly), paired folders matched by file name,
//! unlabeled folders; and `TrainData`, which draws one seeded training sample.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::Rng;

use super::augment::{crop, dihedral, random_origin, trim};
use super::io::{list_images, load_rgb};
use super::spec::degrade;
use super::spec::{DataRange, DataSpec, Degradation, PairedSpec};
use super::Image;
use crate::{Error, Result};

/// Loads every image of a folder, checking each is at least `min_side` in both sides.
fn load_folder(dir: &Path, min_side: usize) -> Result<Vec<(PathBuf, RgbImage)>> {
    list_images(dir)?
        .into_iter()
        .map(|p| {
            let img = load_rgb(&p)?;
            check_size(&p, &img, min_side)?;
            Ok((p, img))
        })
        .collect()
}

fn check_size(path: &Path, img: &RgbImage, min_side: usize) -> Result<()> {
    if (img.width() as usize) < min_side || (img.height() as usize) < min_side {
        return Err(Error::data(format!(
            "{} is {}×{}, smaller than the {min_side}×{min_side} patch",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    Ok(())
}

/// Clean photos for synthetic degradation.
#[derive(Debug)]
pub struct CleanFolder {
    pub images: Vec<(PathBuf, RgbImage)>,
}

impl CleanFolder {
    pub fn load(dir: &Path, min_side: usize) -> Result<Self> {
        Ok(Self {
            images: load_folder(dir, min_side)?,
        })
    }
}

/// Real-domain degraded images without labels.
#[derive(Debug)]
pub struct UnlabeledFolder {
    pub images: Vec<(PathBuf, RgbImage)>,
}

impl UnlabeledFolder {
    pub fn load(dir: &Path, min_side: usize) -> Result<Self> {
        Ok(Self {
            images: load_folder(dir, min_side)?,
        })
    }
}

#[derive(Debug)]
pub struct Pair {
    /// File name of the degraded image.
    pub name: String,
    pub lq: RgbImage,
    pub gt: RgbImage,
}

/// Degraded/target folders matched by file name.
#[derive(Debug)]
pub struct PairedFolder {
    pub pairs: Vec<Pair>,
}

/// Words that name an image's role rather than its scene (SIDD `GT`/`NOISY`, PolyU
/// `mean`/`real`, ...). They are dropped when file names do not match exactly.
const ROLE_WORDS: [&str; 14] = [
    "gt", "noisy", "clean", "mean", "real", "input", "target", "lq", "hq", "rain", "norain",
    "blur", "sharp", "degraded",
];

fn role_free_key(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    stem.split(['_', '-'])
        .filter(|t| !ROLE_WORDS.contains(t))
        .collect::<Vec<_>>()
        .join("_")
}

/// Indexes files by `key`; two files with the same key are an error naming both.
fn index_unique<K: std::hash::Hash + Eq>(
    files: &[PathBuf],
    key: fn(&Path) -> K,
) -> Result<HashMap<K, &PathBuf>> {
    let mut index = HashMap::with_capacity(files.len());
    for f in files {
        if let Some(prev) = index.insert(key(f), f) {
            return Err(Error::data(format!(
                "{} and {} map to the same pair name",
                prev.display(),
                f.display()
            )));
        }
    }
    Ok(index)
}

/// Matches degraded and target files: by exact file name, else by name without role words
/// (`0001_NOISY_SRGB_010.PNG` ↔ `0001_GT_SRGB_010.PNG`). Any file left unmatched is an error.
pub fn match_pairs(lq_dir: &Path, gt_dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let lqs = list_images(lq_dir)?;
    let gts = list_images(gt_dir)?;
    let name = |p: &Path| p.file_name().map(|n| n.to_os_string());
    let by_name: HashMap<_, _> = gts.iter().map(|p| (name(p), p)).collect();
    let exact = lqs.iter().all(|p| by_name.contains_key(&name(p)));
    let key: fn(&Path) -> Option<std::ffi::OsString> = if exact {
        |p| p.file_name().map(|n| n.to_os_string())
    } else {
        |p| Some(role_free_key(p).into())
    };
    let mut gt_by_key = index_unique(&gts, key)?;
    index_unique(&lqs, key)?;
    let mut pairs = Vec::with_capacity(lqs.len());
    for l in &lqs {
        let g = gt_by_key.remove(&key(l)).ok_or_else(|| {
            Error::data(format!(
                "unmatched pair: {} has no target in {}",
                l.display(),
                gt_dir.display()
            ))
        })?;
        pairs.push((l.clone(), g.clone()));
    }
    if let Some(g) = gt_by_key.values().min() {
        return Err(Error::data(format!(
            "unmatched pair: {} has no degraded image in {}",
            g.display(),
            lq_dir.display()
        )));
    }
    Ok(pairs)
}

/// Names of degraded-image folders in the layouts datasets ship with.
pub const LQ_DIRS: [&str; 9] = [
    "input", "blur", "blurred", "rain", "rainy", "noisy", "lq", "low", "degraded",
];
/// Names of target folders.
pub const GT_DIRS: [&str; 9] = [
    "target",
    "sharp",
    "gt",
    "norain",
    "clean",
    "groundtruth",
    "high",
    "hq",
    "mean",
];

/// Sorted sub-folders of `dir`.
fn sub_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Every (degraded, target) folder pair under `root` (itself included, 3 levels deep): a folder
/// with one sub-folder named as in [`LQ_DIRS`] and one as in [`GT_DIRS`] — Rain13K and SPA
/// `input`/`target`, GoPro `GOPR…/blur` + `sharp`, RealBlur `scene…/blur` + `gt`.
pub fn discover_pairs(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
        let subs = sub_dirs(dir)?;
        let named = |names: &[&str]| -> Vec<&PathBuf> {
            subs.iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| names.contains(&n.to_ascii_lowercase().as_str()))
                })
                .collect()
        };
        let (lqs, gts) = (named(&LQ_DIRS), named(&GT_DIRS));
        match (lqs.as_slice(), gts.as_slice()) {
            ([lq], [gt]) => out.push(((*lq).clone(), (*gt).clone())),
            ([], []) if depth > 0 => {
                for s in &subs {
                    walk(s, depth - 1, out)?;
                }
            }
            ([], []) => {}
            _ => {
                return Err(Error::data(format!(
                    "{} has an ambiguous layout: degraded folders {:?}, target folders {:?}",
                    dir.display(),
                    lqs,
                    gts
                )))
            }
        }
        Ok(())
    }
    if !root.is_dir() {
        return Err(Error::data(format!("{} is not a folder", root.display())));
    }
    let mut out = Vec::new();
    walk(root, 3, &mut out)?;
    if out.is_empty() {
        return Err(Error::data(format!(
            "no paired folders under {}: expected sub-folders named one of {:?} next to one of {:?}",
            root.display(),
            LQ_DIRS,
            GT_DIRS
        )));
    }
    Ok(out)
}

impl PairedFolder {
    /// Loads matched pairs (at most `max` if non-zero), each at least `min_side` in both sides
    /// and with equal sizes.
    pub fn load(lq_dir: &Path, gt_dir: &Path, min_side: usize, max: usize) -> Result<Self> {
        let matched = match_pairs(lq_dir, gt_dir)?;
        Self::load_matched(matched, None, min_side, max)
    }

    /// Loads every pair under a dataset root (see [`discover_pairs`]); names are prefixed with
    /// the scene folder when there are several.
    pub fn load_root(root: &Path, min_side: usize, max: usize) -> Result<Self> {
        let mut matched = Vec::new();
        for (lq, gt) in discover_pairs(root)? {
            matched.extend(match_pairs(&lq, &gt)?);
        }
        Self::load_matched(matched, Some(root), min_side, max)
    }

    /// Loads the pairs of a `[data.val]`-style spec: `lq` + `gt`, or `root`.
    pub fn load_spec(spec: &PairedSpec, min_side: usize) -> Result<Self> {
        match (&spec.lq, &spec.gt, &spec.root) {
            (Some(lq), Some(gt), None) => Self::load(lq, gt, min_side, spec.max_images),
            (None, None, Some(root)) => Self::load_root(root, min_side, spec.max_images),
            _ => Err(Error::invalid(
                "data.val",
                "give both `lq` and `gt`, or a paired dataset `root`",
            )),
        }
    }

    fn load_matched(
        mut matched: Vec<(PathBuf, PathBuf)>,
        root: Option<&Path>,
        min_side: usize,
        max: usize,
    ) -> Result<Self> {
        if max > 0 {
            matched.truncate(max);
        }
        let pairs = matched
            .into_iter()
            .map(|(l, g)| {
                let (lq, gt) = (load_rgb(&l)?, load_rgb(&g)?);
                if lq.dimensions() != gt.dimensions() {
                    return Err(Error::data(format!(
                        "{} is {:?} but its target {} is {:?}",
                        l.display(),
                        lq.dimensions(),
                        g.display(),
                        gt.dimensions()
                    )));
                }
                check_size(&l, &lq, min_side)?;
                // Under a root: the path from the root without the role folder
                // (`GOPR0372_07_00/000047.png`); else the file name.
                let name = match root.and_then(|r| l.strip_prefix(r).ok()) {
                    Some(rel) => {
                        let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                        let mut keep: Vec<&str> = parts[..parts.len() - 1]
                            .iter()
                            .map(|p| p.as_ref())
                            .filter(|p| !LQ_DIRS.contains(&p.to_ascii_lowercase().as_str()))
                            .collect();
                        keep.push(parts[parts.len() - 1].as_ref());
                        keep.join("/")
                    }
                    None => l
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                Ok(Pair { name, lq, gt })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { pairs })
    }
}

/// Where labelled training samples come from.
#[derive(Debug)]
pub enum SyntheticSource {
    Clean(CleanFolder, Degradation),
    Paired(PairedFolder),
}

/// Everything the loader draws from.
#[derive(Debug)]
pub struct TrainData {
    pub synthetic: SyntheticSource,
    pub real: Option<UnlabeledFolder>,
    /// Unpaired clean images (diffusion targets of `noise-da-unpaired`).
    pub unpaired: Option<CleanFolder>,
    pub patch: usize,
    /// Value range of the batches (pixels are mapped into it by the loader).
    pub range: DataRange,
}

impl TrainData {
    /// Loads the folders a spec names (the validation set is loaded separately); batches will
    /// be in `range`.
    pub fn load(spec: &DataSpec, range: DataRange) -> Result<Self> {
        let s = &spec.synthetic;
        let synthetic = match (&s.clean, &s.degradation, &s.lq, &s.gt, &s.root) {
            (Some(dir), Some(d), None, None, None) => {
                SyntheticSource::Clean(CleanFolder::load(dir, spec.patch)?, d.clone())
            }
            (None, None, Some(lq), Some(gt), None) => {
                SyntheticSource::Paired(PairedFolder::load(lq, gt, spec.patch, 0)?)
            }
            (None, None, None, None, Some(root)) => {
                SyntheticSource::Paired(PairedFolder::load_root(root, spec.patch, 0)?)
            }
            _ => {
                return Err(Error::invalid(
                    "data.synthetic",
                    "give one of: `clean` (+ `degradation`), both `lq` and `gt`, or a paired dataset `root`",
                ))
            }
        };
        let real = spec
            .real
            .as_ref()
            .map(|r| UnlabeledFolder::load(&r.dir, spec.patch))
            .transpose()?;
        let unpaired = spec
            .unpaired
            .as_ref()
            .map(|u| CleanFolder::load(&u.dir, spec.patch))
            .transpose()?;
        Ok(Self {
            synthetic,
            real,
            unpaired,
            patch: spec.patch,
            range,
        })
    }

    /// One synthetic (degraded, target) sample: a random image, a shared random crop and
    /// dihedral transform, then the degradation (clean source only).
    pub fn sample_synthetic(&self, rng: &mut impl Rng) -> (Image, Image) {
        let p = self.patch;
        match &self.synthetic {
            SyntheticSource::Clean(folder, how) => {
                let (_, img) = &folder.images[rng.gen_range(0..folder.images.len())];
                // Blur reads context beyond the patch: crop it too where the image allows,
                // degrade, then trim (otherwise the kernel sees clamped edges).
                let side = (img.width().min(img.height())) as usize;
                let m = how.margin().min(side.saturating_sub(p) / 2);
                let (x, y) = random_origin(rng, img, p + 2 * m);
                let gt = dihedral(&crop(img, x, y, p + 2 * m), rng.gen_range(0..8));
                let mut lq = gt.clone();
                degrade(rng, &mut lq, how);
                if m == 0 {
                    (lq, gt)
                } else {
                    (trim(&lq, m, p), trim(&gt, m, p))
                }
            }
            SyntheticSource::Paired(folder) => {
                let pair = &folder.pairs[rng.gen_range(0..folder.pairs.len())];
                let (x, y) = random_origin(rng, &pair.lq, p);
                let k = rng.gen_range(0..8);
                (
                    dihedral(&crop(&pair.lq, x, y, p), k),
                    dihedral(&crop(&pair.gt, x, y, p), k),
                )
            }
        }
    }

    /// One real-domain sample (own crop and transform), if a real folder is configured.
    pub fn sample_real(&self, rng: &mut impl Rng) -> Option<Image> {
        let folder = self.real.as_ref()?;
        Some(self.random_patch(rng, &folder.images))
    }

    /// One unpaired clean sample, if an unpaired folder is configured.
    pub fn sample_unpaired(&self, rng: &mut impl Rng) -> Option<Image> {
        let folder = self.unpaired.as_ref()?;
        Some(self.random_patch(rng, &folder.images))
    }

    fn random_patch(&self, rng: &mut impl Rng, images: &[(PathBuf, RgbImage)]) -> Image {
        let (_, img) = &images[rng.gen_range(0..images.len())];
        let (x, y) = random_origin(rng, img, self.patch);
        dihedral(&crop(img, x, y, self.patch), rng.gen_range(0..8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, w: u32, h: u32) {
        std::fs::create_dir_all(dir).unwrap();
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(dir.join(name))
            .unwrap();
    }

    #[test]
    fn pairs_match_by_name_and_by_role_free_name() {
        let t = tempfile::tempdir().unwrap();
        let (lq, gt) = (t.path().join("lq"), t.path().join("gt"));
        write(&lq, "a.png", 16, 16);
        write(&gt, "a.png", 16, 16);
        write(&lq, "b.png", 16, 16);
        write(&gt, "b.png", 16, 16);
        assert_eq!(match_pairs(&lq, &gt).unwrap().len(), 2);

        let (n, g) = (t.path().join("NOISY"), t.path().join("GT"));
        write(&n, "0001_NOISY_SRGB_010.png", 16, 16);
        write(&g, "0001_GT_SRGB_010.png", 16, 16);
        let pairs = match_pairs(&n, &g).unwrap();
        assert!(pairs[0].1.ends_with("0001_GT_SRGB_010.png"));
    }

    #[test]
    fn unmatched_and_small_images_are_named() {
        let t = tempfile::tempdir().unwrap();
        let (lq, gt) = (t.path().join("lq"), t.path().join("gt"));
        write(&lq, "a.png", 16, 16);
        write(&lq, "lonely.png", 16, 16);
        write(&gt, "a.png", 16, 16);
        let err = match_pairs(&lq, &gt).unwrap_err().to_string();
        assert!(
            err.contains("unmatched") && err.contains("lonely.png"),
            "{err}"
        );

        let clean = t.path().join("clean");
        write(&clean, "tiny.png", 20, 40);
        let err = CleanFolder::load(&clean, 32).unwrap_err().to_string();
        assert!(err.contains("tiny.png") && err.contains("32×32"), "{err}");
    }
}
