//! The dynamic batcher of one loaded model: a dedicated model thread takes images from a
//! bounded queue, drops those whose caller went away or whose deadline passed, groups the
//! oldest image with others of the same padded shape (within the batch size and pixel budget,
//! optionally waiting a little for more) and runs them in one forward pass.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle::Device;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::config::BatchConfig;
use super::stats::ModelStats;
use super::Telemetry;
use crate::config::DataRange;
use crate::data::Image;
use crate::infer::{self, Tiling};
use crate::model::Restorer;
use crate::{Error, Result};

/// One image waiting for the model.
pub struct Pending {
    pub image: Image,
    pub tiling: Option<Tiling>,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
    pub reply: oneshot::Sender<Result<Done>>,
    /// The caller's share of the server-wide queue bound; released when the image is dropped.
    pub permit: OwnedSemaphorePermit,
}

/// A restored image and where its time went.
#[derive(Debug)]
pub struct Done {
    pub image: Image,
    pub queue: Duration,
    pub inference: Duration,
    pub batch: usize,
    pub tiled: bool,
}

/// The sending side of a model thread.
pub struct Batcher {
    tx: SyncSender<Pending>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Batcher {
    /// Starts the model thread for `net`.
    pub fn spawn(
        name: &str,
        net: Restorer,
        range: DataRange,
        device: Device,
        opts: BatchConfig,
        prom: Arc<dyn Telemetry>,
        stats: Arc<ModelStats>,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel(opts.max_queue.max(1));
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let worker = Worker {
            net,
            range,
            device,
            opts,
            prom,
            stats,
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::unavailable(format!("cannot start a model thread: {e}")))?;
        Ok(Self { tx, queued })
    }

    /// Queues an image without waiting; a full queue is RESOURCE_EXHAUSTED.
    pub fn submit(&self, p: Pending) -> Result<()> {
        match self.tx.try_send(p) {
            Ok(()) => {
                self.queued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Error::Overloaded(
                "the model's queue is full; retry later".into(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(Error::unavailable("the model was unloaded")),
        }
    }

    /// Images waiting for this model now.
    pub fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Worker {
    net: Restorer,
    range: DataRange,
    device: Device,
    opts: BatchConfig,
    prom: Arc<dyn Telemetry>,
    stats: Arc<ModelStats>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Worker {
    fn padded(&self, img: &Image) -> (usize, usize) {
        (
            infer::padded_side(&self.net, img.height),
            infer::padded_side(&self.net, img.width),
        )
    }

    /// Runs until every sender is gone (the model was unloaded and its requests finished).
    fn run(self, rx: Receiver<Pending>) {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match rx.recv() {
                    Ok(p) => pending.push_back(p),
                    Err(_) => return,
                }
            }
            while let Ok(p) = rx.try_recv() {
                pending.push_back(p);
            }
            self.wait_for_more(&rx, &mut pending);
            self.drop_stale(&mut pending);
            let batch = self.take_batch(&mut pending);
            self.queued
                .fetch_sub(batch.len(), std::sync::atomic::Ordering::Relaxed);
            if !batch.is_empty() {
                self.run_batch(batch);
            }
        }
    }

    /// With a batch wait: keep receiving until the oldest image's batch is full or it waited
    /// `max_batch_wait`.
    fn wait_for_more(&self, rx: &Receiver<Pending>, pending: &mut VecDeque<Pending>) {
        if self.opts.max_batch_wait().is_zero() {
            return;
        }
        let Some(oldest) = pending.front() else {
            return;
        };
        let until = oldest.enqueued + self.opts.max_batch_wait();
        let key = self.padded(&oldest.image);
        loop {
            let same = pending
                .iter()
                .filter(|j| j.tiling.is_none() && self.padded(&j.image) == key)
                .count();
            if same >= self.opts.max_batch_size {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match rx.recv_timeout(left) {
                Ok(p) => pending.push_back(p),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Drops images whose caller went away and fails those past their deadline.
    fn drop_stale(&self, pending: &mut VecDeque<Pending>) {
        let now = Instant::now();
        let before = pending.len();
        pending.retain(|j| !j.reply.is_closed());
        let mut cancelled = before - pending.len();
        let mut kept = VecDeque::with_capacity(pending.len());
        for p in pending.drain(..) {
            if p.deadline.is_some_and(|d| d <= now) {
                self.prom.expired();
                let waited = p.enqueued.elapsed();
                let _ = p.reply.send(Err(Error::Deadline(format!(
                    "the deadline passed after {} ms in the queue",
                    waited.as_millis()
                ))));
                cancelled += 1;
            } else {
                kept.push_back(p);
            }
        }
        *pending = kept;
        if cancelled > 0 {
            self.queued
                .fetch_sub(cancelled, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The oldest image plus, unless it is tiled, the next ones of the same padded shape that
    /// fit the batch size and pixel budget (in arrival order).
    fn take_batch(&self, pending: &mut VecDeque<Pending>) -> Vec<Pending> {
        let Some(first) = pending.pop_front() else {
            return Vec::new();
        };
        if first.tiling.is_some() {
            return vec![first];
        }
        let key = self.padded(&first.image);
        let pixels = key.0 * key.1;
        let mut batch = vec![first];
        let mut rest = VecDeque::with_capacity(pending.len());
        for p in pending.drain(..) {
            let fits = batch.len() < self.opts.max_batch_size
                && (batch.len() + 1) * pixels <= self.opts.max_batch_pixels;
            if fits && p.tiling.is_none() && self.padded(&p.image) == key {
                batch.push(p);
            } else {
                rest.push_back(p);
            }
        }
        *pending = rest;
        batch
    }

    fn run_batch(&self, batch: Vec<Pending>) {
        let started = Instant::now();
        let tiled = batch.len() == 1 && batch[0].tiling.is_some();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if tiled {
                let j = &batch[0];
                infer::restore_image(&self.net, self.range, &j.image, &self.device, j.tiling)
                    .map(|img| vec![img])
            } else {
                let images: Vec<&Image> = batch.iter().map(|j| &j.image).collect();
                infer::restore_batch(&self.net, self.range, &images, &self.device)
            }
        }))
        .unwrap_or_else(|_| Err(Error::unavailable("the model panicked on this batch")));
        let inference = started.elapsed();
        let n = batch.len();
        let (h, w) = self.padded(&batch[0].image);
        self.prom.batch(n, n * h * w, inference);
        match result {
            Ok(images) => {
                self.stats.batch(n, inference);
                for (p, image) in batch.into_iter().zip(images) {
                    let queue = started.saturating_duration_since(p.enqueued);
                    self.prom.queued(queue);
                    let _ = p.reply.send(Ok(Done {
                        image,
                        queue,
                        inference,
                        batch: n,
                        tiled,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = n, "inference failed");
                let msg = e.to_string();
                for p in batch {
                    let _ = p
                        .reply
                        .send(Err(Error::unavailable(format!("inference failed: {msg}"))));
                }
            }
        }
    }
}
