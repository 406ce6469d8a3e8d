//! Everything the CLI prints as a table, a report or JSON: the local commands' summaries
//! (demo, train, eval, degrade, arch, the condition probe, GPU parity) and the jobs client's
//! job, metric and checkpoint views. Functions that return a `String` leave the stream
//! (stdout or stderr) to the caller.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use noiseda::bench::ParityRow;
use noiseda::client;
use noiseda::data::preview::Degraded;
use noiseda::eval::EvalReport;
use noiseda::experiment::ProbePoint;
use noiseda::pb;
use noiseda::runlog::MetricPoint;
use noiseda::train::TrainSummary;
use noiseda::Result;

/// Pretty JSON on stdout.
pub fn json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report serialises")
    );
}

/// `demo`: the table of the input and the two restorers, the verdict and where the pictures are.
pub fn demo_table(rows: &[noiseda::demo::Row], out: &Path) {
    println!(
        "\nTwo held-out photos with simulated high-ISO camera noise (a pipeline neither \
         restorer trained on), restored by each and scored against that camera's noiseless \
         rendering (PSNR dB / SSIM; higher is better):"
    );
    println!(
        "{:<16} {:>9} {:>8} {:>8}  artifact",
        "", "PSNR", "SSIM", "s/step"
    );
    for r in rows {
        let sps = r
            .seconds_per_step
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "-".into());
        let art = r
            .artifact
            .as_ref()
            .map(|a| a.display().to_string())
            .unwrap_or_default();
        println!(
            "{:<16} {:>9.3} {:>8.4} {:>8}  {}",
            r.name, r.psnr, r.ssim, sps, art
        );
    }
    if let [input, vanilla, noise_da] = rows {
        let best = if noise_da.psnr > vanilla.psnr {
            noise_da
        } else {
            vanilla
        };
        println!(
            "best: {} at {:+.2} dB over the noisy input; noise-da {:+.2} dB vs vanilla \
             with the same budget",
            best.name,
            best.psnr - input.psnr,
            noise_da.psnr - vanilla.psnr
        );
    }
    println!("curves: {}", out.join("curves.png").display());
    println!(
        "crops:  {} (noisy | vanilla | noise-da | ground truth)",
        out.join("crops.png").display()
    );
}

/// `train`: steps, loss, speed, the model, then the final metrics.
pub fn train_summary(summary: &TrainSummary) -> Result<()> {
    println!(
        "trained {} steps (from {}), final loss {:.5}, {:.3} s/step, model {}",
        summary.steps,
        summary.start_step,
        summary.final_loss,
        summary.seconds_per_step,
        summary.model_dir()?.display()
    );
    for (k, v) in &summary.metrics {
        println!("  {k} = {v:.4}");
    }
    Ok(())
}

/// `eval`: one line per image, the means, the colour cast.
pub fn eval_report(report: &EvalReport) {
    for s in &report.per_image {
        let [r, g, b] = s.bias;
        println!(
            "{:<48} {:7.3} dB {:.4}   (input {:7.3} dB {:.4})   mean error RGB {r:+.2} {g:+.2} {b:+.2} (input {:+.2} {:+.2} {:+.2})",
            s.name, s.psnr, s.ssim, s.input_psnr, s.input_ssim,
            s.input_bias[0], s.input_bias[1], s.input_bias[2]
        );
    }
    println!(
        "mean over {} images{}: PSNR {:.3} dB, SSIM {:.4} (input {:.3} dB, {:.4})",
        report.images,
        if report.self_ensemble {
            " (self-ensemble ×8)"
        } else {
            ""
        },
        report.psnr,
        report.ssim,
        report.input_psnr,
        report.input_ssim
    );
    println!(
        "colour cast: de-biased PSNR {:.3} dB (input {:.3}); mean |error| per channel {:.2} (input {:.2}), added by the restorer {:.2} (0-255 units)",
        report.psnr_debiased,
        report.input_psnr_debiased,
        report.abs_bias,
        report.input_abs_bias,
        report.added_abs_bias
    );
}

/// `degrade`: each written file with its PSNR and drawn parameters.
pub fn degraded(written: &[Degraded]) {
    for w in written {
        let params = w
            .params
            .as_ref()
            .map(|p| format!("  {p}"))
            .unwrap_or_default();
        println!("{}  {:.2} dB{params}", w.output.display(), w.psnr);
    }
}

/// `experiment probe-conditions`: ε-MSE per condition σ.
pub fn probe_table(points: &[ProbePoint]) {
    println!("{:>6} {:>10}", "sigma", "eps-MSE");
    for p in points {
        println!("{:>6} {:>10.5}", p.sigma, p.mse);
    }
}

/// `bench parity`: what was compared, then one line per compared quantity.
pub fn parity_table(
    device: &str,
    restorer: &str,
    diffusion: &str,
    batch: usize,
    size: usize,
    rows: &[ParityRow],
) {
    println!("{device} vs cpu: {restorer} + {diffusion}, batch {batch} of {size}×{size}");
    for r in rows {
        println!(
            "{:<28} {:>4} tensors  max|Δ| {:.3e}  max|x| {:.3e}  rel {:.3e}",
            r.what, r.tensors, r.max_abs_diff, r.max_abs, r.rel
        );
    }
}

/// `arch`: the restorer presets (parameters, GMACs), then the diffusion presets.
pub fn arch_table(restorers: &[serde_json::Value], diffusion: &[serde_json::Value]) {
    println!(
        "{:<12} {:>12} {:>14}",
        "restorer", "parameters", "GMACs@128²"
    );
    for r in restorers {
        println!(
            "{:<12} {:>12} {:>14.2}",
            r["preset"].as_str().unwrap_or_default(),
            r["parameters"],
            r["gmacs_128"].as_f64().unwrap_or_default()
        );
    }
    println!(
        "\n{:<12} {:>12}  channels (2 res blocks, middle attention, dropout 0.2)",
        "diffusion", "parameters"
    );
    for d in diffusion {
        println!(
            "{:<12} {:>12}  {}",
            d["preset"].as_str().unwrap_or_default(),
            d["parameters"],
            d["config"]["channels"]
        );
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| {
            let at = UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
            humantime::format_rfc3339_seconds(at).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// One line per job.
pub fn job_table(jobs: &[pb::Job]) -> String {
    let mut out = format!(
        "{:<32}  {:<16} {:<10} {:>13}  {:<7} {}\n",
        "ID", "NAME", "STATE", "STEP", "DEVICE", "CREATED"
    );
    for j in jobs {
        let p = j.progress.unwrap_or_default();
        out += &format!(
            "{:<32}  {:<16} {:<10} {:>13}  {:<7} {}\n",
            j.id,
            j.name,
            client::state_name(j.state),
            format!("{}/{}", p.step, p.total_steps),
            j.device,
            time(&j.created_at)
        );
    }
    out
}

/// A job as readable text (or JSON).
pub fn job_text(j: &pb::Job) -> String {
    let p = j.progress.unwrap_or_default();
    let mut out = format!(
        "id          {}\nname        {}\nstate       {}\ndevice      {}\nprogress    {}/{} steps, {:.2} it/s, ETA {:.0} s\ncreated     {}\nstarted     {}\nfinished    {}\nrestarts    {}\n",
        j.id,
        j.name,
        client::state_name(j.state),
        j.device,
        p.step,
        p.total_steps,
        p.steps_per_second,
        p.eta_seconds,
        time(&j.created_at),
        time(&j.started_at),
        time(&j.finished_at),
        j.restarts
    );
    if !j.request_id.is_empty() {
        out += &format!("request id  {}\n", j.request_id);
    }
    if !j.last_error.is_empty() {
        out += &format!("last error  {}\n", j.last_error);
    }
    let metrics: BTreeMap<_, _> = j.metrics.iter().collect();
    for (k, v) in metrics {
        out += &format!("{k:<11} {v:.5}\n");
    }
    out
}

pub fn job_json(j: &pb::Job) -> serde_json::Value {
    let p = j.progress.unwrap_or_default();
    let metrics: BTreeMap<_, _> = j.metrics.iter().collect();
    serde_json::json!({
        "id": j.id,
        "name": j.name,
        "state": client::state_name(j.state),
        "request_id": j.request_id,
        "device": j.device,
        "created_at": time(&j.created_at),
        "started_at": time(&j.started_at),
        "finished_at": time(&j.finished_at),
        "last_error": j.last_error,
        "progress": {
            "step": p.step,
            "total_steps": p.total_steps,
            "steps_per_second": p.steps_per_second,
            "eta_seconds": p.eta_seconds,
            "last_seq": p.last_seq,
        },
        "restarts": j.restarts,
        "metrics": metrics,
        "submitted_spec": j.submitted_spec,
        "resolved_spec": j.resolved_spec,
    })
}

/// Metric points as CSV (`seq,step,wall_time,split,series,value`).
pub fn metrics_csv(points: &[MetricPoint]) -> String {
    let mut out = String::from("seq,step,wall_time,split,series,value\n");
    for p in points {
        out += &format!(
            "{},{},{:.3},{},{},{}\n",
            p.seq, p.step, p.wall, p.split, p.series, p.value
        );
    }
    out
}

/// Metric points as aligned text.
pub fn metrics_text(points: &[MetricPoint]) -> String {
    let mut out = format!(
        "{:>7} {:>8} {:<5} {:<14} {}\n",
        "SEQ", "STEP", "SPLIT", "SERIES", "VALUE"
    );
    for p in points {
        out += &format!(
            "{:>7} {:>8} {:<5} {:<14} {:.6}\n",
            p.seq, p.step, p.split, p.series, p.value
        );
    }
    out
}

/// The header line of `jobs checkpoints`.
pub fn checkpoint_header() -> String {
    format!(
        "{:<15} {:>8} {:>10} {:>5}  metrics\n",
        "ID", "STEP", "MB", "BEST"
    )
}

/// One line per checkpoint: id, step, size, whether it is the best, its metrics.
pub fn checkpoint_rows(checkpoints: &[pb::Checkpoint]) -> String {
    let mut out = String::new();
    for ck in checkpoints {
        let metrics: BTreeMap<_, _> = ck.metrics.iter().collect();
        out += &format!(
            "{:<15} {:>8} {:>10.2} {:>5}  {:?}\n",
            ck.id,
            ck.step,
            ck.size_bytes as f64 / 1e6,
            if ck.is_best { "yes" } else { "" },
            metrics
        );
    }
    out
}
