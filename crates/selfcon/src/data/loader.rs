//! The data loader: worker threads decode and augment whole batches in parallel and hand them
//! over in order, a bounded number of batches ahead.
//!
//! Worker `w` builds batches `w, w + T, w + 2T, …` into its own bounded channel and the consumer
//! reads the channels round-robin, so batches arrive in order without a reordering buffer and at
//! most `T × prefetch` batches exist at once. Every random choice comes from the epoch's seed
//! (shuffle) and a per-sample RNG (augmentation), so the batches do not depend on `T`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use tch::{Kind, Tensor};

use super::augment::{sample_rng, to_normalized_chw, to_normalized_hwc, EvalTransform, TrainTransform};
use super::batch_pool::{BatchPool, KeptPools};
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

/// The form of the image batches a loader hands over. Every form is the same `[N, 3, H, W]`
/// (NCHW) tensor to its user and gives the model the same numbers; they differ in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchFormat {
    /// u8 pixels, not normalised: a quarter of the bytes to copy to an accelerator, which
    /// normalises them itself ([`Batch::images_on`]). Stored channels-last (the images' own
    /// HWC order: no transposition anywhere).
    pub raw_u8: bool,
    /// Normalised f32 stored channels-last (NHWC memory) for a channels-last model, instead of
    /// NCHW: no conversion copy on the compute thread. (u8 batches are channels-last anyway.)
    pub channels_last: bool,
    /// Batches in page-locked host memory (CUDA runs: the copy to the GPU is asynchronous and
    /// needs no staging copy). The buffers come from libtorch's caching host allocator, which
    /// hands a block out again only after the copy that read it has finished.
    pub pinned: bool,
}

impl BatchFormat {
    /// What suits a model on `device`: on CUDA u8 pixels in page-locked memory, normalised on the
    /// GPU; on the CPU normalised f32 (by the loader's threads, off the compute threads), in the
    /// model's memory format.
    pub fn for_device(device: tch::Device, channels_last: bool) -> Self {
        let cuda = matches!(device, tch::Device::Cuda(_));
        BatchFormat { raw_u8: cuda, channels_last, pinned: cuda }
    }
}

/// `Normalize(mean, std)` of u8 pixels, applied where the batch is used (on the accelerator).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// `(x / 255 − mean) / std` in f32 on `x`'s device, in `x`'s memory format: the operations
    /// of the host's `ToTensor` + `Normalize` in the same order (each a true division by a
    /// tensor: a scalar divisor may become a multiplication by its reciprocal on CUDA).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        // The constants are filled in on the device (a copy from pageable host memory would make
        // the host wait for the device).
        let options = (Kind::Float, x.device());
        let filled = |v: f32| Tensor::full([1], f64::from(v), options);
        let per_channel = |v: [f32; 3]| Tensor::cat(&v.map(filled), 0).view([1, 3, 1, 1]);
        (x.to_kind(Kind::Float) / filled(255.0) - per_channel(self.mean)) / per_channel(self.std)
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
    /// How batches leave the loader (layout, dtype, memory).
    pub format: BatchFormat,
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
    /// `[N, 3, H, W]`: normalised f32, or u8 pixels when `normalization` is set.
    pub images: Tensor,
    /// Set for u8 batches ([`BatchFormat::raw_u8`]): what turns them into model input.
    pub normalization: Option<Normalization>,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

impl Batch {
    /// The model input on `device`: copied there (asynchronously from page-locked memory, see
    /// [`crate::engine::to_device`]), then, for u8 batches, normalised there.
    pub fn images_on(&self, device: tch::Device) -> Result<Tensor> {
        Ok(self.model_pixels(crate::engine::to_device(&self.images, device)?))
    }

    /// `images` (this batch's, already moved) as model input: normalised when they are u8.
    pub fn model_pixels(&self, images: Tensor) -> Tensor {
        match &self.normalization {
            Some(n) => n.apply(&images),
            None => images,
        }
    }
}

pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    transform: Arc<Transform>,
    config: LoaderConfig,
    /// The workers' batch buffers, handed from one epoch's workers to the next when set
    /// ([`DataLoader::keeping_buffers`]); otherwise each epoch's are freed with its workers.
    pools: Option<KeptPools>,
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
        Ok(DataLoader { dataset, transform: Arc::new(transform), config, pools: None })
    }

    /// For a loader whose epochs follow one another (training): its workers' CPU batch buffers
    /// are handed from one epoch to the next, like persistent workers, instead of being freed —
    /// at most `threads × (prefetch + 3)` batches, what an epoch has in flight. (Evaluation
    /// loaders, used once in a while, free theirs after each pass.)
    pub fn keeping_buffers(mut self) -> Self {
        self.pools = Some(Default::default());
        self
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
                format: self.config.format,
            };
            let (batches, stop) = (batches.clone(), stop.clone());
            let background = self.config.background;
            let pools = self.pools.clone();
            // The batches in this worker's queue, the one it writes, and the two its consumer may
            // hold (the one in use and the next, received before the first is dropped).
            let capacity = self.config.prefetch.max(1) + 3;
            workers.push(std::thread::spawn(move || {
                if background {
                    // Linux: a thread's nice value is its own; 0 = the calling thread.
                    // SAFETY: plain syscall on the calling thread; failure only keeps priority.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                }
                let mut pool = pools.as_ref().and_then(KeptPools::take).unwrap_or_else(|| BatchPool::new(capacity));
                for b in (w..batches.len()).step_by(threads) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = job.build(&batches[b], &mut pool);
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        break;
                    }
                }
                if let Some(pools) = pools {
                    pools.give_back(pool, threads);
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
    format: BatchFormat,
}

impl BatchJob {
    fn build(&self, indices: &[usize], pool: &mut BatchPool) -> Result<Batch> {
        let views = self.transform.views();
        let n = indices.len();
        // Rows [view 1 of every image; view 2; …].
        let mut outs: Vec<Option<Image>> = (0..views * n).map(|_| None).collect();
        for (row, &index) in indices.iter().enumerate() {
            let rng = |view: usize| sample_rng(self.seed, self.epoch, index as u64, view as u64);
            match self.transform.as_ref() {
                Transform::Train { transform, .. } if transform.crops_before_decoding() => {
                    // Every view's crop is drawn from the header's size first, so the decoder may
                    // produce only what the crops need (the smallest reduction any view accepts).
                    let mut rngs: Vec<_> = (0..views).map(rng).collect();
                    let mut boxes = Vec::with_capacity(views);
                    let source = self.dataset.image_for_crops(index, &mut |width, height| {
                        boxes = rngs.iter_mut().map(|r| transform.crop_box(width, height, r)).collect();
                        transform.decode_request(&boxes)
                    })?;
                    for (view, (b, r)) in boxes.into_iter().zip(&mut rngs).enumerate() {
                        outs[view * n + row] = Some(transform.finish_from(&source, b, r));
                    }
                }
                Transform::Train { transform, .. } => {
                    let image = self.dataset.image(index)?;
                    for view in 0..views {
                        outs[view * n + row] = Some(transform.apply(&image, &mut rng(view)));
                    }
                }
                Transform::Eval(t) => outs[row] = Some(t.apply(&self.dataset.image(index)?)),
            }
        }
        let outs: Vec<Image> = outs.into_iter().map(|o| o.expect("every slot filled")).collect();
        let (h, w) = self.transform.output_size(&outs[0]);
        if let Some((slot, out)) = outs.iter().enumerate().find(|(_, o)| (o.height, o.width) != (h, w)) {
            return Err(Error::input(format!(
                "image {} is {}×{} after the transform but the batch is {w}×{h} (use a resizing transform)",
                indices[slot % n],
                out.width,
                out.height
            )));
        }
        let images = self.images_tensor(&outs, h as i64, w as i64, pool)?;
        let labels: Vec<i64> = indices.iter().map(|&i| self.dataset.label(i)).collect();
        Ok(Batch {
            images,
            normalization: self.format.raw_u8.then_some(Normalization { mean: self.mean, std: self.std }),
            labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
            indices: indices.to_vec(),
        })
    }

    /// The batch tensor, written in place (no staging buffer): u8 HWC pixels, or normalised f32
    /// in NHWC or NCHW memory; always seen as `[N, 3, H, W]`.
    fn images_tensor(&self, outs: &[Image], h: i64, w: i64, pool: &mut BatchPool) -> Result<Tensor> {
        let format = self.format;
        let channels_last = format.raw_u8 || format.channels_last;
        let n = outs.len() as i64;
        let shape = if channels_last { [n, h, w, 3] } else { [n, 3, h, w] };
        let kind = if format.raw_u8 { Kind::Uint8 } else { Kind::Float };
        let tensor = if format.pinned {
            torch_shim::empty_pinned(&shape, kind)
                .map_err(|e| Error::input(format!("allocating a batch in page-locked memory: {e}")))?
        } else {
            pool.take(&shape, kind)
        };
        let plane = (3 * h * w) as usize;
        let total = outs.len() * plane;
        if format.raw_u8 {
            // SAFETY: a contiguous u8 tensor of `total` elements that nothing else holds (new, or
            // a pooled buffer every earlier user has dropped), written only here, before anything
            // else can see it.
            let pixels = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, total) };
            for (dst, out) in pixels.chunks_exact_mut(plane).zip(outs) {
                dst.copy_from_slice(&out.data);
            }
        } else {
            // SAFETY: as above, f32.
            let pixels = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut f32, total) };
            for (dst, out) in pixels.chunks_exact_mut(plane).zip(outs) {
                if channels_last {
                    to_normalized_hwc(out, self.mean, self.std, dst);
                } else {
                    to_normalized_chw(out, self.mean, self.std, dst);
                }
            }
        }
        Ok(if channels_last { tensor.permute([0, 3, 1, 2]) } else { tensor })
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

/// What waiting for a batch gave: the iterator's next item, or a stop asked for meanwhile.
pub enum Waited {
    Ready(Option<Result<Batch>>),
    Stopped(i32),
}

impl EpochBatches {
    /// The next batch, watching `stop` once it has been awaited for [`STOP_AFTER_WAIT`]: a batch
    /// that never comes (a file system that hangs) must not keep a run from stopping, while a
    /// stop during an ordinary wait is left to the step that follows (as without a wait). After
    /// `Stopped` the batches are abandoned (drop them).
    pub fn next_or_stop(&mut self, stop: &mut dyn FnMut() -> Option<i32>) -> Waited {
        if self.next >= self.total {
            return Waited::Ready(None);
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        let waiting = std::time::Instant::now();
        loop {
            match rx.recv_timeout(STOP_POLL) {
                Ok(item) => {
                    // Received: account for it as `next` does.
                    self.next += 1;
                    return Waited::Ready(Some(match item {
                        Ok(batch) => Ok(batch),
                        Err(e) => {
                            self.next = self.total;
                            Err(e)
                        }
                    }));
                }
                Err(RecvTimeoutError::Timeout) if waiting.elapsed() >= STOP_AFTER_WAIT => {
                    if let Some(signal) = stop() {
                        return Waited::Stopped(signal);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.next = self.total;
                    return Waited::Ready(Some(Err(Error::input("a data loader worker stopped unexpectedly"))));
                }
            }
        }
    }
}

/// How often a long wait for a batch looks for a stop.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a batch is awaited before a stop is honoured without it.
pub const STOP_AFTER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long dropping the batches waits for a worker to finish its batch; one stuck in a read
/// that never returns is left behind (it ends with the process) rather than hanging the run.
const WORKER_JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnecting the channels unblocks workers waiting to send.
        self.receivers.clear();
        let deadline = std::time::Instant::now() + WORKER_JOIN_WAIT;
        for w in self.workers.drain(..) {
            while !w.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}
