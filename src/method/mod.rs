//! Training objectives: what one step computes from a batch. `vanilla` is Charbonnier on the
//! synthetic pairs; the adaptation methods add their terms here.

pub mod loss;

use candle::Tensor;

use crate::config::{JobSpec, Method};
use crate::data::Batch;
use crate::model::Restorer;

/// The objective of a job, built once from its spec.
#[derive(Debug, Clone)]
pub enum Objective {
    Vanilla { charbonnier_eps: f64 },
}

/// One step's loss and the scalars to log (name, value tensor).
pub struct StepOutput {
    pub loss: Tensor,
    pub scalars: Vec<(&'static str, Tensor)>,
}

impl Objective {
    pub fn from_spec(spec: &JobSpec) -> Self {
        match spec.method {
            Method::Vanilla => Self::Vanilla {
                charbonnier_eps: spec.loss.charbonnier_eps,
            },
        }
    }

    /// Forward pass and loss for one batch already on the training device.
    pub fn step(&self, net: &Restorer, batch: &Batch) -> candle::Result<StepOutput> {
        match self {
            Self::Vanilla { charbonnier_eps } => {
                let restored = net.restore(&batch.lq, true)?;
                let loss = loss::charbonnier(&restored, &batch.gt, *charbonnier_eps)?;
                Ok(StepOutput {
                    scalars: vec![("charbonnier", loss.clone())],
                    loss,
                })
            }
        }
    }
}
