//! Numerical parity of the restorer, the diffusion net and the joint step (values and gradients)
//! with an independent float64 PyTorch reference of the official semantics
//! (tests/fixtures/parity/make_parity_fixture.py; skipped when the fixture is missing).

use std::collections::HashMap;
use std::path::PathBuf;

use candle::{DType, Device, Tensor};
use noiseda::config::{Conditions, Hinge};
use noiseda::data::Batch;
use noiseda::method::schedule::Schedule;
use noiseda::method::{joint_step_with, swap_slots, Draws, Joint, StepOutput};
use noiseda::model::{ArchConfig, DiffusionConfig, DiffusionUNet, UNetConfig};
use noiseda::train::Model;

/// Largest relative error accepted (float32 Rust vs float64 reference; a float32 PyTorch run of
/// the same computation lands within ~2e-6).
const TOL: f64 = 1e-4;

/// Gradient norms of `loss` reported by name (every variable is checked as well).
const GRAD_KEYS: [&str; 5] = [
    "restorer.down_path.0.block.0.weight",
    "restorer.last.weight",
    "diffusion.input_blocks.0.0.weight",
    "diffusion.out.2.weight",
    "diffusion.cond_embed.0.weight",
];

/// Gradient norms of `l_noise` alone: the diffusion loss must reach the restorer.
const GRAD_LNOISE_KEYS: [&str; 2] = [
    "restorer.down_path.0.block.0.weight",
    "restorer.last.weight",
];

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/parity.safetensors")
}

fn arch() -> ArchConfig {
    ArchConfig::UNet(UNetConfig {
        width: 4,
        depth: 4,
        slope: 0.2,
    })
}

fn diffusion_config() -> DiffusionConfig {
    DiffusionConfig {
        channels: vec![16, 32],
        res_blocks: 1,
        attention: true,
        dropout: 0.0,
    }
}

/// splitmix64 finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// The fixture's fixed weights, bit for bit as `fixture_weight` in make_parity_fixture.py:
/// values in [-1, 1) on a 2^-23 grid from splitmix64(fnv1a(name) + k·φ), scaled per kind
/// (conv/linear weights variance 1/fan_in, biases ±0.05, norm scales 1 ± 0.1) in f64.
fn fixture_weight(name: &str, dims: &[usize]) -> Tensor {
    let seed = name.bytes().fold(0xCBF29CE484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001B3)
    });
    let n: usize = dims.iter().product();
    let scale = |u: f64| -> f64 {
        if name.ends_with(".weight") && dims.len() >= 2 {
            u * (3.0 / (n / dims[0]) as f64).sqrt()
        } else if name.ends_with(".weight") {
            1.0 + 0.1 * u
        } else {
            assert!(name.ends_with(".bias"), "unexpected parameter {name}");
            0.05 * u
        }
    };
    let values: Vec<f32> = (0..n as u64)
        .map(|k| {
            let z = splitmix(seed.wrapping_add(k.wrapping_mul(0x9E3779B97F4A7C15)));
            scale((z >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).expect("weight shape")
}

/// The fixture's inputs and reference values, and a model holding the fixture's weights.
struct Fixture {
    tensors: HashMap<String, Tensor>,
    model: Model,
}

impl Fixture {
    /// None (after printing why) when the fixture file is missing.
    fn load() -> Option<Self> {
        let path = fixture_path();
        if !path.exists() {
            eprintln!(
                "skipping parity test: {} is missing (regenerate with \
                 python3 tests/fixtures/parity/make_parity_fixture.py)",
                path.display()
            );
            return None;
        }
        let tensors =
            candle::safetensors::load(&path, &Device::Cpu).expect("read the parity fixture");
        let model = Model::new(&arch(), Some(&diffusion_config()), 0, &Device::Cpu)
            .expect("build the parity model");
        let weights: HashMap<String, Tensor> = model
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let w = fixture_weight(&name, t.dims());
                (name, w)
            })
            .collect();
        model
            .load_tensors(weights)
            .expect("fixture weights name and shape every model variable");
        Some(Self { tensors, model })
    }

    fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("the parity fixture has no `{name}`"))
    }

    fn scalar(&self, name: &str) -> f64 {
        values(self.tensor(name))[0]
    }

    fn diffusion(&self) -> &DiffusionUNet {
        self.model
            .diffusion
            .as_ref()
            .expect("the parity model has a diffusion net")
    }

    fn batch(&self) -> Batch {
        Batch {
            step: self.scalar("in.step") as u64,
            lq: self.tensor("in.x_s").clone(),
            gt: self.tensor("in.y_s").clone(),
            real: Some(self.tensor("in.x_r").clone()),
            unpaired: None,
        }
    }

    fn joint(&self) -> Joint {
        Joint {
            unpaired: false,
            charbonnier_eps: self.scalar("in.charbonnier_eps"),
            weight: 0.2,
            ramp_steps: self.scalar("in.ramp") as u64,
            hold_steps: 0,
            margin: self.scalar("in.margin"),
            hinge: Hinge::Batch,
            shuffle: true,
            residual_swap: true,
            conditions: Conditions::Both,
            t_range: [1, 999],
            schedule: Schedule::linear(1000, 1e-6, 1e-2),
        }
    }

    fn draws(&self) -> Draws {
        Draws {
            gammas: self.tensor("in.gammas").clone(),
            eps: self.tensor("in.eps").clone(),
            mask_pos: self.tensor("in.mask_pos").clone(),
            mask_neg: self.tensor("in.mask_neg").clone(),
        }
    }

    /// The joint step on the fixture's batch and draws, without dropout.
    fn step(&self) -> StepOutput {
        let batch = self.batch();
        joint_step_with(
            &self.joint(),
            self.model.nets(),
            &batch,
            &self.draws(),
            None,
        )
        .expect("joint step")
    }
}

/// All elements as f64, row-major.
fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor values")
}

fn output(out: &StepOutput, name: &str) -> Tensor {
    out.scalars
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("the joint step logs no `{name}`"))
        .1
        .clone()
}

/// Relative error of two scalars.
fn rel_scalar(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-12)
}

fn assert_scalar(what: &str, got: f64, want: f64) {
    let rel = rel_scalar(got, want);
    assert!(
        rel <= TOL,
        "{what}: rust {got:.9} vs reference {want:.9} (relative error {rel:.2e} > {TOL:.0e})"
    );
}

/// max |got − want| / max |want| ≤ TOL, shapes equal.
fn assert_tensor(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(
        got.dims(),
        want.dims(),
        "{what}: rust shape vs reference shape"
    );
    let (g, w) = (values(got), values(want));
    let max_diff = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    let scale = w.iter().map(|b| b.abs()).fold(0f64, f64::max).max(1e-12);
    let rel = max_diff / scale;
    assert!(
        rel <= TOL,
        "{what}: max |rust − reference| = {max_diff:.3e}, max |reference| = {scale:.3e} \
         (relative error {rel:.2e} > {TOL:.0e})"
    );
}

/// L2 norms of the gradients in `grads` of every trainable variable, by name.
fn grad_norms(model: &Model, grads: &candle::backprop::GradStore) -> HashMap<String, f64> {
    model
        .trainable()
        .into_iter()
        .filter_map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .map(|g| (name, values(g).iter().map(|v| v * v).sum::<f64>().sqrt()))
        })
        .collect()
}

#[test]
fn restorer_matches_reference() {
    let Some(f) = Fixture::load() else { return };
    let restored = f
        .model
        .restorer
        .restore(f.tensor("in.x_s"), true)
        .expect("restore x_s");
    assert_tensor("restored x_s + R(x_s)", &restored, f.tensor("out.restored"));
}

#[test]
fn restorer_pads_odd_sizes_like_reference() {
    let Some(f) = Fixture::load() else { return };
    let restored = f
        .model
        .restorer
        .restore(f.tensor("in.x_odd"), true)
        .expect("restore the 29×27 input");
    assert_tensor(
        "restored 29×27 input (replicate pad to ×8, crop)",
        &restored,
        f.tensor("out.restored_odd"),
    );
}

#[test]
fn diffusion_net_matches_reference() {
    let Some(f) = Fixture::load() else { return };
    let eps = f
        .diffusion()
        .forward(f.tensor("in.diffusion_x"), f.tensor("in.gammas"), None)
        .expect("diffusion forward");
    assert_tensor(
        "standalone diffusion output D(x, ᾱ)",
        &eps,
        f.tensor("out.diffusion"),
    );
}

#[test]
fn diffusion_passes_match_reference() {
    // Rebuilds both passes of the joint step from the public pieces, so a mismatch of the
    // step's scalars can be told apart from a mismatch of its inputs to the diffusion net.
    let Some(f) = Fixture::load() else { return };
    let r = &f.model.restorer;
    let (x_s, y_s, x_r) = (f.tensor("in.x_s"), f.tensor("in.y_s"), f.tensor("in.x_r"));
    let (gammas, eps) = (f.tensor("in.gammas"), f.tensor("in.eps"));
    let r_s = r.residual(x_s, true).expect("R(x_s)");
    let r_r = r.residual(x_r, true).expect("R(x_r)");
    let b = x_s.dims4().expect("x_s is 4-d").0;
    let g4 = gammas.reshape((b, 1, 1, 1)).expect("ᾱ as (b,1,1,1)");
    let y_t = (y_s.broadcast_mul(&g4.sqrt().unwrap()).unwrap()
        + eps
            .broadcast_mul(&g4.affine(-1.0, 1.0).unwrap().sqrt().unwrap())
            .unwrap())
    .expect("y_t");
    let pass = |syn: &Tensor, real: &Tensor, mask: &Tensor| {
        let (a, bb) = swap_slots(syn, real, mask).expect("swap slots");
        let xs = Tensor::cat(&[&y_t, &a, &bb], 1).expect("9-channel input");
        f.diffusion()
            .forward(&xs, gammas, None)
            .expect("diffusion forward")
    };
    let eps_pos = pass(
        &(x_s + &r_s).unwrap(),
        &(x_r + &r_r).unwrap(),
        f.tensor("in.mask_pos"),
    );
    assert_tensor(
        "positive pass ε_pos = D(cat[y_t, swap(ŷ_s, ŷ_r)], ᾱ)",
        &eps_pos,
        f.tensor("out.eps_pos"),
    );
    let eps_neg = pass(
        &(x_s + &r_r).unwrap(),
        &(x_r + &r_s).unwrap(),
        f.tensor("in.mask_neg"),
    );
    assert_tensor(
        "negative pass ε_neg = D(cat[y_t, swap(x_s + R_r, x_r + R_s)], ᾱ)",
        &eps_neg,
        f.tensor("out.eps_neg"),
    );
}

#[test]
fn joint_step_scalars_match_reference() {
    let Some(f) = Fixture::load() else { return };
    // The fixture is only meaningful with the hinge active.
    assert!(
        f.scalar("out.d_pos") - f.scalar("out.d_neg") + f.scalar("in.margin") > 0.0,
        "fixture: the hinge should be active"
    );
    let joint = f.joint();
    let step = f.scalar("in.step") as u64;
    assert_scalar("λ(step)", joint.lambda(step), f.scalar("in.lambda"));
    let out = f.step();
    let v = |name: &str| values(&output(&out, name))[0];
    assert_scalar("logged λ", v("lambda"), f.scalar("in.lambda"));
    for name in ["charbonnier", "d_pos", "d_neg", "hinge", "l_noise", "loss"] {
        assert_scalar(name, v(name), f.scalar(&format!("out.{name}")));
    }
    assert_scalar(
        "loss (returned)",
        values(&out.loss)[0],
        f.scalar("out.loss"),
    );
}

#[test]
fn joint_step_gradients_match_reference() {
    let Some(f) = Fixture::load() else { return };
    let out = f.step();
    let grads = out.loss.backward().expect("backward of loss");
    let norms = grad_norms(&f.model, &grads);
    // Every trainable variable: gradient present and its norm within tolerance.
    let trainable = f.model.trainable();
    let expected = f.tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        expected,
        trainable.len(),
        "fixture gradient norms vs trainable variables"
    );
    let mut bad: Vec<(f64, String)> = Vec::new();
    for (name, _) in &trainable {
        let want = f.scalar(&format!("grad.{name}"));
        match norms.get(name) {
            None => bad.push((f64::INFINITY, format!("{name}: no gradient"))),
            Some(&got) => {
                let rel = rel_scalar(got, want);
                if rel > TOL {
                    bad.push((
                        rel,
                        format!("{name}: rust {got:.6e} vs reference {want:.6e}"),
                    ));
                }
            }
        }
    }
    bad.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert!(
        bad.is_empty(),
        "{} of {} gradient norms of loss off by more than {TOL:.0e}, worst first:\n{}",
        bad.len(),
        trainable.len(),
        bad.iter()
            .take(20)
            .map(|(rel, msg)| format!("  {msg} (relative error {rel:.2e})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for name in GRAD_KEYS {
        let got = *norms
            .get(name)
            .unwrap_or_else(|| panic!("loss has no gradient for `{name}`"));
        assert_scalar(
            &format!("‖∂loss/∂{name}‖"),
            got,
            f.scalar(&format!("grad.{name}")),
        );
    }
}

#[test]
fn diffusion_loss_gradient_reaches_the_restorer() {
    let Some(f) = Fixture::load() else { return };
    let out = f.step();
    let grads = output(&out, "l_noise")
        .backward()
        .expect("backward of l_noise");
    let norms = grad_norms(&f.model, &grads);
    for name in GRAD_LNOISE_KEYS {
        let got = *norms
            .get(name)
            .unwrap_or_else(|| panic!("l_noise has no gradient for `{name}`"));
        let want = f.scalar(&format!("grad_lnoise.{name}"));
        assert!(want > 0.0, "fixture: ‖∂L_noise/∂{name}‖ should be non-zero");
        assert_scalar(&format!("‖∂L_noise/∂{name}‖"), got, want);
    }
}
