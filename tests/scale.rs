//! Scaled out: two `noiseda serve --role training` replicas on one PostgreSQL and one shared
//! data dir — each queued job runs exactly once, a job of a SIGKILLed replica is resumed by the
//! other from its checkpoint with a gapless metric stream, either replica streams the same
//! points and cancels a job the other runs — and a Restore replica that picks up a model
//! exported after it started and follows the model directory's DEFAULT file. The PostgreSQL tests skip (saying why) without
//! `NOISEDA_TEST_POSTGRES`; `.ci/run` starts one with `scripts/postgres.sh`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{get, start_request, state, stream, tiny_toml, wait_for, Server};
use common::store::PgDb;
use noiseda::pb;
use noiseda::pb::training_client::TrainingClient;
use tonic::transport::Channel;

/// A training replica on the shared store and data dir.
fn replica(db: &PgDb, data: &Path, id: &str) -> Server {
    Server::start(
        data,
        &[
            "--role",
            "training",
            "--store",
            &db.url,
            "--replica-id",
            id,
            "--lease-ms",
            "2000",
            "--cpu-jobs",
            "1",
        ],
    )
}

/// The jobs a replica started, from its log ("starting" lines).
fn started(server: &Server) -> Vec<String> {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains("starting"))
        .filter_map(|l| l.split("job=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn terminal(j: &pb::Job) -> bool {
    matches!(
        state(j),
        pb::JobState::Completed | pb::JobState::Failed | pb::JobState::Cancelled
    )
}

fn key(p: &pb::MetricPoint) -> (u64, u64, String, i32, u64) {
    (p.seq, p.step, p.series.clone(), p.split, p.value.to_bits())
}

fn assert_gapless(points: &[pb::MetricPoint]) {
    let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (1..=points.len() as u64).collect::<Vec<_>>());
}

async fn history(c: &mut TrainingClient<Channel>, id: &str) -> Vec<pb::MetricPoint> {
    stream(c, id, 1, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_queue() {
    let Some(db) = PgDb::create("two_replicas_share_one_queue") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let data = tmp.path().join("shared");
    let a = replica(&db, &data, "replica-a");
    let b = replica(&db, &data, "replica-b");
    let (mut ca, mut cb) = (a.client().await, b.client().await);

    // Three jobs queued through A; both replicas pull from the one queue.
    let mut ids = Vec::new();
    for k in 0..3 {
        let job = ca
            .start_job(start_request(
                &tiny_toml(&format!("q{k}"), &clean, 120, 40, None),
                "",
            ))
            .await
            .unwrap()
            .into_inner();
        ids.push(job.id);
    }
    for id in &ids {
        // Followed through B, whichever replica runs it.
        let job = wait_for(&mut cb, id, "completion", terminal).await;
        assert_eq!(state(&job), pb::JobState::Completed, "{}", job.last_error);
        assert_eq!(job.restarts, 0);
    }
    // Each job started exactly once, and both replicas took work.
    let (on_a, on_b) = (started(&a), started(&b));
    let mut all: Vec<&String> = on_a.iter().chain(&on_b).collect();
    all.sort();
    let mut want: Vec<&String> = ids.iter().collect();
    want.sort();
    assert_eq!(all, want, "A ran {on_a:?}, B ran {on_b:?}");
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "A ran {on_a:?}, B ran {on_b:?}"
    );

    // The same points through either replica, gapless, each step once.
    for id in &ids {
        let (pa, pb_) = (history(&mut ca, id).await, history(&mut cb, id).await);
        assert_gapless(&pa);
        assert_eq!(
            pa.iter().map(key).collect::<Vec<_>>(),
            pb_.iter().map(key).collect::<Vec<_>>()
        );
        let loss_steps: Vec<u64> = pa
            .iter()
            .filter(|p| p.series == "charbonnier")
            .map(|p| p.step)
            .collect();
        assert_eq!(loss_steps, (1..=120).collect::<Vec<_>>());
    }

    // A cancel through the replica that does not run the job reaches the one that does.
    let long = ca
        .start_job(start_request(
            &tiny_toml("long", &clean, 100_000, 100_000, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut ca, &long.id, "start", |j| {
        j.progress.is_some_and(|p| p.step > 5)
    })
    .await;
    let runner_is_a = started(&a).contains(&long.id);
    let other = if runner_is_a { &mut cb } else { &mut ca };
    other
        .cancel_job(pb::CancelJobRequest {
            job_id: long.id.clone(),
        })
        .await
        .unwrap();
    let done = wait_for(other, &long.id, "cancel", terminal).await;
    assert_eq!(state(&done), pb::JobState::Cancelled, "{}", done.last_error);
    // The ListJobs page is the same from both.
    let list = |c: &mut TrainingClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.list_jobs(pb::ListJobsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .jobs
                .into_iter()
                .map(|j| (j.id, j.state))
                .collect::<Vec<_>>()
        }
    };
    let from_a = list(&mut ca).await;
    assert_eq!(from_a.len(), 4);
    assert_eq!(from_a, list(&mut cb).await);
}

/// Steps of the job of [`long_job_on_two_replicas`].
const LONG_STEPS: u64 = 1500;

/// Two replicas on `db` sharing a data dir under `root/shared`, and one long job
/// ([`LONG_STEPS`] steps, a checkpoint every 100) past step 250: returns the replica that runs it, the other, and the job.
async fn long_job_on_two_replicas(db: &PgDb, root: &Path, name: &str) -> (Server, Server, pb::Job) {
    let clean = common::write_photos(&root.join("clean"), 3, 48, 48);
    let data = root.join("shared");
    let a = replica(db, &data, "replica-a");
    let b = replica(db, &data, "replica-b");
    let mut ca = a.client().await;
    let job = ca
        .start_job(start_request(
            &tiny_toml(name, &clean, LONG_STEPS, 100, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut ca, &job.id, "a checkpoint", |j| {
        j.progress.is_some_and(|p| p.step > 250)
    })
    .await;
    if started(&a).contains(&job.id) {
        (a, b, job)
    } else {
        (b, a, job)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_job_is_resumed_by_the_other() {
    let Some(db) = PgDb::create("a_killed_replicas_job_is_resumed") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (runner, survivor, job) = long_job_on_two_replicas(&db, tmp.path(), "failover").await;
    let mut cs = survivor.client().await;
    // Follow through the survivor while the runner trains, then SIGKILL the runner.
    let seen = stream(&mut cs, &job.id, 1, Some(300)).await.unwrap();
    assert_gapless(&seen);
    runner.kill();
    let killed = std::time::Instant::now();
    let resumed = wait_for(&mut cs, &job.id, "take-over", |j| {
        j.restarts == 1 && state(j) == pb::JobState::Running
    })
    .await;
    eprintln!(
        "lease 2 s: the survivor resumed the job {:.2} s after the SIGKILL (at step {})",
        killed.elapsed().as_secs_f64(),
        resumed.progress.map_or(0, |p| p.step)
    );

    // The survivor took the job over once its lease ran out and resumed it from the
    // checkpoint; the stream that started before the kill continues without a gap.
    let mut rest = stream(&mut cs, &job.id, seen.len() as u64 + 1, None)
        .await
        .unwrap();
    let mut all = seen;
    all.append(&mut rest);
    assert_gapless(&all);
    let loss_steps: Vec<u64> = all
        .iter()
        .filter(|p| p.series == "charbonnier")
        .map(|p| p.step)
        .collect();
    assert_eq!(
        loss_steps,
        (1..=LONG_STEPS).collect::<Vec<_>>(),
        "each step logged once"
    );
    let done = get(&mut cs, &job.id).await;
    assert_eq!(state(&done), pb::JobState::Completed, "{}", done.last_error);
    assert_eq!(done.restarts, 1);
    assert!(
        done.last_error.contains("resuming from checkpoint step-"),
        "{}",
        done.last_error
    );
    assert!(started(&survivor).contains(&job.id));
    assert!(survivor
        .log_text()
        .contains("taking over a job from its checkpoint"));
}

/// (name, is default) of every model a Restore server has loaded.
async fn loaded(c: &mut pb::models_client::ModelsClient<Channel>) -> Vec<(String, bool)> {
    c.list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| (m.name, m.is_default))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_replica_picks_up_new_models() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let models = tmp.path().join("models");
    let model_dir = models.to_str().unwrap();
    let trainer = Server::start(
        &tmp.path().join("train"),
        &["--role", "training", "--model-dir", model_dir],
    );
    let restore = Server::start(
        &tmp.path().join("restore"),
        &[
            "--role",
            "restore",
            "--model-dir",
            model_dir,
            "--model-poll-ms",
            "200",
        ],
    );
    let mut models_client = pb::models_client::ModelsClient::connect(restore.addr.clone())
        .await
        .unwrap();
    assert!(loaded(&mut models_client).await.is_empty());

    let mut c = trainer.client().await;
    let job = c
        .start_job(start_request(&tiny_toml("fresh", &clean, 20, 20, None), ""))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut c, &job.id, "completion", |j| {
        state(j) == pb::JobState::Completed
    })
    .await;
    c.export_model(pb::ExportModelRequest {
        job_id: job.id.clone(),
        name: "fresh-model".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let t0 = std::time::Instant::now();
    while loaded(&mut models_client).await != [("fresh-model".to_string(), true)] {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "model not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It serves at once, as the default model.
    let img = common::photo(1, 40, 32);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let out = pb::restore_client::RestoreClient::connect(restore.addr.clone())
        .await
        .unwrap()
        .restore(pb::RestoreRequest {
            images: vec![pb::ImageInput {
                image: Some(pb::image_input::Image::Encoded(pb::EncodedImage {
                    data: png,
                })),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.model, "fresh-model");
    assert_eq!((out.images[0].width, out.images[0].height), (40, 32));

    // A second export, promoted through the model directory's DEFAULT file, becomes the
    // default without a call to this replica.
    c.export_model(pb::ExportModelRequest {
        job_id: job.id.clone(),
        name: "promoted".into(),
        weights: pb::Weights::Ema as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    std::fs::write(models.join("DEFAULT"), "promoted\n").unwrap();
    let t0 = std::time::Instant::now();
    while !loaded(&mut models_client)
        .await
        .contains(&("promoted".to_string(), true))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "default not followed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_stops_writing_once_its_job_is_taken() {
    let Some(db) = PgDb::create("a_paused_replica_stops_writing") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (runner, survivor, job) = long_job_on_two_replicas(&db, tmp.path(), "paused").await;
    let mut cs = survivor.client().await;
    // Freeze the runner past its lease (2 s): it neither renews nor trains. The survivor takes
    // the job over; when the runner wakes up, its lease is gone and it must not write again.
    unsafe { libc::kill(runner.pid() as i32, libc::SIGSTOP) };
    wait_for(&mut cs, &job.id, "take-over", |j| j.restarts == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    unsafe { libc::kill(runner.pid() as i32, libc::SIGCONT) };

    let done = wait_for(&mut cs, &job.id, "completion", terminal).await;
    assert_eq!(state(&done), pb::JobState::Completed, "{}", done.last_error);
    assert_eq!(done.restarts, 1);
    let t0 = std::time::Instant::now();
    while !runner
        .log_text()
        .contains("stopped a job whose lease ran out or was taken")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the paused runner did not stop: {}",
            runner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One writer at a time: the job's log holds each seq once, and the stream each step once.
    let log = std::fs::read_to_string(
        tmp.path()
            .join("shared/jobs")
            .join(&job.id)
            .join("metrics.jsonl"),
    )
    .unwrap();
    let seqs: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let all = history(&mut cs, &job.id).await;
    assert_gapless(&all);
    assert_eq!(all.len(), seqs.len());
    let loss_steps: Vec<u64> = all
        .iter()
        .filter(|p| p.series == "charbonnier")
        .map(|p| p.step)
        .collect();
    assert_eq!(loss_steps, (1..=LONG_STEPS).collect::<Vec<_>>());
}

#[test]
fn an_unreachable_or_malformed_store_stops_the_start_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let serve = |store: &str| common::server::serve_refuses(&data, &["--store", store]);
    // Port 1 on loopback: nothing listens there.
    let msg = serve("postgres://noiseda:hunter2@127.0.0.1:1/jobs");
    assert!(
        msg.contains("PostgreSQL") && msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "the password leaked: {msg}");
    let msg = serve("mysql://db/jobs");
    assert!(
        msg.contains("--store") && msg.contains("mysql://db/jobs"),
        "{msg}"
    );
}
