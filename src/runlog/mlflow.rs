//! MLflow tracking of a run's metric log: one MLflow run per noiseda run (found again by its
//! `noiseda.run` tag), the resolved spec as params, the points sent through the seq cursor in
//! `mlflow.json` in batches within the REST API's limits, and the run's end status. Blocking.
//!
//! Delivery is at-least-once with an idempotent key: a point is sent with its own step and
//! wall-clock timestamp, and MLflow's SQL store keeps one row per (key, step, timestamp, value),
//! so a batch sent again after a crash between the send and the cursor write adds nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::runlog::{read_metric_log, tensorboard_tag, MetricPoint};
use crate::{Error, Result};

/// The REST API's limit on metrics in one `runs/log-batch`.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// … and on params.
const MAX_PARAMS_PER_BATCH: usize = 100;
/// MLflow's limit on a param value's length.
const MAX_PARAM_LEN: usize = 6000;

/// How an MLflow run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// `mlflow.json` in the run directory: the MLflow run and how far the log has been sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub run_id: String,
    /// Points with `seq` up to this one are in MLflow.
    pub sent_seq: u64,
    /// The status the MLflow run was ended with, once it was.
    pub ended: Option<RunStatus>,
}

/// Where a run's points go.
pub struct Target<'a> {
    /// The tracking server, e.g. `http://127.0.0.1:5000`.
    pub uri: &'a str,
    pub experiment: &'a str,
    pub run_name: &'a str,
    /// The resolved spec, flattened to dotted keys, logged once as params.
    pub params: Vec<(String, String)>,
}

/// What one [`sync`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub run_id: String,
    pub sent: usize,
}

fn cursor_path(run_dir: &Path) -> PathBuf {
    run_dir.join("mlflow.json")
}

/// Reads a run's cursor (`None` before its first sync).
pub fn read_cursor(run_dir: &Path) -> Result<Option<Cursor>> {
    let path = cursor_path(run_dir);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::data(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn write_cursor(run_dir: &Path, c: &Cursor) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(c).expect("cursor serialises. This is a bug.");
    crate::fsio::write_atomic(&cursor_path(run_dir), &bytes)
}

/// The spec as MLflow params: every leaf of its JSON form under its dotted path.
pub fn flatten_params(spec: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => out.push((path, s.clone())),
            other => out.push((path, other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(spec, String::new(), &mut out);
    for (_, v) in &mut out {
        if v.len() > MAX_PARAM_LEN {
            let mut cut = MAX_PARAM_LEN;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
    }
    out
}

/// A tracking server's REST API.
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn new(uri: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            base: format!("{}/api/2.0/mlflow", uri.trim_end_matches('/')),
        }
    }

    /// POSTs `body` to `path`; the JSON answer, or an error naming the call and MLflow's words.
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let url = format!("{}/{path}", self.base);
        let resp = self.agent.post(&url).send_json(body);
        self.answer(&url, resp)
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value> {
        let url = format!("{}/{path}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(&url, req.call())
    }

    fn answer(
        &self,
        url: &str,
        resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<serde_json::Value> {
        let unavailable = |m: String| Error::unavailable(format!("MLflow {url}: {m}"));
        let mut resp = resp.map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| unavailable(e.to_string()))?;
        if !status.is_success() {
            return Err(unavailable(format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| unavailable(format!("answer {text:?}: {e}")))
    }

    fn experiment_id(&self, name: &str) -> Result<String> {
        match self.get("experiments/get-by-name", &[("experiment_name", name)]) {
            Ok(v) => Ok(str_at(&v, "/experiment/experiment_id")?),
            Err(Error::Unavailable { msg, .. }) if msg.contains("RESOURCE_DOES_NOT_EXIST") => {
                let v = self.post("experiments/create", &json!({ "name": name }))?;
                str_at(&v, "/experiment_id")
            }
            Err(e) => Err(e),
        }
    }

    /// The run tagged `noiseda.run = key`, if one exists.
    fn find_run(&self, experiment_id: &str, key: &str) -> Result<Option<String>> {
        let v = self.post(
            "runs/search",
            &json!({
                "experiment_ids": [experiment_id],
                "filter": format!("tags.`noiseda.run` = '{}'", key.replace('\'', "")),
                "max_results": 1,
            }),
        )?;
        match v.pointer("/runs/0/info/run_id") {
            Some(id) => Ok(Some(id.as_str().unwrap_or_default().to_string())),
            None => Ok(None),
        }
    }
}

fn str_at(v: &serde_json::Value, at: &str) -> Result<String> {
    v.pointer(at)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::unavailable(format!("MLflow answer has no {at}: {v}")))
}

fn metric_json(p: &MetricPoint) -> serde_json::Value {
    // Protobuf's JSON form spells non-finite doubles as strings.
    let value = if p.value.is_finite() {
        json!(p.value)
    } else if p.value.is_nan() {
        json!("NaN")
    } else if p.value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    };
    json!({
        "key": tensorboard_tag(p.split, &p.series),
        "value": value,
        "timestamp": (p.wall * 1000.0).round() as i64,
        "step": p.step,
    })
}

/// Sends what the run directory's metric log holds beyond the cursor (creating the MLflow run
/// with its params on the first call) and, with `end`, ends the MLflow run with that status.
/// `key` names the noiseda run (the job id, or the run directory) for finding its MLflow run.
pub fn sync(
    run_dir: &Path,
    key: &str,
    target: &Target<'_>,
    end: Option<RunStatus>,
) -> Result<Synced> {
    let api = Api::new(target.uri);
    let mut cursor = match read_cursor(run_dir)? {
        Some(c) => c,
        None => {
            let exp = api.experiment_id(target.experiment)?;
            let run_id = match api.find_run(&exp, key)? {
                Some(id) => id,
                None => {
                    let v = api.post(
                        "runs/create",
                        &json!({
                            "experiment_id": exp,
                            "run_name": target.run_name,
                            "start_time": crate::clock::unix_ms(),
                            "tags": [{ "key": "noiseda.run", "value": key }],
                        }),
                    )?;
                    str_at(&v, "/run/info/run_id")?
                }
            };
            for chunk in target.params.chunks(MAX_PARAMS_PER_BATCH) {
                let params: Vec<_> = chunk
                    .iter()
                    .map(|(k, v)| json!({ "key": k, "value": v }))
                    .collect();
                api.post(
                    "runs/log-batch",
                    &json!({ "run_id": run_id, "params": params }),
                )?;
            }
            let c = Cursor {
                run_id,
                ..Cursor::default()
            };
            write_cursor(run_dir, &c)?;
            c
        }
    };
    let points = read_metric_log(&run_dir.join("metrics.jsonl"))?;
    let todo: Vec<&MetricPoint> = points.iter().filter(|p| p.seq > cursor.sent_seq).collect();
    let mut sent = 0;
    for chunk in todo.chunks(MAX_METRICS_PER_BATCH) {
        let metrics: Vec<_> = chunk.iter().map(|p| metric_json(p)).collect();
        api.post(
            "runs/log-batch",
            &json!({ "run_id": cursor.run_id, "metrics": metrics }),
        )?;
        sent += chunk.len();
        cursor.sent_seq = chunk.last().map_or(cursor.sent_seq, |p| p.seq);
        write_cursor(run_dir, &cursor)?;
    }
    if let Some(status) = end.filter(|s| cursor.ended != Some(*s)) {
        api.post(
            "runs/update",
            &json!({
                "run_id": cursor.run_id,
                "status": status.as_str(),
                "end_time": crate::clock::unix_ms(),
            }),
        )?;
        cursor.ended = Some(status);
        write_cursor(run_dir, &cursor)?;
    }
    Ok(Synced {
        run_id: cursor.run_id,
        sent,
    })
}

/// How often a running exporter sends what the log has gained.
const EVERY: Duration = Duration::from_secs(5);
/// How long the end of a run waits for a tracking server that does not answer.
const FINAL_TRIES: u32 = 3;

/// Sends a run's points to MLflow from its own thread while the run trains; a tracking
/// server that is down never slows or fails training (the points wait in the metric log).
pub struct Exporter {
    stop: std::sync::mpsc::SyncSender<Option<RunStatus>>,
    thread: std::thread::JoinHandle<()>,
}

/// What an exporter needs, owned.
pub struct Owned {
    pub run_dir: PathBuf,
    pub key: String,
    pub uri: String,
    pub experiment: String,
    pub run_name: String,
    pub params: Vec<(String, String)>,
}

impl Owned {
    fn target(&self) -> Target<'_> {
        Target {
            uri: &self.uri,
            experiment: &self.experiment,
            run_name: &self.run_name,
            params: self.params.clone(),
        }
    }
}

impl Exporter {
    pub fn start(what: Owned) -> Self {
        let (stop, rx) = std::sync::mpsc::sync_channel::<Option<RunStatus>>(1);
        let thread = std::thread::spawn(move || {
            let end = loop {
                match rx.recv_timeout(EVERY) {
                    Ok(end) => break end,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = sync(&what.run_dir, &what.key, &what.target(), None) {
                            tracing::warn!("MLflow export is behind: {e}");
                        }
                    }
                }
            };
            for attempt in 1..=FINAL_TRIES {
                match sync(&what.run_dir, &what.key, &what.target(), end) {
                    Ok(s) => {
                        tracing::info!(run_id = %s.run_id, sent = s.sent, "MLflow run synced");
                        return;
                    }
                    Err(e) if attempt == FINAL_TRIES => tracing::warn!(
                        "MLflow export is behind: {e}; the rest is sent when this run resumes"
                    ),
                    Err(_) => std::thread::sleep(Duration::from_secs(attempt as u64)),
                }
            }
        });
        Self { stop, thread }
    }

    /// Sends the rest, ends the MLflow run with `end` (none: the run continues later), and
    /// waits for the exporter thread.
    pub fn finish(self, end: Option<RunStatus>) {
        let _ = self.stop.send(end);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_dotted_leaves_within_mlflows_length_limit() {
        let v = json!({"name": "x", "data": {"patch": 64, "val": null, "long": "é".repeat(4000)}});
        let mut p = flatten_params(&v);
        p.sort();
        assert_eq!(p[0].0, "data.long");
        assert!(p[0].1.len() <= MAX_PARAM_LEN && p[0].1.is_char_boundary(p[0].1.len()));
        assert_eq!(
            &p[1..],
            [
                ("data.patch".into(), "64".into()),
                ("name".into(), "x".into())
            ]
        );
    }
}
