//! The data loader: worker threads decode and augment whole batches in parallel and hand them
//! over in order, a bounded number of batches ahead.
//!
//! Worker `w` builds batches `w, w + T, w + 2T, …` into its own bounded channel and the consumer
//! reads the channels round-robin, so batches arrive in order without a reordering buffer and at
//! most `T × prefetch` batches exist at once. Every random choice comes from the epoch's seed
//! (shuffle) and a per-sample RNG (augmentation), so the batches do not depend on `T`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use tch::{Kind, Tensor};

use super::augment::{sample_rng, to_normalized_chw, EvalTransform, TrainTransform};
use super::dataset::Dataset;
use super::image::Image;
use super::shard::Shard;
use crate::error::{Error, Result};

/// What turns a decoded image into a training or evaluation input.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Random augmentation; `views` independent views per image (2 for `--multiview`).
    Train { transform: TrainTransform, views: usize },
    /// Deterministic evaluation transform, one view.
    Eval(EvalTransform),
}

impl Transform {
    fn views(&self) -> usize {
        match self {
            Transform::Train { views, .. } => *views,
            Transform::Eval(_) => 1,
        }
    }

    /// Output side length for an input of `width × height` (square crops for training).
    fn output_size(&self, first: &Image) -> (usize, usize) {
        match self {
            Transform::Train { transform, .. } => (transform.size, transform.size),
            Transform::Eval(EvalTransform::ResizeCenterCrop { crop, .. }) => (*crop, *crop),
            Transform::Eval(EvalTransform::Identity) => (first.height, first.width),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Worker threads (`--num_workers`).
    pub threads: usize,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Keep the last partial batch (the official loaders do).
    pub drop_last: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Run the worker threads at the lowest CPU priority (nice 19). For CPU training: the workers
    /// then use the cycles the compute threads leave, instead of preempting libtorch's OpenMP
    /// threads in the middle of a parallel region (which stalls the whole team).
    pub background: bool,
    /// This rank's share of each epoch in a distributed run (`None`: all samples).
    pub shard: Option<Shard>,
}

/// See [`DataLoader::order_key`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderKey {
    pub samples: usize,
    pub batch_size: usize,
    /// `None` without shuffling.
    pub seed: Option<u64>,
    pub drop_last: bool,
}

impl std::fmt::Display for OrderKey {
    /// "36 samples in batches of 12, shuffled with seed 5"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} samples in batches of {}", self.samples, self.batch_size)?;
        match self.seed {
            Some(seed) => write!(f, ", shuffled with seed {seed}"),
            None => write!(f, ", not shuffled"),
        }
    }
}

/// One batch: `images` is `[views·B, 3, H, W]` with rows `[view 1 of every image; view 2; …]`.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    transform: Arc<Transform>,
    config: LoaderConfig,
}

impl DataLoader {
    pub fn new(dataset: Arc<dyn Dataset>, transform: Transform, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::option("batch_size", "must be at least 1"));
        }
        if config.threads == 0 {
            return Err(Error::option("num_workers", "must be at least 1"));
        }
        if dataset.is_empty() {
            return Err(Error::input("the dataset is empty"));
        }
        Ok(DataLoader { dataset, transform: Arc::new(transform), config })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// What decides the batches of an epoch besides its number: samples, global batch size
    /// (world size × this rank's), shuffle seed.
    pub fn order_key(&self) -> OrderKey {
        let world = self.config.shard.as_ref().map_or(1, |s| s.world_size);
        OrderKey {
            samples: self.dataset.len(),
            batch_size: self.config.batch_size * world,
            seed: if self.config.shuffle { Some(self.config.seed) } else { None },
            drop_last: self.config.drop_last,
        }
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.dataset.len();
        if let Some(shard) = &self.config.shard {
            return shard.batch_count(n, self.config.batch_size, self.config.drop_last);
        }
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample order of `epoch`: a seeded permutation (or the identity without shuffling).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut sample_rng(self.config.seed, epoch, u64::MAX, u64::MAX));
        }
        order
    }

    /// Starts the workers for `epoch` and returns the batches in order.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on: the same batches as [`DataLoader::epoch`]
    /// yields after its first `first` (what a run resumed mid-epoch continues with).
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochBatches {
        let order = self.order(epoch);
        let mut all = match &self.config.shard {
            Some(shard) => shard.batches(&order, self.config.batch_size, self.config.drop_last),
            None => order
                .chunks(self.config.batch_size)
                .filter(|c| !self.config.drop_last || c.len() == self.config.batch_size)
                .map(<[usize]>::to_vec)
                .collect(),
        };
        all.drain(..first.min(all.len()));
        let batches: Arc<Vec<Vec<usize>>> = Arc::new(all);
        let threads = self.config.threads.min(batches.len()).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        for w in 0..threads {
            let (tx, rx) = sync_channel(self.config.prefetch.max(1));
            receivers.push(rx);
            let job = BatchJob {
                dataset: self.dataset.clone(),
                transform: self.transform.clone(),
                mean: self.config.mean,
                std: self.config.std,
                seed: self.config.seed,
                epoch,
            };
            let (batches, stop) = (batches.clone(), stop.clone());
            let background = self.config.background;
            workers.push(std::thread::spawn(move || {
                if background {
                    // Linux: a thread's nice value is its own; 0 = the calling thread.
                    // SAFETY: plain syscall on the calling thread; failure only keeps priority.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                }
                for b in (w..batches.len()).step_by(threads) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = job.build(&batches[b]);
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        EpochBatches { receivers, workers, stop, next: 0, total: batches.len() }
    }
}

struct BatchJob {
    dataset: Arc<dyn Dataset>,
    transform: Arc<Transform>,
    mean: [f32; 3],
    std: [f32; 3],
    seed: u64,
    epoch: u64,
}

impl BatchJob {
    fn build(&self, indices: &[usize]) -> Result<Batch> {
        let views = self.transform.views();
        let n = indices.len();
        let mut buffer: Vec<f32> = Vec::new();
        let mut plane = 0;
        let mut shape = (0, 0);
        for (row, &index) in indices.iter().enumerate() {
            let image = self.dataset.image(index)?;
            for view in 0..views {
                let out = match self.transform.as_ref() {
                    Transform::Train { transform, .. } => {
                        transform.apply(&image, &mut sample_rng(self.seed, self.epoch, index as u64, view as u64))
                    }
                    Transform::Eval(t) => t.apply(&image),
                };
                if buffer.is_empty() {
                    shape = self.transform.output_size(&out);
                    plane = 3 * shape.0 * shape.1;
                    buffer = vec![0f32; views * n * plane];
                }
                if (out.height, out.width) != shape {
                    return Err(Error::input(format!(
                        "image {index} is {}×{} after the transform but the batch is {}×{} (use a resizing transform)",
                        out.width, out.height, shape.1, shape.0
                    )));
                }
                let slot = view * n + row;
                to_normalized_chw(&out, self.mean, self.std, &mut buffer[slot * plane..(slot + 1) * plane]);
            }
        }
        let images = Tensor::from_slice(&buffer).view([(views * n) as i64, 3, shape.0 as i64, shape.1 as i64]);
        let labels: Vec<i64> = indices.iter().map(|&i| self.dataset.label(i)).collect();
        Ok(Batch { images, labels: Tensor::from_slice(&labels).to_kind(Kind::Int64), indices: indices.to_vec() })
    }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct EpochBatches {
    receivers: Vec<Receiver<Result<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    total: usize,
}

impl EpochBatches {
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        match rx.recv() {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(e)) => {
                self.next = self.total;
                Some(Err(e))
            }
            Err(_) => {
                self.next = self.total;
                Some(Err(Error::input("a data loader worker stopped unexpectedly")))
            }
        }
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnecting the channels unblocks workers waiting to send.
        self.receivers.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
