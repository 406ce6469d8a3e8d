//! Exponential moving average of the trainable weights, with the usual warm-up
//! `decay_t = min(decay, (1 + t) / (10 + t))` so short runs are not dominated by the init.

use std::collections::HashMap;

use candle::{Tensor, Var};

use super::checkpoint::{no_leftovers, take_like};
use crate::Result;

pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts from a detached copy of the parameters.
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = params
            .iter()
            .map(|(n, p)| Ok((n.clone(), p.as_tensor().detach().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Moves the average towards the parameters after optimizer step `t` (1-based).
    pub fn update(&mut self, params: &[(String, Var)], t: u64) -> Result<()> {
        let d = self.decay.min((1.0 + t as f64) / (10.0 + t as f64));
        for ((_, s), (_, p)) in self.shadow.iter_mut().zip(params) {
            *s = ((&*s * d)? + (p.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }

    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.shadow.iter().cloned().collect()
    }

    /// Restores a saved average; every tracked name must be present.
    pub fn load(&mut self, mut saved: HashMap<String, Tensor>) -> Result<()> {
        for (name, s) in self.shadow.iter_mut() {
            *s = take_like(&mut saved, name, s, "EMA weights")?;
        }
        no_leftovers(&saved, "EMA weights")
    }
}
