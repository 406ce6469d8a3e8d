//! The `[baselines]` section: classical denoisers (`scripts/baselines.py`) scored on an
//! experiment's validation pairs, cached in `<out>/baselines.json`.

use super::*;

/// The `[baselines]` section: which classical denoisers to add to the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// Methods of `scripts/baselines.py` (`cbm3d`, `tv`, `nlm`).
    #[serde(default = "default_baselines")]
    pub methods: Vec<String>,
    /// The script (relative paths resolve from the working directory).
    #[serde(default = "default_baseline_script")]
    pub script: PathBuf,
    /// Python interpreter.
    #[serde(default = "default_python")]
    pub python: String,
    /// Cross-fitting folds for the parameter choice (see the script); 0 = its first grid value.
    #[serde(default = "default_folds")]
    pub folds: usize,
}

fn default_baselines() -> Vec<String> {
    vec!["cbm3d".into(), "tv".into(), "nlm".into()]
}

fn default_baseline_script() -> PathBuf {
    PathBuf::from("scripts/baselines.py")
}

fn default_python() -> String {
    "python3".into()
}

fn default_folds() -> usize {
    2
}

/// One classical baseline's row, as `scripts/baselines.py --json` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineRow {
    pub method: String,
    pub label: String,
    pub psnr: f64,
    pub ssim: f64,
    pub params: Vec<serde_json::Value>,
    pub selection: String,
}

/// Runs the baseline script on the validation pairs once (its rows are kept in
/// `<out>/baselines.json` and reused while the methods stay the same). The script reads PNG
/// copies of the pairs as noiseda decoded them (`<out>/baselines/{lq,gt}/`), so both score
/// the same pixels (JPEG decoders differ by a level here and there).
pub(super) fn baselines(
    b: &BaselineSpec,
    val: &PairedFolder,
    out: &Path,
) -> Result<Vec<BaselineRow>> {
    let cache = out.join("baselines.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(rows) = serde_json::from_str::<Vec<BaselineRow>>(&text) {
            if rows.iter().map(|r| &r.method).eq(b.methods.iter()) {
                return Ok(rows);
            }
        }
    }
    let (lq, gt) = (
        out.join("baselines").join("lq"),
        out.join("baselines").join("gt"),
    );
    for p in &val.pairs {
        let name = format!("{}.png", p.name.replace(['/', '\\'], "_"));
        save_rgb(&lq.join(&name), &p.lq)?;
        save_rgb(&gt.join(&name), &p.gt)?;
    }
    let (lq, gt) = (lq.as_path(), gt.as_path());
    eprintln!(
        "baselines {} on {} (scripts/baselines.py; CBM3D takes about a minute per 512x512 image)",
        b.methods.join(", "),
        lq.display()
    );
    let mut cmd = std::process::Command::new(&b.python);
    cmd.arg(&b.script)
        .arg("--noisy")
        .arg(lq)
        .arg("--gt")
        .arg(gt)
        .arg("--methods")
        .arg(b.methods.join(","))
        .arg("--json");
    if b.folds == 0 {
        cmd.arg("--fixed");
    } else {
        cmd.arg("--folds").arg(b.folds.to_string());
    }
    let run = cmd.output().map_err(|e| {
        Error::invalid_input(format!(
            "[baselines]: cannot run {} {}: {e}",
            b.python,
            b.script.display()
        ))
    })?;
    if !run.status.success() {
        return Err(Error::invalid_input(format!(
            "[baselines]: {} failed ({}): {}",
            b.script.display(),
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )));
    }
    #[derive(Deserialize)]
    struct ScriptReport {
        rows: Vec<BaselineRow>,
    }
    let report: ScriptReport = serde_json::from_slice(&run.stdout)
        .map_err(|e| Error::invalid_input(format!("[baselines]: unreadable script output: {e}")))?;
    std::fs::write(
        &cache,
        serde_json::to_vec_pretty(&report.rows).expect("rows serialise"),
    )
    .map_err(|e| Error::io(&cache, e))?;
    Ok(report.rows)
}
