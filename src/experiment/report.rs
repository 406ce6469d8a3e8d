//! An experiment's `results.md` tables and its validation-curves PNG.

use super::*;

/// The results table (markdown).
pub fn markdown(r: &Report) -> String {
    let pm = |s: Stat, d: usize| format!("{:.*} ± {:.*}", d, s.mean, d, s.std);
    let mut out = format!(
        "# {}: {} steps, seeds {:?}, {} validation pairs\n\n\
         | arm | settings | PSNR (dB) | de-biased PSNR | SSIM | Δ PSNR vs vanilla | seeds | s/step |\n\
         |---|---|---|---|---|---|---|---|\n\
         | noisy input | — | {:.3} | {:.3} | {:.4} | | | |\n",
        r.name, r.steps, r.seeds, r.val_images, r.input["psnr"], r.input["psnr_debiased"], r.input["ssim"]
    );
    for b in &r.baselines {
        let params: Vec<String> = b
            .params
            .iter()
            .filter(|p| !p.is_null())
            .map(|p| p.to_string())
            .collect();
        out += &format!(
            "| {} | baseline{}{} | {:.3} | | {:.4} | {} | | |\n",
            b.method,
            if params.is_empty() {
                String::new()
            } else {
                format!(" {}", params.join("; "))
            },
            if b.selection.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.selection)
            },
            b.psnr,
            b.ssim,
            r.arms
                .iter()
                .find(|a| a.arm == "vanilla")
                .map(|v| format!("{:+.3}", b.psnr - v.psnr.mean))
                .unwrap_or_default(),
        );
    }
    for a in &r.arms {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
            a.arm,
            a.about,
            pm(a.psnr, 3),
            pm(a.psnr_debiased, 3),
            pm(a.ssim, 4),
            a.delta_vs_vanilla
                .map(|d| format!("{d:+.3}"))
                .unwrap_or_default(),
            a.seeds,
            a.seconds_per_step
        );
    }
    out += &paired_by_seed(r);
    // Images where a run is below the noisy input.
    let below: Vec<String> = r
        .runs
        .iter()
        .filter(|x| !x.below_input.is_empty())
        .map(|x| format!("{} seed {}: {}", x.arm, x.seed, x.below_input.join(", ")))
        .collect();
    out += &format!(
        "\nBelow the noisy input (restored PSNR < input PSNR) on: {}\n",
        if below.is_empty() {
            "no image, in any run".to_string()
        } else {
            below.join("; ")
        }
    );
    out += "\nPSNR and SSIM over RGB (per image, then mean); de-biased PSNR removes each restored \
            image's mean per-channel error first, so a global colour cast shows as the gap between \
            the two. ± is the standard deviation over seeds.\n";
    out
}

/// The paired table: each arm's PSNR minus vanilla's with the same seed, per seed and as
/// mean ± std (empty without vanilla or without another arm).
fn paired_by_seed(r: &Report) -> String {
    let pm = |s: Stat, d: usize| format!("{:.*} ± {:.*}", d, s.mean, d, s.std);
    let mut out = String::new();
    let vanilla: BTreeMap<u64, f64> = r
        .runs
        .iter()
        .filter(|x| x.arm == "vanilla")
        .map(|x| (x.seed, x.psnr))
        .collect();
    if !vanilla.is_empty() && r.arms.len() > 1 {
        out += "\nPaired by seed (PSNR minus vanilla's with the same seed):\n\n| arm |";
        for s in &r.seeds {
            out += &format!(" seed {s} |");
        }
        out += " mean ± std |\n|---|";
        out += &"---|".repeat(r.seeds.len() + 1);
        out += "\n";
        for a in r.arms.iter().filter(|a| a.arm != "vanilla") {
            let mut d = Vec::new();
            out += &format!("| {} |", a.arm);
            for s in &r.seeds {
                let run = r.runs.iter().find(|x| x.arm == a.arm && x.seed == *s);
                match (run, vanilla.get(s)) {
                    (Some(x), Some(v)) => {
                        d.push(x.psnr - v);
                        out += &format!(" {:+.3} |", x.psnr - v);
                    }
                    _ => out += " |",
                }
            }
            out += &format!(
                " {} |\n",
                if d.is_empty() {
                    String::new()
                } else {
                    pm(stat(&d), 3)
                }
            );
        }
    }
    out
}

/// Validation PSNR against step, mean over seeds, one line per arm.
pub(super) fn curves(r: &Report, out: &Path) -> Result<PathBuf> {
    let runs: Vec<crate::runlog::curves::Run> = r
        .arms
        .iter()
        .map(|a| {
            let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for run in r.runs.iter().filter(|x| x.arm == a.arm) {
                for &(s, v) in &run.val_curve {
                    by_step.entry(s).or_default().push(v);
                }
            }
            crate::runlog::curves::Run {
                label: a.arm.clone(),
                points: by_step
                    .into_iter()
                    .map(|(step, v)| crate::runlog::MetricPoint {
                        seq: 0,
                        step,
                        wall: 0.0,
                        series: "psnr".into(),
                        split: crate::runlog::Split::Val,
                        value: v.iter().sum::<f64>() / v.len() as f64,
                    })
                    .collect(),
            }
        })
        .collect();
    crate::runlog::curves::validation_curves(&runs, Some(("noisy input", r.input["psnr"])), out)
}
