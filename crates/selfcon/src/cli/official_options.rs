//! `--resume` of an official checkpoint: every flag the user did not give takes the value of the
//! official run's `opt` namespace (paths, workers and devices of the other machine excepted), as
//! `main_represent.py` / `main_ce.py` would continue with their saved options.

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde_json::{Map, Value};

use selfcon::Error;

use super::model_args::ModelArgs;
use super::optim_args::OptimArgs;

/// The official options and which flags were given on the command line.
pub struct OfficialOptions<'a> {
    opt: &'a Map<String, Value>,
    given: &'a ArgMatches,
    /// What was taken, as flags (printed once).
    pub taken: Vec<String>,
}

impl<'a> OfficialOptions<'a> {
    pub fn new(opt: &'a Map<String, Value>, given: &'a ArgMatches) -> Self {
        OfficialOptions { opt, given, taken: Vec::new() }
    }

    /// Sets `field` from the official option `id` unless `--id` was given.
    pub fn take<T>(&mut self, id: &str, field: &mut T, convert: impl Fn(&Value) -> Option<T>) -> selfcon::Result<()> {
        if self.given.try_get_raw(id).is_ok() && self.given.value_source(id) == Some(ValueSource::CommandLine) {
            return Ok(());
        }
        let Some(v) = self.opt.get(id).filter(|v| !v.is_null()) else { return Ok(()) };
        *field = convert(v)
            .ok_or_else(|| Error::option("resume", format!("the official option {id} = {v} is not usable")))?;
        self.taken.push(format!("--{id} {v}"));
        Ok(())
    }

    /// The model, dataset and optimisation options both official scripts share.
    pub fn take_common(
        &mut self,
        dataset: &mut String,
        model: &mut ModelArgs,
        optim: &mut OptimArgs,
    ) -> selfcon::Result<()> {
        self.take("dataset", dataset, text)?;
        self.take("model", &mut model.model, some_text)?;
        self.take("selfcon_pos", &mut model.selfcon_pos, some_text)?;
        self.take("selfcon_arch", &mut model.selfcon_arch, some_text)?;
        self.take("selfcon_size", &mut model.selfcon_size, some_text)?;
        self.take("batch_size", &mut optim.batch_size, count)?;
        self.take("epochs", &mut optim.epochs, count)?;
        self.take("learning_rate", &mut optim.learning_rate, float)?;
        self.take("lr_decay_epochs", &mut optim.lr_decay_epochs, |v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => {
                items.iter().map(|i| i.as_u64().map(|n| n.to_string())).collect::<Option<Vec<_>>>().map(|v| v.join(","))
            }
            _ => None,
        })?;
        self.take("lr_decay_rate", &mut optim.lr_decay_rate, float)?;
        self.take("weight_decay", &mut optim.weight_decay, float)?;
        self.take("momentum", &mut optim.momentum, float)?;
        self.take("cosine", &mut optim.cosine, flag)?;
        self.take("warm", &mut optim.warm, flag)?;
        self.take("seed", &mut optim.seed, |v| v.as_u64())?;
        self.take("exp_name", &mut optim.exp_name, text)
    }
}

pub fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

pub fn some_text(v: &Value) -> Option<Option<String>> {
    v.as_str().map(|s| Some(s.to_string()))
}

pub fn float(v: &Value) -> Option<f64> {
    v.as_f64()
}

pub fn flag(v: &Value) -> Option<bool> {
    v.as_bool()
}

pub fn count(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The `opt` of an official checkpoint given to `--resume` (None for our own checkpoints).
pub fn of_resume(resume: Option<&std::path::Path>, script: &str) -> selfcon::Result<Option<Map<String, Value>>> {
    let Some(resume) = resume.filter(|r| r.is_file()) else { return Ok(None) };
    if !selfcon::checkpoint::is_torch_file(resume)? {
        return Ok(None);
    }
    let official = selfcon::checkpoint::OfficialCheckpoint::open(resume)?;
    let opt = official.options.ok_or_else(|| {
        Error::file(resume, format!("holds no options ('opt'): only a checkpoint of {script} can be resumed"))
    })?;
    Ok(Some(opt))
}
