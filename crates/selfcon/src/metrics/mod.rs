//! Training logs in the run folder: `metrics.jsonl` (one JSON object per record) and
//! `metrics.csv` (the same records as rows), appended as training goes; with `--tensorboard` also
//! TensorBoard event files ([`tensorboard`]).

pub mod tensorboard;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

pub struct MetricsLog {
    /// `None` on ranks other than 0 of a distributed run: they log nothing.
    files: Option<(File, File)>,
    columns: Vec<String>,
    path: std::path::PathBuf,
    /// `--tensorboard`: the same numbers as scalar events.
    tensorboard: Option<tensorboard::EventWriter>,
}

impl MetricsLog {
    /// [`MetricsLog::open`] on the primary process (rank 0, or a process outside a distributed
    /// run); the other ranks get a log that records nothing.
    pub fn open_on_primary(dir: &Path, columns: &[&str]) -> Result<Self> {
        if crate::distributed::is_primary() {
            Self::open(dir, columns)
        } else {
            Ok(MetricsLog { files: None, columns: Vec::new(), path: dir.to_path_buf(), tensorboard: None })
        }
    }

    /// Opens (appending) the logs in `dir`; `columns` fixes the CSV header.
    pub fn open(dir: &Path, columns: &[&str]) -> Result<Self> {
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::file(&path, format!("cannot write: {e}")))
        };
        let csv_path = dir.join("metrics.csv");
        // A resumed run keeps the header its CSV already has (rows stay aligned with it, even
        // when this run logs other fields; metrics.jsonl has every field).
        let existing = File::open(&csv_path)
            .ok()
            .and_then(|f| std::io::BufRead::lines(std::io::BufReader::new(f)).next()?.ok())
            .filter(|header| !header.is_empty());
        let mut csv = open("metrics.csv")?;
        let columns: Vec<String> = match existing {
            Some(header) => header.split(',').map(str::to_string).collect(),
            None => {
                writeln!(csv, "{}", columns.join(",")).map_err(|e| Error::file(&csv_path, e.to_string()))?;
                columns.iter().map(|c| c.to_string()).collect()
            }
        };
        Ok(MetricsLog {
            files: Some((open("metrics.jsonl")?, csv)),
            columns,
            path: dir.to_path_buf(),
            tensorboard: None,
        })
    }

    /// With `on`, every record also goes to a new TensorBoard event file in the run folder (rank 0
    /// only, like the other logs): a step record's numbers as `{stage}/step/{field}` at its global
    /// step (`{stage}/step/pass{k}/{field}` for a later pass of the epoch: linear's sub-network
    /// classifier), any other record's as `{stage}/{kind}/{field}` at its epoch; flushed at every
    /// record that is not a step record (every epoch).
    pub fn with_tensorboard(mut self, on: bool) -> Result<Self> {
        if on && self.files.is_some() {
            self.tensorboard = Some(tensorboard::EventWriter::create(&self.path)?);
        }
        Ok(self)
    }

    /// Appends one record, a JSON object (`json!({...})`); absent keys leave the CSV cell empty.
    pub fn record(&mut self, fields: Value) -> Result<()> {
        let Some((jsonl, csv)) = &mut self.files else {
            return Ok(());
        };
        let io = |e: std::io::Error| Error::file(self.path.join("metrics.jsonl"), e.to_string());
        // One write per line: a process killed mid-record leaves whole lines.
        jsonl.write_all(format!("{fields}\n").as_bytes()).map_err(io)?;
        let row: Vec<String> = self
            .columns
            .iter()
            .map(|c| match fields.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            })
            .collect();
        csv.write_all(format!("{}\n", row.join(",")).as_bytes())
            .map_err(|e| Error::file(self.path.join("metrics.csv"), e.to_string()))?;
        if let Some(events) = &mut self.tensorboard {
            write_scalars(events, &fields)?;
        }
        Ok(())
    }
}

/// The numeric fields of a record as scalar events (see [`MetricsLog::with_tensorboard`]).
fn write_scalars(events: &mut tensorboard::EventWriter, fields: &Value) -> Result<()> {
    let Some(map) = fields.as_object() else { return Ok(()) };
    let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
    let number = |k: &str| map.get(k).and_then(Value::as_i64);
    let (stage, kind) = (text("stage"), text("kind"));
    let (prefix, step) = match kind {
        // Linear evaluation trains its classifiers in separate passes (0: backbone, 1: sub-network).
        "step" => {
            let step = number("global_step").or(number("step")).unwrap_or(0);
            match number("pass").unwrap_or(0) {
                0 => (format!("{stage}/step"), step),
                pass => (format!("{stage}/step/pass{pass}"), step),
            }
        }
        _ => (format!("{stage}/{kind}"), number("epoch").unwrap_or(0)),
    };
    for (key, value) in map {
        if matches!(key.as_str(), "epoch" | "step" | "global_step" | "pass") {
            continue;
        }
        if let Some(v) = value.as_f64() {
            events.scalar(&format!("{prefix}/{key}"), step, v as f32)?;
        }
    }
    if kind != "step" {
        events.flush()?;
    }
    Ok(())
}
