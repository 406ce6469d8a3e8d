//! `noiseda experiment probe-conditions`: the paper's Fig. 1(a) probe of how a conditional
//! diffusion net's loss depends on its condition.

use super::*;

/// Settings of the paper's Fig. 1(a) probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Clean photos.
    pub clean: PathBuf,
    /// Training steps of the conditional diffusion net.
    pub steps: u64,
    pub patch: usize,
    pub batch: usize,
    pub seed: u64,
    /// Diffusion preset (`diffusion-t`, ...).
    pub preset: String,
    /// Condition noise levels (σ in 0–255 units).
    pub sigmas: Vec<f32>,
}

/// One point of the probe: condition noise σ and the diffusion net's ε-MSE.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbePoint {
    pub sigma: f32,
    pub mse: f64,
}

/// Random `patch`² crops of `photos` as a (b, 3, p, p) tensor in [0, 1].
fn crops(
    photos: &[Image],
    rng: &mut impl rand::Rng,
    b: usize,
    patch: usize,
) -> Result<candle::Tensor> {
    let mut data = Vec::with_capacity(b * 3 * patch * patch);
    for _ in 0..b {
        let img = &photos[rng.gen_range(0..photos.len())];
        let y0 = rng.gen_range(0..=img.height - patch);
        let x0 = rng.gen_range(0..=img.width - patch);
        for c in 0..3 {
            for y in y0..y0 + patch {
                for x in x0..x0 + patch {
                    data.push(img.data[(y * img.width + x) * 3 + c]);
                }
            }
        }
    }
    Ok(candle::Tensor::from_vec(
        data,
        (b, 3, patch, patch),
        &candle::Device::Cpu,
    )?)
}

/// The paper's Fig. 1(a): a conditional diffusion net trained briefly with clean conditions
/// (both slots = the clean target), then its ε-MSE on fixed draws as the condition is corrupted
/// by AWGN of each σ. The paper's curve rises monotonically: the loss "sees" the condition's
/// noise, which is what lets it guide a restorer.
/// ~110 lines: the training and the measurement share the net, the draws and the photos.
pub fn probe_conditions(opts: &ProbeOptions, progress: bool) -> Result<Vec<ProbePoint>> {
    use candle::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    let photos: Vec<Image> = list_images(&opts.clean)?
        .iter()
        .map(|p| load_rgb(p).map(|i| Image::from_rgb8(&i)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|i| i.width >= opts.patch && i.height >= opts.patch)
        .collect();
    if photos.is_empty() {
        return Err(Error::data(format!(
            "{}: no photo of at least {}×{}",
            opts.clean.display(),
            opts.patch,
            opts.patch
        )));
    }
    let mut cfg = crate::model::DiffusionConfig::preset(&opts.preset).ok_or_else(|| {
        Error::invalid_input(format!("unknown diffusion preset `{}`", opts.preset))
    })?;
    cfg.dropout = 0.0;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = crate::model::DiffusionUNet::new(vb, &cfg)?;
    crate::model::init_weights(&varmap, "", opts.seed, 1)?;
    let mut params: Vec<(String, candle::Var)> = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = train::Adam::new(
        params,
        crate::config::OptimizerSpec {
            lr: 2e-4,
            ..Default::default()
        },
    )?;
    let schedule = crate::method::schedule::Schedule::linear(1000, 1e-6, 1e-2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let draw = |rng: &mut rand_chacha::ChaCha8Rng,
                b: usize,
                shape: &[usize]|
     -> Result<(Tensor, Tensor)> {
        let gammas: Vec<f32> = (0..b)
            .map(|_| schedule.sample_gamma(rng, [1, 999]) as f32)
            .collect();
        let n: usize = shape.iter().product();
        let eps: Vec<f32> = (0..n)
            .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng))
            .collect();
        Ok((
            Tensor::from_vec(gammas, b, &Device::Cpu)?,
            Tensor::from_vec(eps, shape, &Device::Cpu)?,
        ))
    };
    let noisy_target =
        |y0: &Tensor, g: &Tensor, eps: &Tensor| -> Result<Tensor> {
            let g4 = g.reshape((g.dim(0)?, 1, 1, 1))?;
            Ok((y0.broadcast_mul(&g4.sqrt()?)?
                + eps.broadcast_mul(&g4.affine(-1.0, 1.0)?.sqrt()?)?)?)
        };
    let bar = if progress {
        indicatif::ProgressBar::new(opts.steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let shape = [opts.batch, 3, opts.patch, opts.patch];
    for _ in 0..opts.steps {
        let y0 = crops(&photos, &mut rng, opts.batch, opts.patch)?;
        let (g, eps) = draw(&mut rng, opts.batch, &shape)?;
        let y_t = noisy_target(&y0, &g, &eps)?;
        let pred = net.forward(&Tensor::cat(&[&y_t, &y0, &y0], 1)?, &g, None)?;
        let loss = crate::method::loss::mse(&pred, &eps)?;
        opt.step(&loss.backward()?)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Fixed evaluation draws, shared by every σ: crops, ᾱ, ε and the unit condition noise.
    let mut eval_rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0xe7a1);
    let batches = (0..4)
        .map(|_| {
            let y0 = crops(&photos, &mut eval_rng, opts.batch, opts.patch)?;
            let (g, eps) = draw(&mut eval_rng, opts.batch, &shape)?;
            let (_, unit) = draw(&mut eval_rng, opts.batch, &shape)?;
            Ok((y0, g, eps, unit))
        })
        .collect::<Result<Vec<_>>>()?;
    opts.sigmas
        .iter()
        .map(|&sigma| {
            let mut sum = 0.0;
            for (y0, g, eps, unit) in &batches {
                let cond = (y0 + (unit * (sigma as f64 / 255.0))?)?;
                let y_t = noisy_target(y0, g, eps)?;
                let pred = net.forward(&Tensor::cat(&[&y_t, &cond, &cond], 1)?, g, None)?;
                sum += crate::method::loss::mse(&pred, eps)?.to_scalar::<f32>()? as f64;
            }
            Ok(ProbePoint {
                sigma,
                mse: sum / batches.len() as f64,
            })
        })
        .collect()
}
