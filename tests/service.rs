//! The Training service end to end: a real `noiseda serve` process on 127.0.0.1:0 with a temp
//! data dir, real photos, real SQLite; jobs submitted, streamed, cancelled, exported, resumed
//! after the server is killed, and every bad-input case.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{get, start_request, state, stream, tiny_toml, wait_for, Server};
use common::store::Backend;
use noiseda::pb;
use tonic::Code;

/// Clean photos, plus validation pairs (noisy lq / clean gt, same names).
fn photos(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let clean = common::write_photos(&root.join("clean"), 3, 48, 48);
    let gt = root.join("val/gt");
    let lq = root.join("val/lq");
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&lq).unwrap();
    for k in 0..2u32 {
        let img = common::photo(k + 5, 40, 40);
        img.save(gt.join(format!("v{k}.png"))).unwrap();
        let mut noisy = img.clone();
        for (i, p) in noisy.pixels_mut().enumerate() {
            for c in p.0.iter_mut() {
                let n = ((i as u32).wrapping_mul(2_654_435_761) >> 27) as i32 - 16;
                *c = (*c as i32 + n).clamp(0, 255) as u8;
            }
        }
        noisy.save(lq.join(format!("v{k}.png"))).unwrap();
    }
    (clean, lq, gt)
}

fn assert_gapless(points: &[pb::MetricPoint]) {
    let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
    let want: Vec<u64> = (1..=points.len() as u64).collect();
    assert_eq!(
        seqs, want,
        "metric seqs must be 1..N without gaps or duplicates"
    );
}

async fn submit_stream_export_and_load(store: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, lq, gt) = photos(tmp.path());
    let server = Server::start(&tmp.path().join("data"), &store.args(&[]));
    let mut c = server.client().await;

    // Live and ready, and the services are discoverable by reflection.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(server.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "noiseda.v1.Training"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service:?} is SERVING");
    }

    // Reflection lists the services and serves their descriptors (grpcurl, Postman, ...).
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            tonic::transport::Channel::from_shared(server.addr.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ask = |m: MessageRequest| tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "noiseda.v1.Training".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&"noiseda.v1.Training"), "{names:?}");
            assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        }
        other => panic!("{other:?}"),
    }
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("{other:?}"),
    }

    let toml = tiny_toml("tiny", &clean, 30, 10, Some((&lq, &gt)));
    let job = c
        .start_job(start_request(&toml, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.name, "tiny");
    assert_eq!(job.submitted_spec, toml);
    let resolved = noiseda::config::JobSpec::from_toml(&job.resolved_spec).unwrap();
    assert_eq!(resolved.steps, 30);
    assert_eq!(
        resolved.data.synthetic.clean.as_deref(),
        Some(clean.as_path())
    );
    assert_eq!(
        resolved.ema.decay,
        noiseda::config::JobSpec::from_toml(&toml)
            .unwrap()
            .ema
            .decay
    );
    let points = stream(&mut c, &job.id, 0, None).await.unwrap();
    assert_gapless(&points);
    let job = get(&mut c, &job.id).await;
    assert_eq!(state(&job), pb::JobState::Completed, "{}", job.last_error);
    let p = job.progress.unwrap();
    assert_eq!((p.step, p.total_steps), (30, 30));
    assert_eq!(p.last_seq, points.len() as u64);
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    // One Charbonnier point per step, validation every 10 steps (psnr, ssim, psnr_debiased, cast).
    let train: Vec<u64> = points
        .iter()
        .filter(|p| p.split == pb::Split::Train as i32)
        .map(|p| p.step)
        .collect();
    assert_eq!(train, (1..=30).collect::<Vec<u64>>());
    let val = points
        .iter()
        .filter(|p| p.split == pb::Split::Val as i32 && p.series == "psnr")
        .count();
    assert_eq!(val, 3);
    assert!(job.metrics["val/psnr"] > 10.0, "{:?}", job.metrics);

    // Replay from the middle, history only.
    let mut s = c
        .stream_metrics(pb::StreamMetricsRequest {
            job_id: job.id.clone(),
            from_seq: 10,
            history_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut replay = Vec::new();
    while let Some(p) = s.message().await.unwrap() {
        replay.push(p);
    }
    assert_eq!(replay, points[9..].to_vec());

    // keep_last = 2 keeps steps 20 and 30, plus the best by val/psnr if it is older.
    let ckpts = c
        .list_checkpoints(pb::ListCheckpointsRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .checkpoints;
    assert!(ckpts.len() >= 2 && ckpts.len() <= 3, "{ckpts:?}");
    assert_eq!(ckpts.last().unwrap().id, "step-00000030");
    assert_eq!(ckpts.iter().filter(|c| c.is_best).count(), 1);
    assert!(ckpts
        .iter()
        .all(|c| c.size_bytes > 0 && c.metrics.contains_key("val/psnr")));

    // Export: latest EMA with its files; the artifact loads and restores.
    let r = c
        .export_model(pb::ExportModelRequest {
            job_id: job.id.clone(),
            checkpoint: "latest".into(),
            weights: pb::Weights::Ema as i32,
            name: String::new(),
            include_files: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.checkpoint_id, "step-00000030");
    let info = r.model.unwrap();
    assert_eq!(info.weights, "ema");
    assert_eq!(info.step, 30);
    assert_eq!(r.files.len(), 2);
    let model = noiseda::artifact::load(Path::new(&r.path), &candle::Device::Cpu).unwrap();
    assert_eq!(model.manifest.sha256, info.sha256);
    assert_eq!(model.manifest.source_job.as_deref(), Some(job.id.as_str()));
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in &r.files {
        std::fs::write(copy.join(&f.name), &f.data).unwrap();
    }
    let loaded = noiseda::artifact::load(&copy, &candle::Device::Cpu).unwrap();
    let img = noiseda::data::Image::from_rgb8(&common::photo(1, 40, 40));
    let out = noiseda::infer::restore_image(
        &loaded.net,
        loaded.manifest.range,
        &img,
        &candle::Device::Cpu,
        None,
    )
    .unwrap();
    assert_eq!((out.width, out.height), (40, 40));
    // The same export again returns the same model; other weights under that name do not.
    let again = c
        .export_model(pb::ExportModelRequest {
            job_id: job.id.clone(),
            checkpoint: "step-00000030".into(),
            weights: pb::Weights::Ema as i32,
            name: String::new(),
            include_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.path.as_str(), again.files.len()),
        (r.path.as_str(), 0)
    );
    let name = Path::new(&r.path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let clash = c
        .export_model(pb::ExportModelRequest {
            job_id: job.id.clone(),
            checkpoint: "latest".into(),
            weights: pb::Weights::Raw as i32,
            name,
            include_files: false,
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
    // Best: the checkpoint marked is_best.
    let best = c
        .export_model(pb::ExportModelRequest {
            job_id: job.id.clone(),
            checkpoint: "best".into(),
            weights: pb::Weights::Raw as i32,
            name: "tiny-best".into(),
            include_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    let best_id = &ckpts.iter().find(|c| c.is_best).unwrap().id;
    assert_eq!(&best.checkpoint_id, best_id);
    assert!(Path::new(&best.path).ends_with("models/tiny-best"));

    // Prometheus: jobs by state, steps, losses.
    let text = common::server::http_get(&server.metrics).await;
    assert!(
        text.contains("noiseda_jobs{state=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "noiseda_train_steps_total{{job=\"{}\"}} 30",
        job.id
    )));
    assert!(text.contains("noiseda_train_step_seconds_count 30"));
}

async fn request_ids_queue_and_cancel(store: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, _, _) = photos(tmp.path());
    let server = Server::start(&tmp.path().join("data"), &store.args(&["--cpu-jobs", "1"]));
    let mut c = server.client().await;

    let long = tiny_toml("long", &clean, 100_000, 50, None);
    let a = c
        .start_job(start_request(&long, "req-a"))
        .await
        .unwrap()
        .into_inner();
    // The same request id returns the same job, even with another spec.
    let a2 = c
        .start_job(start_request(
            &tiny_toml("other", &clean, 5, 5, None),
            "req-a",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.id, a.id);
    assert_eq!(a2.name, "long");

    // One CPU slot: the second job waits in the queue; cancelling it is immediate.
    let b = c
        .start_job(start_request(
            &tiny_toml("queued", &clean, 10, 5, None),
            "req-b",
        ))
        .await
        .unwrap()
        .into_inner();
    let a_running = wait_for(&mut c, &a.id, "job a to take steps", |j| {
        j.progress.is_some_and(|p| p.step >= 60)
    })
    .await;
    assert_eq!(state(&a_running), pb::JobState::Running);
    assert_eq!(state(&get(&mut c, &b.id).await), pb::JobState::Queued);
    let b = c
        .cancel_job(pb::CancelJobRequest {
            job_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&b), pb::JobState::Cancelled);

    // Listing: newest first, filtered by state, paged.
    let page = c
        .list_jobs(pb::ListJobsRequest {
            state: 0,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs[0].id, b.id);
    let page2 = c
        .list_jobs(pb::ListJobsRequest {
            state: 0,
            page_size: 1,
            page_token: page.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.jobs[0].id, a.id);
    assert!(page2.next_page_token.is_empty());
    let cancelled = c
        .list_jobs(pb::ListJobsRequest {
            state: pb::JobState::Cancelled as i32,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.jobs.len(), 1);

    // Cancel the running job: it stops at a step boundary, after a checkpoint.
    let follower = {
        let mut c2 = server.client().await;
        let id = a.id.clone();
        tokio::spawn(async move { stream(&mut c2, &id, 1, None).await })
    };
    let r = c
        .cancel_job(pb::CancelJobRequest {
            job_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        state(&r),
        pb::JobState::Cancelling | pb::JobState::Cancelled
    ));
    let points = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the stream ends when the job does")
        .unwrap()
        .unwrap();
    assert_gapless(&points);
    let a = wait_for(&mut c, &a.id, "cancel", |j| {
        state(j) == pb::JobState::Cancelled
    })
    .await;
    let stopped = a.progress.unwrap().step;
    assert!((60..100_000).contains(&stopped));
    assert_eq!(points.last().unwrap().step, stopped);
    let ckpts = c
        .list_checkpoints(pb::ListCheckpointsRequest {
            job_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .checkpoints;
    assert_eq!(
        ckpts.last().unwrap().step,
        stopped,
        "cancel checkpoints where it stopped"
    );

    // Cancelling a finished job is a precondition failure.
    let err = c
        .cancel_job(pb::CancelJobRequest {
            job_id: a.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("cancelled"), "{}", err.message());
}

async fn killed_server_resumes_jobs_with_gapless_metrics(store: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, _, _) = photos(tmp.path());
    let data = tmp.path().join("data");
    let server = Server::start(&data, &store.args(&[]));
    let mut c = server.client().await;
    let steps = 1500;
    let job = c
        .start_job(start_request(
            &tiny_toml("crash", &clean, steps, 100, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    // A second job that will not have reached its first checkpoint when the server dies.
    let early = c
        .start_job(start_request(
            &tiny_toml("early", &clean, 10, 1_000, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    // Read part of the stream, then kill the server (SIGKILL: no shutdown, no checkpoint).
    let seen = stream(&mut c, &job.id, 1, Some(350)).await.unwrap();
    assert_gapless(&seen);
    server.kill();
    // Make the second job look as if it had been running when the server died.
    store.exec(&data, "UPDATE jobs SET state = 2 WHERE id = ?1", &early.id);

    let server = Server::start(&data, &store.args(&[]));
    let mut c = server.client().await;
    let mut rest = stream(&mut c, &job.id, seen.len() as u64 + 1, None)
        .await
        .unwrap();
    let mut all = seen;
    all.append(&mut rest);
    assert_gapless(&all);
    let steps_logged: Vec<u64> = all.iter().map(|p| p.step).collect();
    assert_eq!(
        steps_logged,
        (1..=steps).collect::<Vec<u64>>(),
        "each step logged once, in order"
    );
    let job = get(&mut c, &job.id).await;
    assert_eq!(state(&job), pb::JobState::Completed, "{}", job.last_error);
    assert_eq!(job.restarts, 1);
    assert!(
        job.last_error.contains("resuming from checkpoint step-"),
        "{}",
        job.last_error
    );
    assert!(server.log_text().contains("resume=true"));

    // No checkpoint: FAILED with the reason, never restarted from step 0.
    let early = get(&mut c, &early.id).await;
    assert_eq!(state(&early), pb::JobState::Failed);
    assert!(
        early
            .last_error
            .contains("before the job's first checkpoint"),
        "{}",
        early.last_error
    );

    // SIGTERM mid-job: the job checkpoints and the server exits within the grace period;
    // the next server resumes it.
    let job2 = c
        .start_job(start_request(
            &tiny_toml("term", &clean, 100_000, 100_000, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut c, &job2.id, "steps", |j| {
        j.progress.is_some_and(|p| p.step > 20)
    })
    .await;
    let took = server.terminate();
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
    let server = Server::start(&data, &store.args(&[]));
    let mut c = server.client().await;
    let resumed = wait_for(&mut c, &job2.id, "resume", |j| {
        j.restarts == 1 && state(j) == pb::JobState::Running
    })
    .await;
    assert!(resumed.last_error.contains("resuming from checkpoint"));
    c.cancel_job(pb::CancelJobRequest {
        job_id: job2.id.clone(),
    })
    .await
    .unwrap();
    wait_for(&mut c, &job2.id, "cancel", |j| {
        state(j) == pb::JobState::Cancelled
    })
    .await;
    let all = stream(&mut c, &job2.id, 1, None).await.unwrap();
    assert_gapless(&all);
}

async fn bad_input_is_named(store: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, _, _) = photos(tmp.path());
    let server = Server::start(&tmp.path().join("data"), &store.args(&[]));
    let mut c = server.client().await;

    // Several bad values: every one is listed, as BadRequest field violations too.
    let bad = tiny_toml("", &clean, 0, 5, None).replace("patch = 32", "patch = 30");
    let err = c.start_job(start_request(&bad, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for field in ["`name`", "`steps`", "`data.patch`"] {
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let details = tonic_types::StatusExt::get_error_details(&err);
    let fields: Vec<String> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["name", "steps", "data.patch"]);

    // Data paths must exist on the server.
    let missing = tiny_toml("m", &tmp.path().join("nowhere"), 5, 5, None);
    let err = c.start_job(start_request(&missing, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("data.synthetic.clean") && err.message().contains("nowhere"),
        "{}",
        err.message()
    );
    // Unknown keys, unknown devices, no spec, bad JSON.
    let unknown = tiny_toml("u", &clean, 5, 5, None).replace("seed = 3", "seed = 3\nsede = 4");
    let err = c.start_job(start_request(&unknown, "")).await.unwrap_err();
    assert!(err.message().contains("sede"), "{}", err.message());
    let gpu =
        tiny_toml("g", &clean, 5, 5, None).replace("seed = 3", "seed = 3\ndevice = \"cuda:0\"");
    let err = c.start_job(start_request(&gpu, "")).await.unwrap_err();
    assert!(
        err.message().contains("`device`") && err.message().contains("cuda:0"),
        "{}",
        err.message()
    );
    let err = c
        .start_job(pb::StartJobRequest {
            spec: None,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .start_job(pb::StartJobRequest {
            spec: Some(pb::JobSpec {
                document: Some(pb::job_spec::Document::Json("{".into())),
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Unknown jobs.
    let nf = |e: tonic::Status| {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("nope"));
    };
    nf(c.get_job(pb::GetJobRequest {
        job_id: "nope".into(),
    })
    .await
    .unwrap_err());
    nf(c.cancel_job(pb::CancelJobRequest {
        job_id: "nope".into(),
    })
    .await
    .unwrap_err());
    nf(c.list_checkpoints(pb::ListCheckpointsRequest {
        job_id: "nope".into(),
    })
    .await
    .unwrap_err());
    nf(stream(&mut c, "nope", 0, None).await.unwrap_err());
    nf(c.export_model(pb::ExportModelRequest {
        job_id: "nope".into(),
        ..Default::default()
    })
    .await
    .unwrap_err());
    let err = c
        .list_jobs(pb::ListJobsRequest {
            state: 0,
            page_size: 0,
            page_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Export: a checkpoint that does not exist, a bad selector, a bad name.
    let job = c
        .start_job(start_request(&tiny_toml("ok", &clean, 4, 2, None), ""))
        .await
        .unwrap()
        .into_inner();
    stream(&mut c, &job.id, 1, None).await.unwrap();
    let export = |checkpoint: &str, name: &str| pb::ExportModelRequest {
        job_id: job.id.clone(),
        checkpoint: checkpoint.into(),
        name: name.into(),
        ..Default::default()
    };
    let err = c
        .export_model(export("step-00000003", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("step-00000002, step-00000004"),
        "{}",
        err.message()
    );
    let err = c.export_model(export("newest", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c.export_model(export("best", "")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "no validation, no best"
    );
    let err = c
        .export_model(export("latest", "../evil"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The `noiseda jobs …` and `noiseda plot --job` commands against a real server, including a
/// `--follow` that survives the server being killed and restarted on the same address.
async fn cli_client_follows_through_a_restart(store: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, _, _) = photos(tmp.path());
    let data = tmp.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start_on(&listen, &data, &store.args(&[]));
    let spec = tmp.path().join("job.toml");
    std::fs::write(&spec, tiny_toml("cli", &clean, 1500, 100, None)).unwrap();
    let bin = env!("CARGO_BIN_EXE_noiseda");
    let follower = std::process::Command::new(bin)
        .args(["jobs", "--server", &listen, "submit"])
        .arg(&spec)
        .args(["--follow", "--request-id", "cli-1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let mut c = server.client().await;
    let id = loop {
        let jobs = c
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs;
        if let Some(j) = jobs.first() {
            break j.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_for(&mut c, &id, "steps", |j| {
        j.progress.is_some_and(|p| p.step >= 300)
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = Server::start_on(&listen, &data, &store.args(&[]));
    let out = tokio::task::spawn_blocking(move || follower.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", server.log_text());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    assert!(stderr.contains("reconnecting from seq"), "{stderr}");
    assert!(stderr.contains("completed"), "{stderr}");

    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .env("NOISEDA_SERVER", &listen)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, json, _) = run(&["jobs", "get", &id, "--json"]);
    assert!(ok);
    let job: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(job["state"], "completed");
    assert_eq!(job["restarts"], 1);
    let (ok, list, _) = run(&["jobs", "list", "--state", "completed"]);
    assert!(
        ok && list.contains(&id) && list.contains("1500/1500"),
        "{list}"
    );
    let (ok, csv, _) = run(&["jobs", "metrics", &id, "--csv"]);
    assert!(ok);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "seq,step,wall_time,split,series,value");
    assert_eq!(lines.len(), 1 + 1500);
    assert!(lines[1500].starts_with("1500,1500,"), "{}", lines[1500]);

    let out_dir = tmp.path().join("exported");
    let (ok, msg, err) = run(&[
        "jobs",
        "export",
        &id,
        "--out",
        out_dir.to_str().unwrap(),
        "--weights",
        "raw",
    ]);
    assert!(ok, "{err}");
    assert!(msg.contains("step-00001500"), "{msg}");
    let model = noiseda::artifact::load(&out_dir, &candle::Device::Cpu).unwrap();
    assert_eq!(model.manifest.step, 1500);

    let png = tmp.path().join("curve.png");
    let (ok, _, err) = run(&["plot", "--job", &id, "--out", png.to_str().unwrap()]);
    assert!(ok, "{err}");
    let img = image::open(&png).unwrap();
    assert!(
        img.width() >= 400 && img.height() == 400,
        "{}x{}",
        img.width(),
        img.height()
    );

    let (ok, _, err) = run(&["jobs", "cancel", &id]);
    assert!(!ok && err.contains("completed"), "{err}");
    let (ok, _, err) = run(&["jobs", "get", "nope"]);
    assert!(!ok && err.contains("not found"), "{err}");
}

/// Each test above runs twice: on the embedded SQLite store and on PostgreSQL (skipped with
/// the reason printed when `NOISEDA_TEST_POSTGRES` is not set).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(&super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(store) = super::Backend::postgres(stringify!($name)) {
                    super::$name(&store).await
                }
            }
        }
    )*};
}

on_both_stores!(
    submit_stream_export_and_load,
    request_ids_queue_and_cancel,
    killed_server_resumes_jobs_with_gapless_metrics,
    bad_input_is_named,
    cli_client_follows_through_a_restart,
);
