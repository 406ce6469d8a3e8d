//! Hostile input: mutation fuzzing (proptest) of image decoding with limits, raw images and
//! Restore requests off the wire, job specs (TOML, JSON and the StartJob proto) and model
//! artifacts (manifest + weights), plus the committed corpus in `tests/corpus/` replayed as
//! regression tests. Every input must end in a value or a named error, never a panic or an
//! allocation beyond the limits. `scripts/fuzz.sh` runs the same targets for longer.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use noiseda::grpc::config::LimitsConfig;
use noiseda::grpc::convert::decode_input;
use noiseda::jobs::SpecDocument;
use noiseda::pb;
use noiseda::train::{self, TrainOptions};
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

const MAX_INPUT_PIXELS: usize = 1 << 18;

fn limits() -> LimitsConfig {
    LimitsConfig {
        max_image_pixels: 1 << 16,
        max_input_pixels: MAX_INPUT_PIXELS,
        max_images_per_request: 4,
        tile_size: 0,
        tile_overlap: 0,
    }
}

// ---- targets --------------------------------------------------------------------------

/// An encoded image as the Restore service receives it.
fn image_target(bytes: &[u8]) -> Result<(), String> {
    let input = pb::ImageInput {
        image: Some(pb::image_input::Image::Encoded(pb::EncodedImage {
            data: bytes.to_vec(),
        })),
    };
    decoded(decode_input(
        &limits(),
        0,
        &input,
        &pb::RestoreRequest::default(),
        8,
    ))
}

fn decoded(r: noiseda::Result<noiseda::restore::codec::Decoded>) -> Result<(), String> {
    match r {
        Ok(d) => {
            assert!(d.image.width * d.image.height <= MAX_INPUT_PIXELS);
            assert_eq!(d.image.data.len(), d.image.width * d.image.height * 3);
            Ok(())
        }
        Err(e) => {
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            assert!(e.to_string().starts_with("image "), "unnamed: {e}");
            Err(e.to_string())
        }
    }
}

/// A Restore request off the wire (raw and encoded images, tiling fields).
fn request_target(bytes: &[u8]) {
    let Ok(req) = pb::RestoreRequest::decode(bytes) else {
        return;
    };
    for (k, input) in req.images.iter().enumerate().take(4) {
        let _ = decoded(decode_input(&limits(), k, input, &req, 8));
    }
}

/// A job spec document, as TOML, as JSON, and inside a StartJob request off the wire.
fn spec_target(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut docs = vec![
        SpecDocument::Toml(text.clone()),
        SpecDocument::Json(text.clone()),
    ];
    if let Ok(req) = pb::StartJobRequest::decode(bytes) {
        match req.spec.and_then(|s| s.document) {
            Some(pb::job_spec::Document::Toml(t)) => docs.push(SpecDocument::Toml(t)),
            Some(pb::job_spec::Document::Json(t)) => docs.push(SpecDocument::Json(t)),
            None => {}
        }
    }
    for doc in docs {
        match doc.parse() {
            Ok((_, mut spec)) => {
                for e in spec.problems() {
                    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                }
                spec.resolve_paths(Path::new("/srv/noiseda"));
                for e in spec.confine_paths(&[PathBuf::from("/srv/noiseda/data")]) {
                    assert!(!e.field_violations().is_empty(), "unnamed: {e}");
                }
            }
            Err(e) => assert!(!e.field_violations().is_empty(), "unnamed: {e}"),
        }
    }
}

/// A model artifact folder: `manifest` as manifest.json and `weights` as model.safetensors;
/// with `fix_hash` the manifest's sha256 is set to the weights' (to get past the hash check
/// into the weights parser).
fn artifact_target(dir: &Path, manifest: &[u8], weights: &[u8], fix_hash: bool) {
    let manifest = if fix_hash {
        match serde_json::from_slice::<serde_json::Value>(manifest) {
            Ok(serde_json::Value::Object(mut m)) => {
                use sha2::Digest;
                let h = format!("{:x}", sha2::Sha256::digest(weights));
                m.insert("sha256".into(), h.into());
                serde_json::to_vec(&m).unwrap()
            }
            _ => manifest.to_vec(),
        }
    } else {
        manifest.to_vec()
    };
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    if let Err(e) = noiseda::artifact::load(dir, &candle::Device::Cpu) {
        let code = e.code();
        assert!(
            matches!(code, Code::FailedPrecondition | Code::InvalidArgument),
            "{code:?}: {e}"
        );
    }
}

// ---- seeds ----------------------------------------------------------------------------

fn encode(format: image::ImageFormat) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(common::photo(1, 12, 10));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PNG whose header claims `w`×`h` (IHDR rewritten, CRC fixed): a decompression bomb
/// when large — a few hundred bytes that would decode to gigabytes.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = encode(image::ImageFormat::Png);
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn image_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        encode(image::ImageFormat::Png),
        encode(image::ImageFormat::Jpeg),
        encode(image::ImageFormat::WebP),
        png_claiming(100_000, 100_000),
    ];
    seeds.extend(corpus("image"));
    seeds
}

fn request_seeds() -> Vec<Vec<u8>> {
    let raw = |w: u32, h: u32, pt: pb::PixelType, n: usize| pb::ImageInput {
        image: Some(pb::image_input::Image::Raw(pb::RawImage {
            data: vec![7; n],
            height: h,
            width: w,
            channels: 3,
            pixel_type: pt as i32,
        })),
    };
    let req = |images: Vec<pb::ImageInput>, tile: u32| {
        pb::RestoreRequest {
            images,
            tile_size: tile,
            tile_overlap: tile / 3,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let mut seeds = vec![
        req(vec![raw(4, 3, pb::PixelType::U8, 36)], 0),
        req(vec![raw(4, 3, pb::PixelType::F32, 144)], 0),
        req(vec![raw(300, 300, pb::PixelType::U8, 270_000)], 64),
        req(
            vec![pb::ImageInput {
                image: Some(pb::image_input::Image::Encoded(pb::EncodedImage {
                    data: encode(image::ImageFormat::Png),
                })),
            }],
            0,
        ),
    ];
    seeds.extend(corpus("request"));
    seeds
}

fn spec_seeds() -> Vec<Vec<u8>> {
    let toml = common::server::tiny_toml("seed", Path::new("/srv/noiseda/data/clean"), 10, 5, None);
    let json = serde_json::to_vec(&toml::from_str::<toml::Value>(&toml).unwrap()).unwrap();
    let proto = pb::StartJobRequest {
        spec: Some(pb::JobSpec {
            document: Some(pb::job_spec::Document::Toml(toml.clone())),
        }),
        request_id: "r".into(),
    }
    .encode_to_vec();
    let mut seeds = vec![toml.into_bytes(), json, proto];
    seeds.extend(corpus("spec"));
    seeds
}

/// A real artifact: (manifest.json, model.safetensors).
fn artifact_seed() -> (Vec<u8>, Vec<u8>) {
    static SEED: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    SEED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let clean = common::write_photos(&tmp.path().join("clean"), 2, 40, 40);
        let summary = train::run(
            &common::tiny_spec(&clean, 1, 0),
            &TrainOptions {
                out: tmp.path().join("run"),
                resume: false,
                progress: false,
                control: None,
                job_id: None,
            },
        )
        .unwrap();
        let dir = summary.model_dir().unwrap();
        (
            std::fs::read(dir.join("manifest.json")).unwrap(),
            std::fs::read(dir.join("model.safetensors")).unwrap(),
        )
    })
    .clone()
}

/// The committed corpus of one target (`tests/corpus/<target>/*`).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

// ---- mutation strategy -----------------------------------------------------------------

/// A seed with up to 12 edits: byte set / insert / delete / bit flip / a big-endian u32 or
/// a length-like value written over four bytes, then maybe a truncation.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u32>(), 0u8..6);
    (
        0..seeds.len(),
        prop::collection::vec(edit, 0..12),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut b = seeds[i].clone();
            for (at, v, op) in edits {
                if b.is_empty() {
                    b.push(v as u8);
                    continue;
                }
                let p = at.index(b.len());
                match op {
                    0 => b[p] = v as u8,
                    1 => b.insert(p, v as u8),
                    2 => {
                        b.remove(p);
                    }
                    3 => b[p] ^= 1 << (v % 8),
                    4 | 5 if p + 4 <= b.len() => {
                        let val = if op == 4 { v } else { v % 70_000 };
                        b[p..p + 4].copy_from_slice(&val.to_be_bytes())
                    }
                    _ => b[p] = b[p].wrapping_add(1),
                }
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len() + 1));
            }
            b
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

// ---- tests ----------------------------------------------------------------------------

#[test]
fn decompression_bomb_is_rejected_from_its_header() {
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 1000, "{} bytes", bomb.len());
    let t0 = Instant::now();
    let e = image_target(&bomb).unwrap_err();
    assert!(
        e.contains("100000×100000") && e.contains("max_input_pixels"),
        "{e}"
    );
    assert!(t0.elapsed().as_millis() < 100, "{:?}", t0.elapsed());
    // Within the pixel limit but lying about its size: a named decode error.
    let liar = png_claiming(300, 300);
    let e = image_target(&liar).unwrap_err();
    assert!(e.contains("image 0"), "{e}");
}

#[test]
fn corpus_replays() {
    let mut n = 0;
    for file in corpus("image") {
        let _ = image_target(&file);
        n += 1;
    }
    for file in corpus("request") {
        request_target(&file);
        n += 1;
    }
    for file in corpus("spec") {
        spec_target(&file);
        n += 1;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, weights) = artifact_seed();
    for file in corpus("manifest") {
        artifact_target(tmp.path(), &file, &weights, false);
        artifact_target(tmp.path(), &file, &weights, true);
        n += 1;
    }
    for file in corpus("weights") {
        artifact_target(tmp.path(), &manifest, &file, true);
        n += 1;
    }
    assert!(n >= 20, "the corpus has only {n} inputs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_image(bytes in mutated(image_seeds())) {
        let _ = image_target(&bytes);
    }

    #[test]
    fn fuzz_request(bytes in mutated(request_seeds())) {
        request_target(&bytes);
    }

    #[test]
    fn fuzz_spec(bytes in mutated(spec_seeds())) {
        spec_target(&bytes);
    }

    #[test]
    fn fuzz_manifest(bytes in mutated(vec![artifact_seed().0]), fix in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        artifact_target(tmp.path(), &bytes, &artifact_seed().1, fix);
    }

    #[test]
    fn fuzz_weights(bytes in mutated(vec![artifact_seed().1])) {
        let tmp = tempfile::tempdir().unwrap();
        artifact_target(tmp.path(), &artifact_seed().0, &bytes, true);
    }
}
