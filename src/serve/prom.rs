//! Prometheus metrics of the server (every series registered at startup, bounded buckets) and
//! the HTTP endpoint that serves them on their own port.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::store::State;
use crate::train::MetricPoint;
use crate::{Error, Result};

pub struct Prom {
    registry: Registry,
    jobs: IntGaugeVec,
    steps: IntCounterVec,
    train: GaugeVec,
    val: GaugeVec,
    step_seconds: Histogram,
    checkpoints: IntCounter,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid. This is a bug.");
    c
}

impl Prom {
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
        for s in State::ALL {
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
        Self {
            registry: r,
            jobs,
            steps,
            train,
            val,
            step_seconds,
            checkpoints,
        }
    }

    pub fn job_states(&self, counts: &BTreeMap<i32, u64>) {
        for s in State::ALL {
            let n = counts.get(&(s as i32)).copied().unwrap_or(0);
            self.jobs.with_label_values(&[s.as_str()]).set(n as i64);
        }
    }

    pub fn step(&self, job: &str, seconds: f64, points: &[MetricPoint]) {
        self.steps.with_label_values(&[job]).inc();
        self.step_seconds.observe(seconds);
        for p in points {
            let g = if p.split == "val" {
                &self.val
            } else {
                &self.train
            };
            g.with_label_values(&[job, &p.series]).set(p.value);
        }
    }

    pub fn checkpoint(&self) {
        self.checkpoints.inc();
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

impl Default for Prom {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds `addr` for `GET /metrics`; returns the bound address and the server future.
pub async fn bind(
    addr: SocketAddr,
    prom: std::sync::Arc<Prom>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("metrics address {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("metrics address {addr}"), e))?;
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
