//! An in-process server for handler tests: its listeners are bound on 127.0.0.1:0 *before* it
//! is spawned (as tonic's own integration tests do), so a test knows the address at once and
//! needs no sleeps and no stdout to parse; `start` returns once a health check is answered. Real `noiseda serve` processes (`server.rs`) remain
//! for the signal, crash and replica tests.

use std::path::Path;

use noiseda::grpc::{serve_on, Listeners, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub struct InProcess {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics: String,
    /// `http://127.0.0.1:PORT` of the KServe v2 REST binding (served with the Restore role).
    pub http: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<noiseda::Result<()>>>,
}

impl InProcess {
    /// Serves `noiseda serve --data-dir DATA_DIR FLAGS…` on this runtime.
    pub async fn start(data_dir: &Path, flags: &[&str]) -> Self {
        let mut args = vec!["--data-dir", data_dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        let cfg = ServerConfig::from_flags(&args).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!("http://{}", http.local_addr().unwrap());
        let addr = format!("http://{}", grpc.local_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(
            Listeners {
                grpc,
                metrics,
                http: Some(http),
            },
            cfg,
            async move {
                let _ = stopped.await;
            },
        ));
        let server = Self {
            addr,
            metrics: metrics_url,
            http: http_url,
            stop: Some(stop),
            task: Some(task),
        };
        // The listener accepts only once the server is up (models loaded, jobs scheduled): one
        // health check, waiting in the backlog, returns when the server answers.
        let mut health = HealthClient::new(server.channel().await);
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        server
    }

    /// A channel to the server (connections wait in the backlog until it serves).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Drains and stops the server; its result (a start-up error surfaces here).
    pub async fn shutdown(mut self) -> noiseda::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
