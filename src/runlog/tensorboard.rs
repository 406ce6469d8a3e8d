//! TensorBoard event files: the metric log's points as scalars (`train/charbonnier`,
//! `val/psnr`, …) and the validation crops as images (`val/crop/0`, …) in `tensorboard/events.out.tfevents.*` beside `metrics.jsonl`. The format is
//! TFRecord — each record a little-endian u64 length, the masked CRC32C of those 8 bytes, the
//! data, the masked CRC32C of the data — holding `tensorflow.Event` protos (encoded with prost
//! from the field numbers of TensorFlow's `event.proto` / `summary.proto`). Blocking.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `tensorflow.Event`: the subset written here.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: a tag and a scalar or an image.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
    #[prost(message, optional, tag = "4")]
    image: Option<SummaryImage>,
}

/// `tensorflow.Summary.Image`: an encoded (PNG) picture.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryImage {
    #[prost(int32, tag = "1")]
    height: i32,
    #[prost(int32, tag = "2")]
    width: i32,
    /// 3 = RGB.
    #[prost(int32, tag = "3")]
    colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    encoded_image_string: Vec<u8>,
}

/// TFRecord's CRC: CRC32C rotated and offset, so that a CRC of data holding CRCs stays strong.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// An event file being written.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts `dir` afresh: earlier event files are removed (the metric log is the source of
    /// truth and is written again in full, so a crash between the two files loses nothing and a
    /// resumed run duplicates nothing), then a new file opens with its version record.
    pub fn recreate(dir: &Path) -> Result<Self> {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    let is_events = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("events.out.tfevents."));
                    if is_events {
                        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let wall = crate::clock::unix_secs_f64();
        let path = dir.join(format!("events.out.tfevents.{}.noiseda", wall as u64));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = Self { file, path };
        w.write(&Event {
            wall_time: wall,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    /// One scalar point.
    pub fn scalar(&mut self, tag: &str, step: u64, wall: f64, value: f64) -> Result<()> {
        self.value(
            step,
            wall,
            SummaryValue {
                tag: tag.to_string(),
                simple_value: Some(value as f32),
                image: None,
            },
        )
    }

    /// One RGB picture, `png` its PNG encoding of `width`×`height` pixels.
    pub fn image(
        &mut self,
        tag: &str,
        step: u64,
        wall: f64,
        (width, height): (u32, u32),
        png: Vec<u8>,
    ) -> Result<()> {
        let image = SummaryImage {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.value(
            step,
            wall,
            SummaryValue {
                tag: tag.to_string(),
                simple_value: None,
                image: Some(image),
            },
        )
    }

    /// An event holding one summary value.
    fn value(&mut self, step: u64, wall: f64, value: SummaryValue) -> Result<()> {
        self.write(&Event {
            wall_time: wall,
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value: vec![value] }),
        })
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        let data = prost::Message::encode_to_vec(e);
        self.file
            .write_all(&record(&data))
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_tfrecord_crcs() {
        // CRC32C of "123456789" is 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&r[..8]).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
    }
}
