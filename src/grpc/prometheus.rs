//! Prometheus metrics of the server (every series registered at startup, bounded buckets) and
//! the HTTP endpoint that serves them on their own port.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::jobs::JobState;
use crate::runlog::{MetricPoint, Split};
use crate::{Error, Result};

pub struct Prom {
    registry: Registry,
    jobs: IntGaugeVec,
    steps: IntCounterVec,
    train: GaugeVec,
    val: GaugeVec,
    step_seconds: Histogram,
    checkpoints: IntCounter,
    requests: IntCounterVec,
    queue_seconds: Histogram,
    batch_size: Histogram,
    batch_pixels: Histogram,
    inference_seconds: Histogram,
    expired: IntCounter,
    image_pixels: Histogram,
}

/// Latency buckets of the restore path, seconds.
const LATENCY: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn registered<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid. This is a bug.");
    c
}

impl Prom {
    /// Registers every metric (a list: one statement per metric, hence its length).
    pub fn new() -> Self {
        let r = Registry::new();
        let jobs = registered(
            &r,
            IntGaugeVec::new(
                Opts::new("noiseda_jobs", "Training jobs by state"),
                &["state"],
            )
            .expect("valid"),
        );
        for s in JobState::ALL {
            jobs.with_label_values(&[s.as_str()]).set(0);
        }
        let steps = registered(
            &r,
            IntCounterVec::new(
                Opts::new("noiseda_train_steps_total", "Optimizer steps run, by job"),
                &["job"],
            )
            .expect("valid"),
        );
        let train = registered(
            &r,
            GaugeVec::new(
                Opts::new("noiseda_train_loss", "Latest training series value, by job"),
                &["job", "series"],
            )
            .expect("valid"),
        );
        let val = registered(
            &r,
            GaugeVec::new(
                Opts::new("noiseda_val_metric", "Latest validation value, by job"),
                &["job", "series"],
            )
            .expect("valid"),
        );
        let step_seconds = registered(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "noiseda_train_step_seconds",
                    "Seconds per optimizer step (data wait, forward, backward, update)",
                )
                .buckets(vec![0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]),
            )
            .expect("valid"),
        );
        let checkpoints = registered(
            &r,
            IntCounter::new("noiseda_checkpoints_total", "Checkpoints written").expect("valid"),
        );
        let requests = registered(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "noiseda_restore_requests_total",
                    "Restore requests by RPC and gRPC status code",
                ),
                &["method", "code"],
            )
            .expect("valid"),
        );
        for method in ["Restore", "RestoreStream", "ModelInfer", "ModelStreamInfer"] {
            for code in [
                "Ok",
                "InvalidArgument",
                "NotFound",
                "ResourceExhausted",
                "DeadlineExceeded",
                "Unavailable",
            ] {
                requests.with_label_values(&[method, code]).inc_by(0);
            }
        }
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            registered(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid"),
            )
        };
        let queue_seconds = hist(
            "noiseda_restore_queue_seconds",
            "Time an image waited in the queue for its batch",
            LATENCY.to_vec(),
        );
        let inference_seconds = hist(
            "noiseda_restore_inference_seconds",
            "Forward pass time of a batch",
            LATENCY.to_vec(),
        );
        let batch_size = hist(
            "noiseda_restore_batch_size",
            "Images per forward pass",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        );
        let batch_pixels = hist(
            "noiseda_restore_batch_pixels",
            "Padded pixels per forward pass",
            vec![
                65_536.0,
                262_144.0,
                1_048_576.0,
                4_194_304.0,
                16_777_216.0,
                67_108_864.0,
            ],
        );
        let image_pixels = hist(
            "noiseda_restore_image_pixels",
            "Pixels per requested image",
            vec![
                65_536.0,
                262_144.0,
                1_048_576.0,
                4_194_304.0,
                16_777_216.0,
                67_108_864.0,
            ],
        );
        let expired = registered(
            &r,
            IntCounter::new(
                "noiseda_restore_expired_total",
                "Images whose deadline passed while queued",
            )
            .expect("valid"),
        );
        Self {
            registry: r,
            jobs,
            steps,
            train,
            val,
            step_seconds,
            checkpoints,
            requests,
            queue_seconds,
            batch_size,
            batch_pixels,
            inference_seconds,
            expired,
            image_pixels,
        }
    }

    pub fn request(&self, method: &str, code: tonic::Code) {
        self.requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    pub fn image(&self, pixels: usize) {
        self.image_pixels.observe(pixels as f64);
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail. This is a bug.");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl crate::jobs::Telemetry for Prom {
    fn job_states(&self, counts: &BTreeMap<i32, u64>) {
        for s in JobState::ALL {
            let n = counts.get(&(s as i32)).copied().unwrap_or(0);
            self.jobs.with_label_values(&[s.as_str()]).set(n as i64);
        }
    }

    fn step(&self, job: &str, seconds: f64, points: &[MetricPoint]) {
        self.steps.with_label_values(&[job]).inc();
        self.step_seconds.observe(seconds);
        for p in points {
            let g = if p.split == Split::Val {
                &self.val
            } else {
                &self.train
            };
            g.with_label_values(&[job, &p.series]).set(p.value);
        }
    }

    fn checkpoint(&self) {
        self.checkpoints.inc();
    }
}

impl crate::restore::Telemetry for Prom {
    fn queued(&self, waited: std::time::Duration) {
        self.queue_seconds.observe(waited.as_secs_f64());
    }

    fn batch(&self, images: usize, pixels: usize, took: std::time::Duration) {
        self.batch_size.observe(images as f64);
        self.batch_pixels.observe(pixels as f64);
        self.inference_seconds.observe(took.as_secs_f64());
    }

    fn expired(&self) {
        self.expired.inc();
    }
}

impl Default for Prom {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds `addr` for `GET /metrics`; returns the bound address and the server future.
pub fn bind(
    listener: tokio::net::TcpListener,
    prom: std::sync::Arc<Prom>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("metrics address", e))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let prom = prom.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    prom.render(),
                )
            }
        }),
    );
    let fut = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    };
    Ok((bound, fut))
}
