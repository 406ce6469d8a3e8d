//! Adam / AdamW (PyTorch semantics) whose moments are keyed by parameter name, so they save to
//! and load from safetensors (candle's own AdamW cannot export its state).

use std::collections::HashMap;

use candle::{backprop::GradStore, Tensor, Var};

use super::checkpoint::{no_leftovers, take_like};
use crate::config::{OptimizerKind, OptimizerSpec};
use crate::Result;

pub struct Adam {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of steps taken (bias correction uses it).
    t: u64,
    cfg: OptimizerSpec,
    /// Learning rate per parameter (the spec's `lr` unless overridden by prefix).
    lrs: Vec<f64>,
    /// Factor on every learning rate for the next step (the schedule's value, 1 = constant).
    scale: f64,
}

impl Adam {
    /// `params` must have unique names; moments start at zero.
    pub fn new(params: Vec<(String, Var)>, cfg: OptimizerSpec) -> Result<Self> {
        let m = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<candle::Result<Vec<_>>>()?;
        let v = m.clone();
        let lrs = vec![cfg.lr; params.len()];
        Ok(Self {
            params,
            m,
            v,
            t: 0,
            cfg,
            lrs,
            scale: 1.0,
        })
    }

    /// Uses `lr` for every parameter whose name starts with `prefix`.
    pub fn with_lr(mut self, prefix: &str, lr: f64) -> Self {
        for (i, (name, _)) in self.params.iter().enumerate() {
            if name.starts_with(prefix) {
                self.lrs[i] = lr;
            }
        }
        self
    }

    /// Multiplies every learning rate by `scale` from the next step on (the lr schedule).
    pub fn set_lr_scale(&mut self, scale: f64) {
        self.scale = scale;
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update from the gradients of the last backward pass.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let [b1, b2] = self.cfg.betas;
        let t = self.t as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for (i, (_, p)) in self.params.iter().enumerate() {
            let lr = self.lrs[i] * self.scale;
            let step_size = lr / bc1;
            // Detached: a tracked gradient would chain every step's graph into the moments.
            let Some(g) = grads.get(p).map(|g| g.detach()) else {
                continue;
            };
            let g = &g;
            if self.cfg.kind == OptimizerKind::AdamW && self.cfg.weight_decay > 0.0 {
                p.set(&(p.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?)?;
            }
            let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
            let update = ((&m / &denom)? * step_size)?;
            p.set(&(p.as_tensor() - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments as `m.<name>` / `v.<name>` tensors.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by `state` and the step count; every parameter must be present
    /// with its shape.
    pub fn load_state(
        &mut self,
        mut state: HashMap<String, Tensor>,
        steps_taken: u64,
    ) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                *slot = take_like(
                    &mut state,
                    &format!("{prefix}.{name}"),
                    p,
                    "optimizer state",
                )?;
            }
        }
        no_leftovers(&state, "optimizer state")?;
        self.t = steps_taken;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn matches_pytorch_adam_on_a_quadratic() {
        // torch: p = tensor([1., -2.], requires_grad=True); opt = Adam([p], lr=0.1)
        // for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
        // print(p) -> tensor([ 0.7016, -1.7006]); the same update in float64 by hand gives
        // [0.7015862729, -1.7006233920].
        let p = Var::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let cfg = OptimizerSpec {
            lr: 0.1,
            ..OptimizerSpec::default()
        };
        let mut opt = Adam::new(vec![("p".into(), p.clone())], cfg).unwrap();
        for _ in 0..3 {
            let loss = p.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.701_586_3).abs() < 1e-6 && (v[1] + 1.700_623_4).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(opt.steps_taken(), 3);
        let st = opt.state();
        assert!(st.contains_key("m.p") && st.contains_key("v.p"));
    }
}
