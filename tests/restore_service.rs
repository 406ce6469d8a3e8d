//! The Restore and Models services end to end: a real `noiseda serve --role restore` process on
//! 127.0.0.1:0 with model artifacts trained here, real images over gRPC.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::inproc::InProcess;
use common::server::Server;
use noiseda::pb;
use noiseda::pb::models_client::ModelsClient;
use noiseda::pb::restore_client::RestoreClient;
use noiseda::train::{self, TrainOptions};
use tonic::transport::Channel;
use tonic::Code;

/// Trains a tiny restorer (seeded) and copies its artifact to `models/<name>`.
fn tiny_model(tmp: &Path, name: &str, seed: u64) -> PathBuf {
    let clean = common::write_photos(&tmp.join(format!("clean-{name}")), 3, 48, 48);
    let mut spec = common::tiny_spec(&clean, 3, 0);
    spec.seed = seed;
    let run = tmp.join(format!("run-{name}"));
    let summary = train::run(
        &spec,
        &TrainOptions {
            out: run,
            resume: false,
            progress: false,
            control: None,
            job_id: None,
        },
    )
    .unwrap();
    let dst = tmp.join("models").join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["model.safetensors", "manifest.json"] {
        std::fs::copy(summary.model_dir().unwrap().join(f), dst.join(f)).unwrap();
    }
    dst
}

fn start(tmp: &Path, extra: &[&str]) -> Server {
    let models = tmp.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let mut args = vec!["--role", "restore", "--model-dir", models.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&tmp.join("data"), &args)
}

/// The same Restore server in this process (for the tests that only call its handlers).
async fn start_in_process(tmp: &Path, extra: &[&str]) -> InProcess {
    let models = tmp.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let mut args = vec!["--role", "restore", "--model-dir", models.to_str().unwrap()];
    args.extend_from_slice(extra);
    InProcess::start(&tmp.join("data"), &args).await
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn encoded(data: Vec<u8>) -> pb::ImageInput {
    pb::ImageInput {
        image: Some(pb::image_input::Image::Encoded(pb::EncodedImage { data })),
    }
}

fn raw(img: &image::RgbImage, f32_pixels: bool) -> pb::ImageInput {
    let (data, pixel_type) = if f32_pixels {
        let mut d = Vec::new();
        for v in img.as_raw() {
            d.extend_from_slice(&(*v as f32 / 255.0).to_le_bytes());
        }
        (d, pb::PixelType::F32)
    } else {
        (img.as_raw().clone(), pb::PixelType::U8)
    };
    pb::ImageInput {
        image: Some(pb::image_input::Image::Raw(pb::RawImage {
            data,
            height: img.height(),
            width: img.width(),
            channels: 3,
            pixel_type: pixel_type as i32,
        })),
    }
}

fn request(images: Vec<pb::ImageInput>, format: pb::OutputFormat) -> pb::RestoreRequest {
    pb::RestoreRequest {
        images,
        output_format: format as i32,
        ..Default::default()
    }
}

/// The local (in-process) restore of `img` with the artifact at `dir`, as f32 pixels.
fn local(dir: &Path, img: &image::RgbImage, tile: Option<usize>) -> Vec<f32> {
    let m = noiseda::artifact::load(dir, &candle::Device::Cpu).unwrap();
    noiseda::infer::restore_image(
        &m.net,
        m.manifest.range,
        &noiseda::data::Image::from_rgb8(img),
        &candle::Device::Cpu,
        tile.map(noiseda::infer::Tiling::new),
    )
    .unwrap()
    .data
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_batched_equals_single() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "tiny", 1);
    // A batch wait makes the four images of one request share a forward pass.
    let server = start(tmp.path(), &["--max-batch-wait-us", "300000"]);
    let ch = channel(&server.addr).await;
    let mut c = RestoreClient::new(ch.clone());

    let img = common::photo(2, 40, 36);
    let want = local(&model, &img, None);
    // PNG in, PNG out; raw u8 and raw f32 in, raw f32 out; JPEG and WebP out decode.
    let r = c
        .restore(request(vec![encoded(png(&img))], pb::OutputFormat::Png))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model, "tiny");
    assert_eq!(r.version.len(), 12);
    assert!(r.weights_sha256.starts_with(&r.version));
    let out = &r.images[0];
    assert_eq!(
        (out.width, out.height, out.format),
        (40, 36, pb::OutputFormat::Png as i32)
    );
    let t = out.timing.unwrap();
    assert!(t.total_us >= t.inference_us && t.inference_us > 0, "{t:?}");
    let decoded = image::load_from_memory(&out.data).unwrap().to_rgb8();
    let want_u8 = noiseda::data::Image {
        width: 40,
        height: 36,
        data: want.clone(),
    }
    .to_rgb8();
    assert_eq!(decoded, want_u8, "served PNG equals the local restore");
    for f32_in in [false, true] {
        let r = c
            .restore(request(vec![raw(&img, f32_in)], pb::OutputFormat::RawF32))
            .await
            .unwrap()
            .into_inner();
        let got = f32s(&r.images[0].data);
        assert!(max_diff(&got, &want) <= 1e-6, "raw f32_in={f32_in}");
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    for (input, format) in [
        (encoded(jpeg), pb::OutputFormat::Jpeg),
        (encoded(png(&img)), pb::OutputFormat::Webp),
        (raw(&img, false), pb::OutputFormat::RawU8),
    ] {
        let r = c
            .restore(request(vec![input], format))
            .await
            .unwrap()
            .into_inner();
        let o = &r.images[0];
        let pixels = if format == pb::OutputFormat::RawU8 {
            o.data.len()
        } else {
            image::load_from_memory(&o.data).unwrap().to_rgb8().len()
        };
        assert_eq!(pixels, 40 * 36 * 3, "{format:?}");
    }

    // Four images of different sizes that pad to one shape run as one batch, each equal to
    // its single-image restore.
    let sizes = [(40, 36), (37, 33), (39, 36), (38, 34)];
    let imgs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(w, h))| common::photo(k as u32 + 3, w, h))
        .collect();
    let r = c
        .restore(request(
            imgs.iter().map(|i| encoded(png(i))).collect(),
            pb::OutputFormat::RawF32,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.images.len(), 4);
    for (k, (o, img)) in r.images.iter().zip(&imgs).enumerate() {
        assert_eq!(o.batch_size, 4, "image {k} shared the forward pass");
        assert_eq!((o.width, o.height), (img.width(), img.height()));
        let d = max_diff(&f32s(&o.data), &local(&model, img, None));
        assert!(d <= 1e-5, "image {k}: batched differs from single by {d}");
    }

    // Streaming: ordered answers; a bad request answers with an error and the stream goes on.
    let reqs: Vec<pb::RestoreRequest> = (0..6u64)
        .map(|id| {
            let mut r = request(
                vec![if id == 3 {
                    encoded(b"garbage".to_vec())
                } else {
                    encoded(png(&imgs[id as usize % 4]))
                }],
                pb::OutputFormat::Png,
            );
            r.id = id;
            r
        })
        .collect();
    let mut s = c
        .restore_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        if r.id == 3 {
            let e = r.error.unwrap();
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(
                e.message.contains("not a PNG, JPEG or WebP"),
                "{}",
                e.message
            );
        } else {
            assert!(r.error.is_none() && r.images.len() == 1);
        }
        ids.push(r.id);
    }
    assert_eq!(ids, (0..6).collect::<Vec<u64>>());

    // Models and server info.
    let mut m = ModelsClient::new(ch);
    let info = m
        .server_info(pb::ServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.default_model, "tiny");
    assert_eq!(info.roles, ["restore"]);
    assert_eq!(info.max_batch_wait_us, 300_000);
    let list = m
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(list.len(), 1);
    assert!(list[0].is_default && list[0].info.as_ref().unwrap().parameters > 0);

    // Prometheus counts requests and batches.
    let text = common::server::http_get(&server.metrics).await;
    assert!(
        text.contains("noiseda_restore_requests_total{code=\"Ok\",method=\"Restore\"} 7"),
        "{text}"
    );
    assert!(text.contains("noiseda_restore_batch_size_bucket{le=\"4\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "tiny", 1);
    let server = start_in_process(
        tmp.path(),
        &[
            "--max-image-pixels",
            "4096",
            "--max-input-pixels",
            "40000",
            "--tile-size",
            "0",
            "--max-images-per-request",
            "3",
        ],
    )
    .await;
    let mut c = RestoreClient::new(channel(&server.addr).await);
    let img = common::photo(1, 40, 40);
    let bad = |e: tonic::Status, what: &str| {
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        e.message().to_string()
    };
    let msg = bad(
        c.restore(request(
            vec![encoded(b"\x89PNG\r\n\x1a\nbroken".to_vec())],
            pb::OutputFormat::Png,
        ))
        .await
        .unwrap_err(),
        "corrupt",
    );
    assert!(msg.contains("image 0"), "{msg}");
    let mut zero = raw(&img, false);
    if let Some(pb::image_input::Image::Raw(r)) = &mut zero.image {
        r.width = 0;
    }
    assert!(bad(
        c.restore(request(vec![zero], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "zero"
    )
    .contains("zero size"));
    let mut huge = raw(&img, false);
    if let Some(pb::image_input::Image::Raw(r)) = &mut huge.image {
        r.width = 100_000;
        r.height = 100_000;
    }
    assert!(bad(
        c.restore(request(vec![huge], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "huge"
    )
    .contains("max_input_pixels = 40000"));
    let big_png = png(&common::photo(1, 300, 300));
    assert!(bad(
        c.restore(request(vec![encoded(big_png)], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "huge png"
    )
    .contains("max_input_pixels"));
    let mut short = raw(&img, true);
    if let Some(pb::image_input::Image::Raw(r)) = &mut short.image {
        r.data.truncate(100);
    }
    assert!(bad(
        c.restore(request(vec![short], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "short"
    )
    .contains("needs 19200 bytes, got 100"));
    let mut gray = raw(&img, false);
    if let Some(pb::image_input::Image::Raw(r)) = &mut gray.image {
        r.channels = 1;
    }
    bad(
        c.restore(request(vec![gray], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "channels",
    );
    bad(
        c.restore(request(vec![], pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "none",
    );
    let four = (0..4).map(|_| encoded(png(&img))).collect();
    assert!(bad(
        c.restore(request(four, pb::OutputFormat::Png))
            .await
            .unwrap_err(),
        "many"
    )
    .contains("max_images_per_request = 3"));
    let mut r = request(vec![encoded(png(&img))], pb::OutputFormat::Png);
    r.output_format = 99;
    bad(c.restore(r).await.unwrap_err(), "format");

    // Over max_image_pixels: rejected naming the limit unless the request asks for tiles.
    let large = common::photo(4, 80, 72);
    let msg = bad(
        c.restore(request(
            vec![encoded(png(&large))],
            pb::OutputFormat::RawF32,
        ))
        .await
        .unwrap_err(),
        "large",
    );
    assert!(msg.contains("max_image_pixels = 4096"), "{msg}");
    let mut r = request(vec![encoded(png(&large))], pb::OutputFormat::RawF32);
    r.tile_size = 32;
    let out = c.restore(r).await.unwrap().into_inner();
    assert!(out.images[0].tiled);
    let d = max_diff(&f32s(&out.images[0].data), &local(&model, &large, Some(32)));
    assert!(d <= 1e-6, "tiled on the server = tiled locally ({d})");

    // Unknown model or version.
    let mut r = request(vec![encoded(png(&img))], pb::OutputFormat::Png);
    r.model = "nope".into();
    let e = c.restore(r).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("loaded: tiny"), "{}", e.message());
    let mut r = request(vec![encoded(png(&img))], pb::OutputFormat::Png);
    r.version = "000000000000".into();
    assert_eq!(c.restore(r).await.unwrap_err().code(), Code::NotFound);

    // Models: paths outside the model directory, missing artifacts, unknown names.
    let mut m = ModelsClient::new(channel(&server.addr).await);
    let load = |path: &str| pb::LoadModelRequest {
        path: path.into(),
        ..Default::default()
    };
    assert_eq!(
        m.load_model(load("../data")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        m.load_model(load("/etc")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        m.load_model(load("missing")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        m.unload_model(pb::UnloadModelRequest {
            name: "nope".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    // A corrupted artifact fails to load and the old version keeps serving.
    let broken = tmp.path().join("models/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(model.join("manifest.json"), broken.join("manifest.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not weights").unwrap();
    let e = m
        .load_model(pb::LoadModelRequest {
            path: "broken".into(),
            name: "tiny".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("sha256"), "{}", e.message());
    c.restore(request(vec![encoded(png(&img))], pb::OutputFormat::Png))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_and_deadlines() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "tiny", 1);
    // One image per forward pass and a long batch wait keep requests in the queue.
    let server = start_in_process(
        tmp.path(),
        &[
            "--max-queue",
            "3",
            "--max-batch-size",
            "8",
            "--max-batch-wait-us",
            "1500000",
        ],
    )
    .await;
    let ch = channel(&server.addr).await;
    let img = png(&common::photo(1, 40, 40));

    // The queue holds 3 images: a fourth concurrent one is RESOURCE_EXHAUSTED.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut c = RestoreClient::new(ch.clone());
        let img = img.clone();
        tasks.push(tokio::spawn(async move {
            c.restore(request(vec![encoded(img)], pb::OutputFormat::Png))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = RestoreClient::new(ch.clone());
    let e = c
        .restore(request(vec![encoded(img.clone())], pb::OutputFormat::Png))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("queue is full"), "{}", e.message());
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    // A deadline shorter than the batch wait: DEADLINE_EXCEEDED, and the queue slot comes back.
    let mut r = tonic::Request::new(request(vec![encoded(img.clone())], pb::OutputFormat::Png));
    r.set_timeout(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    let e = c.restore(r).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "answered at the deadline"
    );
    // The expired image is dropped when its batch wait ends (it never runs) and its queue slot
    // comes back: three images fit again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut c = RestoreClient::new(ch.clone());
        let img = img.clone();
        tasks.push(tokio::spawn(async move {
            c.restore(request(vec![encoded(img)], pb::OutputFormat::Png))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let text = common::server::http_get(&server.metrics).await;
    assert!(
        text.contains(
            "noiseda_restore_requests_total{code=\"ResourceExhausted\",method=\"Restore\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_and_health() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "v1", 1);
    tiny_model(tmp.path(), "v2", 2);
    std::fs::rename(tmp.path().join("models/v1"), tmp.path().join("v1")).unwrap();
    std::fs::rename(tmp.path().join("models/v2"), tmp.path().join("v2")).unwrap();
    // No model yet: live but not ready.
    let server = start(tmp.path(), &["--shutdown-grace", "3"]);
    let ch = channel(&server.addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let status = |s: &str| tonic_health::pb::HealthCheckRequest { service: s.into() };
    assert_eq!(
        health.check(status("")).await.unwrap().into_inner().status,
        1
    );
    assert_eq!(
        health
            .check(status("noiseda.v1.Restore"))
            .await
            .unwrap()
            .into_inner()
            .status,
        2
    );
    let mut c = RestoreClient::new(ch.clone());
    let e = c
        .restore(request(
            vec![encoded(png(&common::photo(1, 32, 32)))],
            pb::OutputFormat::Png,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);

    // Load v1 (moved into the model dir after start): ready.
    std::fs::create_dir_all(tmp.path().join("models/a")).unwrap();
    for f in ["model.safetensors", "manifest.json"] {
        std::fs::copy(
            tmp.path().join("v1").join(f),
            tmp.path().join("models/a").join(f),
        )
        .unwrap();
    }
    std::fs::create_dir_all(tmp.path().join("models/b")).unwrap();
    for f in ["model.safetensors", "manifest.json"] {
        std::fs::copy(
            tmp.path().join("v2").join(f),
            tmp.path().join("models/b").join(f),
        )
        .unwrap();
    }
    let mut m = ModelsClient::new(ch.clone());
    let load = |path: &str, version: &str| pb::LoadModelRequest {
        path: path.into(),
        name: "denoise".into(),
        version: version.into(),
        make_default: true,
    };
    let v1 = m.load_model(load("a", "one")).await.unwrap().into_inner();
    assert!(v1.is_default && v1.version == "one");
    assert_eq!(
        health
            .check(status("noiseda.v1.Restore"))
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );

    // Four clients restore continuously while the model is swapped back and forth.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..4u32 {
        let (mut c, stop) = (RestoreClient::new(ch.clone()), stop.clone());
        let img = png(&common::photo(k, 32 + 4 * k, 32));
        clients.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .restore(request(vec![encoded(img.clone())], pb::OutputFormat::Png))
                    .await
                    .expect("no request fails during a swap");
                versions.push(r.into_inner().version);
            }
            versions
        }));
    }
    for (path, version) in [("b", "two"), ("a", "one"), ("b", "two")] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = m
            .load_model(load(path, version))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.version, version);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for t in clients {
        let versions = t.await.unwrap();
        assert!(!versions.is_empty());
        seen.extend(versions);
    }
    assert_eq!(seen, ["one", "two"].map(String::from).into());
    let list = m
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.models.len(), 1);
    assert_eq!(list.models[0].version, "two");

    // Unload: not found afterwards, and readiness goes away with the last model.
    m.unload_model(pb::UnloadModelRequest {
        name: "denoise".into(),
    })
    .await
    .unwrap();
    let mut r = request(
        vec![encoded(png(&common::photo(1, 32, 32)))],
        pb::OutputFormat::Png,
    );
    r.model = "denoise".into();
    assert_eq!(c.restore(r).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        health
            .check(status("noiseda.v1.Restore"))
            .await
            .unwrap()
            .into_inner()
            .status,
        2
    );

    // Drain: a Watch on readiness sees SERVING, then NOT_SERVING on SIGTERM; the process exits
    // when the grace period ends even though the Watch stream never finishes by itself.
    m.load_model(load("a", "one")).await.unwrap();
    let mut watch = health
        .watch(status("noiseda.v1.Restore"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, 1);
    let pid = server.pid();
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    assert_eq!(watch.message().await.unwrap().unwrap().status, 2);
    let took = server.wait();
    assert!(took < Duration::from_secs(8), "{took:?}");
    // Whatever else the Watch says before the connection closes, it is not SERVING.
    while let Ok(Some(m)) = watch.message().await {
        assert_eq!(m.status, 2);
    }
}

/// `noiseda restore --server` over a folder (concurrent requests) equals the local restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_restores_a_folder_through_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "tiny", 1);
    let server = start(tmp.path(), &[]);
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for k in 0..5u32 {
        common::photo(k, 33 + k, 30)
            .save(input.join(format!("p{k}.png")))
            .unwrap();
    }
    let out_dir = tmp.path().join("out");
    let bin = env!("CARGO_BIN_EXE_noiseda");
    let out = tokio::process::Command::new(bin)
        .args([
            "restore",
            "--server",
            server.addr.trim_start_matches("http://"),
        ])
        .args(["--concurrency", "3"])
        .arg(&input)
        .arg(&out_dir)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored 5 image(s)"), "{stderr}");
    for k in 0..5u32 {
        let img = common::photo(k, 33 + k, 30);
        let got = image::open(out_dir.join(format!("p{k}.png")))
            .unwrap()
            .to_rgb8();
        let want = noiseda::data::Image {
            width: img.width() as usize,
            height: img.height() as usize,
            data: local(&model, &img, None),
        }
        .to_rgb8();
        assert_eq!(got, want, "p{k}");
    }
    // A bad server address fails with a clear message.
    let out = tokio::process::Command::new(bin)
        .args(["restore", "--server", "127.0.0.1:1"])
        .arg(&input)
        .arg(&out_dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
}

/// The load benchmark runs end to end (tiny and short here; see README for real numbers):
/// batched, mixed (half the clients through ModelInfer: the protocol's overhead), unbatched.
#[test]
fn load_benchmark_reports_every_mode() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(["bench", "restore-load", "--size", "32", "--clients", "4"])
        .args(["--seconds", "1", "--batch", "2", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes = r["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 3);
    for (m, (mode, batch)) in modes
        .iter()
        .zip([("batched", 2), ("mixed", 2), ("unbatched", 1)])
    {
        assert_eq!(m["mode"], mode);
        assert_eq!(m["max_batch_size"], batch);
        assert!(m["mean_batch"].as_f64().unwrap() >= 1.0, "{m}");
        assert!(m["requests"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["errors"].as_object().unwrap().len(), 0, "{m}");
        for k in [
            "images_per_second",
            "p50_ms",
            "p99_ms",
            "raw_ms_per_image",
            "overhead",
        ] {
            assert!(m[k].as_f64().unwrap().is_finite(), "{k}: {m}");
        }
    }
    let by_api = modes[1]["mean_ms_by_api"].as_object().unwrap();
    assert!(
        by_api.contains_key("restore") && by_api.contains_key("model_infer"),
        "{r}"
    );
    assert!(r["protocol_overhead"].as_f64().unwrap().is_finite(), "{r}");
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_past_capacity_is_refused_fast_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "tiny", 1);
    let server = start(tmp.path(), &["--max-queue", "4", "--max-batch-size", "2"]);
    let ch = channel(&server.addr).await;
    let img = png(&common::photo(3, 96, 96));
    // Warm up, then measure the resident memory under a fixed, bounded load: 32 clients for
    // 3 s against a queue of 4 images.
    RestoreClient::new(ch.clone())
        .restore(request(vec![encoded(img.clone())], pb::OutputFormat::Png))
        .await
        .unwrap();
    let rss_before = rss_mib(server.pid());
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (ch, img) = (ch.clone(), img.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = RestoreClient::new(ch);
            let mut out = Vec::new();
            while std::time::Instant::now() < until {
                let t0 = std::time::Instant::now();
                let r = c
                    .restore(request(vec![encoded(img.clone())], pb::OutputFormat::Png))
                    .await;
                let code = r.err().map_or(Code::Ok, |e| e.code());
                out.push((code, t0.elapsed().as_secs_f64() * 1e3));
            }
            out
        }));
    }
    let mut peak = rss_before;
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
        peak = peak.max(rss_mib(server.pid()));
    }
    let rss_after = rss_mib(server.pid());
    let mut ok: Vec<f64> = all
        .iter()
        .filter(|r| r.0 == Code::Ok)
        .map(|r| r.1)
        .collect();
    let mut refused: Vec<f64> = all
        .iter()
        .filter(|r| r.0 == Code::ResourceExhausted)
        .map(|r| r.1)
        .collect();
    let other: Vec<_> = all
        .iter()
        .filter(|r| r.0 != Code::Ok && r.0 != Code::ResourceExhausted)
        .collect();
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert!(
        !ok.is_empty() && !refused.is_empty(),
        "{} ok, {} refused",
        ok.len(),
        refused.len()
    );
    let (ok_ms, refused_ms) = (median(&mut ok), median(&mut refused));
    assert!(
        refused_ms < ok_ms,
        "refusals ({refused_ms:.1} ms) should be answered faster than restores ({ok_ms:.1} ms)"
    );
    assert!(
        rss_after - rss_before < 256.0,
        "RSS grew from {rss_before:.0} to {rss_after:.0} MiB"
    );
    eprintln!(
        "overload: {} requests in 3 s from 32 clients, queue 4: {} ok ({:.1}/s, median {ok_ms:.1} ms), \
         {} RESOURCE_EXHAUSTED (median {refused_ms:.2} ms), 0 other; RSS {rss_before:.0} -> peak {peak:.0} -> {rss_after:.0} MiB",
        all.len(),
        ok.len(),
        ok.len() as f64 / 3.0,
        refused.len()
    );
    // Still serving afterwards.
    RestoreClient::new(ch)
        .restore(request(vec![encoded(img)], pb::OutputFormat::Png))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_restore_load_drains_in_order() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "tiny", 1);
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let models = tmp.path().join("models");
    // Both services in one process: a training job runs while Restore is under load. Each
    // image waits 600 ms for company in the batch queue, so requests are in flight at SIGTERM.
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--model-dir",
            models.to_str().unwrap(),
            "--max-batch-wait-us",
            "600000",
            "--max-batch-size",
            "16",
            "--shutdown-grace",
            "20",
        ],
    );
    let mut training = server.client().await;
    let job = training
        .start_job(common::server::start_request(
            &common::server::tiny_toml("bg", &clean, 1_000_000, 1_000_000, None),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    common::server::wait_for(&mut training, &job.id, "steps", |j| {
        j.progress.as_ref().is_some_and(|p| p.step > 5)
    })
    .await;
    let ch = channel(&server.addr).await;
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: "noiseda.v1.Restore".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, 1, "SERVING");

    let img = png(&common::photo(2, 64, 64));
    let t0 = std::time::Instant::now();
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        let (ch, img) = (ch.clone(), img.clone());
        in_flight.push(tokio::spawn(async move {
            let r = RestoreClient::new(ch)
                .restore(request(vec![encoded(img)], pb::OutputFormat::Png))
                .await;
            (r.map(|_| ()), t0.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGTERM);
    }
    // 1. Readiness flips first.
    let flipped = watch.message().await.unwrap().unwrap();
    let flipped_at = t0.elapsed();
    assert_eq!(flipped.status, 2, "NOT_SERVING");
    // 2. New calls are refused with UNAVAILABLE.
    let r = RestoreClient::new(ch.clone())
        .restore(request(vec![encoded(img.clone())], pb::OutputFormat::Png))
        .await;
    let Err(e) = r else {
        panic!("a call after SIGTERM was served")
    };
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    // 3. The calls in flight at SIGTERM finish, after readiness went off.
    for t in in_flight {
        let (r, done_at) = t.await.unwrap();
        r.unwrap();
        assert!(done_at > flipped_at, "{done_at:?} <= {flipped_at:?}");
    }
    // 4. The process exits within the grace period and the running job checkpointed (an
    // open Watch stream would hold it to the end of the grace period).
    drop(watch);
    drop(ch);
    let took = server.wait();
    assert!(took < Duration::from_secs(20), "{took:?}");
    let ckpts = noiseda::train::checkpoint::list(
        &tmp.path()
            .join("data/jobs")
            .join(&job.id)
            .join("checkpoints"),
    )
    .unwrap();
    assert_eq!(ckpts.len(), 1, "the shutdown checkpoint");
}

/// The inference protocol's REST binding keeps the Restore service's rules: API-key scopes
/// (health open, the rest needs `restore`), the payload limit, and errors as `{"error": …}`
/// naming the field with the protocol's HTTP statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_binding_keeps_scopes_limits_and_named_errors() {
    use common::server::http_call;
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "m", 0);
    let keys = tmp.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nname = \"restorer\"\nscopes = [\"restore\"]\nsecret = \"restorer-secret-0123\"\n\
         [[key]]\nname = \"trainer\"\nscopes = [\"training\"]\nsecret = \"trainer-secret-01234\"\n",
    )
    .unwrap();
    let server = start_in_process(
        tmp.path(),
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--payload-limit",
            "4096",
        ],
    )
    .await;
    let url = |p: &str| format!("{}{p}", server.http);
    let (restorer, trainer) = (Some("restorer-secret-0123"), Some("trainer-secret-01234"));

    assert_eq!(
        http_call("GET", &url("/v2/health/live"), None, b"").await.0,
        200
    );
    assert_eq!(
        http_call("GET", &url("/v2/health/ready"), None, b"")
            .await
            .0,
        200
    );
    let (code, body) = http_call("GET", &url("/v2/models/m"), None, b"").await;
    assert!(code == 401 && body.contains("API key"), "{code} {body}");
    let (code, body) = http_call("GET", &url("/v2/models/m"), trainer, b"").await;
    assert!(code == 403 && body.contains("restore"), "{code} {body}");
    let (code, body) = http_call("GET", &url("/v2/models/m"), restorer, b"").await;
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(code == 200 && meta["name"] == "m", "{code} {body}");

    // JSON values in, JSON values out.
    let pixels: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let req = serde_json::json!({"inputs": [{"name": "INPUT", "shape": [1, 8, 8, 3],
        "datatype": "UINT8", "data": pixels}]});
    let (code, body) = http_call(
        "POST",
        &url("/v2/models/m/infer"),
        restorer,
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["outputs"][0]["shape"], serde_json::json!([1, 8, 8, 3]));
    assert_eq!(resp["outputs"][0]["data"].as_array().unwrap().len(), 192);

    // Named errors, and the payload limit.
    for (body, code, field) in [
        (r#"{"inputs": []}"#.to_string(), 400, "inputs"),
        (r#"{"inputs": [{"name": "INPUT"}]}"#.into(), 400, "request body"),
        (
            r#"{"inputs": [{"name": "INPUT", "shape": [1,1,1,3], "datatype": "FP64", "data": [1,2,3]}]}"#.into(),
            400,
            "datatype",
        ),
    ] {
        let (got, text) =
            http_call("POST", &url("/v2/models/m/infer"), restorer, body.as_bytes()).await;
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            got == code && err["error"].as_str().unwrap().contains(field),
            "{body}: {got} {text}"
        );
    }
    let (code, _) = http_call(
        "POST",
        &url("/v2/models/m/infer"),
        restorer,
        &vec![b' '; 8192],
    )
    .await;
    assert_eq!(code, 413, "a body over --payload-limit");
    let (code, body) = http_call(
        "POST",
        &url("/v2/models/nope/infer"),
        restorer,
        req.to_string().as_bytes(),
    )
    .await;
    assert!(code == 404 && body.contains("nope"), "{code} {body}");
    server.shutdown().await.unwrap();
}

/// The container arguments of `deploy/k8s/kserve/servingruntime.yaml`, in order.
fn kserve_runtime_args() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/k8s/kserve/servingruntime.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for l in lines.by_ref() {
        let Some(v) = l.trim().strip_prefix("- ") else {
            break;
        };
        args.push(v.trim_matches('"').to_string());
    }
    assert!(args.first().is_some_and(|a| a == "serve"), "{args:?}");
    args
}

/// KServe's ServingRuntime runs exactly these arguments with the InferenceService's name for
/// `{{.Name}}` and its storage at /mnt/models: that command serves the model over KServe v2
/// REST and the protocol's gRPC service (ports moved to 127.0.0.1:0 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kserve_runtime_command_serves_its_model() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(tmp.path(), "unet-t-polyu", 0);
    let models = tmp.path().join("models");
    let args: Vec<String> = kserve_runtime_args()
        .into_iter()
        .map(|a| match a.as_str() {
            "{{.Name}}" => "unet-t-polyu".to_string(),
            "/mnt/models" => models.to_str().unwrap().to_string(),
            a if a.starts_with("0.0.0.0:") => "127.0.0.1:0".to_string(),
            a => a.to_string(),
        })
        .collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(&args)
        .env("NOISEDA_DATA_DIR", tmp.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() == 13 && words[10] == "REST", "{line:?}");
    let (grpc, rest) = (words[4].trim_end_matches(','), words[12]);
    let (code, _) =
        common::server::http_call("GET", &format!("{rest}/v2/health/ready"), None, b"").await;
    assert_eq!(code, 200);
    let (code, body) =
        common::server::http_call("GET", &format!("{rest}/v2/models/unet-t-polyu"), None, b"")
            .await;
    assert!(
        code == 200 && body.contains("\"unet-t-polyu\""),
        "{code} {body}"
    );
    let mut c = noiseda::client::inference_client(&format!("http://{grpc}"))
        .await
        .unwrap();
    let ready = c
        .model_ready(pb::inference::ModelReadyRequest {
            name: "unet-t-polyu".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
