//! The loader thread: builds the batch of every step from a per-step seeded RNG (so a resumed
//! run sees exactly the batches a straight run would) and hands batches over a bounded queue.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Image, TrainData};
use crate::{Error, Result};

/// One training step's inputs, (b, 3, p, p) f32 on the CPU, in the data's network range.
#[derive(Debug)]
pub struct Batch {
    pub step: u64,
    /// Degraded synthetic inputs.
    pub lq: Tensor,
    /// Their targets.
    pub gt: Tensor,
    /// Unlabeled real-domain inputs, when the data has a real folder.
    pub real: Option<Tensor>,
    /// Unpaired clean images, when the data has an unpaired folder.
    pub unpaired: Option<Tensor>,
}

/// The RNG of one step's batch: a ChaCha stream per step under the job seed.
pub fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng
}

fn stack(images: &[Image]) -> Result<Tensor> {
    let (h, w) = (images[0].height, images[0].width);
    let mut data = Vec::with_capacity(images.len() * 3 * h * w);
    for img in images {
        data.extend(img.to_chw());
    }
    Ok(Tensor::from_vec(
        data,
        (images.len(), 3, h, w),
        &Device::Cpu,
    )?)
}

/// Builds the batch of `step`; a pure function of (data, seed, step, batch size).
pub fn make_batch(data: &TrainData, seed: u64, step: u64, batch: usize) -> Result<Batch> {
    let mut rng = step_rng(seed, step);
    let (mut lqs, mut gts, mut reals, mut unpaired) = (vec![], vec![], vec![], vec![]);
    for _ in 0..batch {
        let (lq, gt) = data.sample_synthetic(&mut rng);
        lqs.push(lq);
        gts.push(gt);
        reals.extend(data.sample_real(&mut rng));
        unpaired.extend(data.sample_unpaired(&mut rng));
    }
    let stack = |v: &[Image]| -> Result<Tensor> { Ok(data.range.to_net(&stack(v)?)?) };
    let optional = |v: Vec<Image>| (!v.is_empty()).then(|| stack(&v)).transpose();
    Ok(Batch {
        step,
        lq: stack(&lqs)?,
        gt: stack(&gts)?,
        real: optional(reals)?,
        unpaired: optional(unpaired)?,
    })
}

/// Receives the batches of steps `start..end`, prepared ahead by a thread.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts the thread; at most `prefetch` batches wait in the queue.
    pub fn spawn(
        data: Arc<TrainData>,
        seed: u64,
        steps: std::ops::Range<u64>,
        batch: usize,
        prefetch: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(prefetch);
        let handle = std::thread::Builder::new()
            .name("noiseda-loader".into())
            .spawn(move || {
                for step in steps {
                    let b = make_batch(&data, seed, step, batch);
                    let failed = b.is_err();
                    if tx.send(b).is_err() || failed {
                        break; // the trainer went away, or the error is delivered
                    }
                }
            })
            .expect("spawning the loader thread");
        Self {
            rx,
            handle: Some(handle),
        }
    }

    /// The next batch, in step order. If the thread died, its panic message is the error.
    pub fn next_batch(&mut self) -> Result<Batch> {
        match self.rx.recv() {
            Ok(batch) => batch,
            Err(_) => {
                let why = match self.handle.take().map(|h| h.join()) {
                    Some(Err(panic)) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the loader thread panicked".into()),
                    _ => "no more batches".into(),
                };
                Err(Error::loader(why))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the thread (its send fails once `rx` is gone), then join it.
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
