//! A run folder as `selfcon report` reads it: `config.json` and the records of `metrics.jsonl`
//! (pre-training, linear evaluation or CE), with short labels for legends.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

pub struct RunLog {
    pub dir: PathBuf,
    /// Legend label: method and model for pre-training, "linear of …" for a linear run.
    pub label: String,
    /// `pretrain`, `linear` or `ce`.
    pub stage: String,
    pub config: Value,
    pub records: Vec<Value>,
}

impl RunLog {
    /// Reads `dir/config.json` and `dir/metrics.jsonl` (a line cut off by a killed process is skipped).
    pub fn open(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                Error::file(&path, format!("cannot read ({e}); a run folder of pretrain, linear or ce has {name}"))
            })
        };
        let config: Value = serde_json::from_str(&read("config.json")?)
            .map_err(|e| Error::file(dir.join("config.json"), format!("is not JSON: {e}")))?;
        let records: Vec<Value> = read("metrics.jsonl")?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let stage = records
            .iter()
            .find_map(|r| r["stage"].as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::file(dir.join("metrics.jsonl"), "has no records yet"))?;
        let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        let label = match stage.as_str() {
            "pretrain" => format!("{} {}", text(&config["method"]), text(&config["model"]["architecture"])),
            other => format!("{other} {}", text(&config["model"]["architecture"])),
        };
        Ok(RunLog { dir: dir.to_path_buf(), label, stage, config, records })
    }

    /// `(global step, value)` of `key` in the step records (the step within the epoch counted on
    /// for records written before global steps were logged).
    pub fn per_step(&self, key: &str) -> Vec<(f64, f64)> {
        let mut offset = 0.0;
        let mut last_epoch = 0;
        let mut last_step = 0.0;
        self.records
            .iter()
            .filter(|r| r["kind"] == "step")
            .filter_map(|r| {
                let value = r[key].as_f64()?;
                let x = match r["global_step"].as_f64() {
                    Some(g) => g,
                    None => {
                        let (epoch, step) = (r["epoch"].as_u64().unwrap_or(0), r["step"].as_f64().unwrap_or(0.0));
                        if epoch != last_epoch {
                            offset += last_step;
                            last_epoch = epoch;
                        }
                        last_step = step;
                        offset + step
                    }
                };
                Some((x, value))
            })
            .collect()
    }

    /// `(epoch, value)` of `key` in the epoch records.
    pub fn per_epoch(&self, key: &str) -> Vec<(f64, f64)> {
        self.records
            .iter()
            .filter(|r| r["kind"] == "epoch")
            .filter_map(|r| Some((r["epoch"].as_f64()?, r[key].as_f64()?)))
            .collect()
    }

    /// The last epoch record, if any.
    pub fn last_epoch(&self) -> Option<&Value> {
        self.records.iter().rev().find(|r| r["kind"] == "epoch")
    }

    /// Exits of a pre-trained model (from its configuration).
    pub fn exit_count(&self) -> usize {
        self.config["model"]["exits"].as_array().map_or(0, |a| a.iter().filter(|v| v.as_bool() == Some(true)).count())
    }
}

/// Labels made unique by numbering repeats ("SelfCon resnet18", "SelfCon resnet18 (2)").
pub fn distinct_labels(runs: &mut [RunLog]) {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for run in runs.iter_mut() {
        let n = seen.entry(run.label.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            run.label = format!("{} ({n})", run.label);
        }
    }
}
