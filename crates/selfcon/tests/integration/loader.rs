//! The loader's contract: every sample once per epoch, in an order fixed by the seed and
//! independent of the thread count, last partial batch kept, views stacked [view 1; view 2].

use std::collections::BTreeSet;
use std::sync::Arc;

use tch::Kind;

use selfcon::data::augment::{EvalTransform, TrainTransform};
use selfcon::data::{
    open_dataset, DataLoader, Dataset, DatasetKind, Image, InMemoryImages, LoaderConfig, MemoryDataset, Transform,
};

fn tiny(n: usize) -> Arc<dyn Dataset> {
    let pixels = (0..n * 8 * 8 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let labels = (0..n as i64).map(|i| i % 3).collect();
    Arc::new(MemoryDataset {
        images: InMemoryImages { pixels, height: 8, width: 8, channels: 3, labels },
        num_classes: 3,
    })
}

pub(crate) fn config(batch_size: usize, threads: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        threads,
        prefetch: 2,
        shuffle: true,
        seed: 5,
        drop_last: false,
        background: false,
        shard: None,
        format: Default::default(),
        mean: [0.5; 3],
        std: [0.25; 3],
    }
}

fn train(views: usize) -> Transform {
    Transform::Train { transform: TrainTransform::pretrain(8, false), views }
}

#[test]
fn every_sample_once_per_epoch_and_last_batch_kept() {
    let loader = DataLoader::new(tiny(23), train(1), config(5, 3)).unwrap();
    assert_eq!(loader.len(), 5);
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    let sizes: Vec<_> = batches.iter().map(|b| b.indices.len()).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let seen: BTreeSet<_> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen.len(), 23);
    assert_eq!(batches[4].images.size(), [3, 3, 8, 8]);
    let labels: Vec<i64> = Vec::try_from(&batches[0].labels).unwrap();
    assert_eq!(labels, batches[0].indices.iter().map(|&i| i as i64 % 3).collect::<Vec<_>>());
    let mut no_tail = config(5, 2);
    no_tail.drop_last = true;
    assert_eq!(DataLoader::new(tiny(23), train(1), no_tail).unwrap().epoch(0).count(), 4);
}

#[test]
fn batches_do_not_depend_on_threads_and_epochs_reshuffle() {
    let run = |threads: usize, epoch: u64| {
        let loader = DataLoader::new(tiny(30), train(2), config(4, threads)).unwrap();
        loader.epoch(epoch).map(Result::unwrap).collect::<Vec<_>>()
    };
    let one = run(1, 0);
    let three = run(3, 0);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.indices, b.indices);
        assert!(a.images.equal(&b.images), "same seed, same pixels whatever the thread count");
    }
    let next = run(2, 1);
    assert_ne!(one[0].indices, next[0].indices, "each epoch has its own order");
}

#[test]
fn an_epoch_from_batch_k_is_the_tail_of_the_whole_epoch() {
    let loader = DataLoader::new(tiny(30), train(2), config(4, 2)).unwrap();
    let whole: Vec<_> = loader.epoch(3).map(Result::unwrap).collect();
    for first in [0, 1, 5, 7, 8, 20] {
        let tail: Vec<_> = loader.epoch_from(3, first).map(Result::unwrap).collect();
        assert_eq!(tail.len(), whole.len().saturating_sub(first), "from {first}");
        for (a, b) in whole.iter().skip(first).zip(&tail) {
            assert_eq!(a.indices, b.indices);
            assert!(a.images.equal(&b.images), "same augmentation when resumed mid-epoch");
        }
    }
}

#[test]
fn reused_batch_buffers_never_change_a_batch_someone_still_holds() {
    // One loader over many epochs recycles its batch buffers (within and across epochs); a fresh
    // loader per epoch recycles only within its one epoch.
    let recycling = DataLoader::new(tiny(30), train(2), config(4, 3)).unwrap().keeping_buffers();
    let mut held = Vec::new();
    for epoch in 0..6 {
        let fresh: Vec<_> = DataLoader::new(tiny(30), train(2), config(4, 3)).unwrap().epoch(epoch).collect();
        for (i, (batch, expected)) in recycling.epoch(epoch).zip(fresh).enumerate() {
            let (batch, expected) = (batch.unwrap(), expected.unwrap());
            assert!(batch.images.equal(&expected.images), "epoch {epoch} batch {i}");
            // Keep some batches whole, a view of others, drop the rest.
            match i % 3 {
                0 => held.push((batch.images.copy(), batch.images)),
                1 => held.push((batch.images.narrow(0, 1, 2).copy(), batch.images.narrow(0, 1, 2))),
                _ => drop(batch),
            }
        }
    }
    for (n, (snapshot, images)) in held.iter().enumerate() {
        assert!(snapshot.equal(images), "held batch {n} was overwritten");
    }
}

#[test]
fn multiview_rows_are_view_major_and_views_differ() {
    let loader = DataLoader::new(tiny(6), train(2), config(3, 2)).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.images.size(), [6, 3, 8, 8]);
    let first = batch.images.narrow(0, 0, 3);
    let second = batch.images.narrow(0, 3, 3);
    assert!(!first.equal(&second));
}

#[test]
fn eval_transform_is_deterministic_and_normalised() {
    let mut c = config(4, 2);
    c.shuffle = false;
    let loader = DataLoader::new(tiny(4), Transform::Eval(EvalTransform::Identity), c).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.indices, [0, 1, 2, 3]);
    // Pixel (0,0) channel 0 of image 0 is 0 → (0 − 0.5) / 0.25 = −2.
    assert_eq!(batch.images.double_value(&[0, 0, 0, 0]), -2.0);
    assert_eq!(batch.images.kind(), Kind::Float);
}

struct Broken;

impl Dataset for Broken {
    fn len(&self) -> usize {
        10
    }
    fn num_classes(&self) -> i64 {
        2
    }
    fn label(&self, _: usize) -> i64 {
        0
    }
    fn image(&self, index: usize) -> selfcon::Result<Image> {
        if index == 7 {
            Err(selfcon::Error::file(format!("img_{index}.png"), "corrupt image"))
        } else {
            Ok(Image::filled(8, 8, 9))
        }
    }
}

#[test]
fn a_failing_image_ends_the_epoch_with_its_error() {
    let mut c = config(2, 2);
    c.shuffle = false;
    let loader = DataLoader::new(Arc::new(Broken), train(1), c).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    let err = results.iter().find_map(|r| r.as_ref().err()).expect("an error").to_string();
    assert_eq!(err, "img_7.png: corrupt image");
    assert!(results.last().unwrap().is_err(), "nothing after the error");
}

#[test]
fn bad_configuration_is_refused() {
    assert!(DataLoader::new(tiny(3), train(1), config(0, 1)).err().unwrap().to_string().starts_with("--batch_size"));
    assert!(DataLoader::new(tiny(3), train(1), config(2, 0)).err().unwrap().to_string().starts_with("--num_workers"));
}

#[test]
fn bundled_data_through_the_loader() {
    let data = open_dataset(DatasetKind::FashionMnist, Some(selfcon::data::bundled_fashion_mnist().unwrap().as_path()))
        .unwrap();
    assert_eq!((data.train.len(), data.test.as_ref().unwrap().len()), (10_000, 2_000));
    assert!((data.mean[0] - 0.22).abs() < 0.02 && data.std[0] > 0.25, "{:?} {:?}", data.mean, data.std);
    let mut c = config(64, 2);
    c.mean = data.mean;
    c.std = data.std;
    let loader = DataLoader::new(
        data.train.clone(),
        Transform::Train { transform: TrainTransform::pretrain(32, false), views: 1 },
        c,
    )
    .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.images.size(), [64, 3, 32, 32]);
    let mean = batch.images.mean(Kind::Float).double_value(&[]);
    assert!(mean.abs() < 0.5, "normalised batch mean {mean}");
}

#[test]
fn every_batch_format_gives_the_model_the_same_numbers() {
    use selfcon::data::BatchFormat;
    // Two views of a training transform and an evaluation transform, two threads.
    for transform in [train(2), Transform::Eval(EvalTransform::Identity)] {
        let batches = |format: BatchFormat| {
            let mut c = config(5, 2);
            c.format = format;
            DataLoader::new(tiny(13), transform.clone(), c).unwrap().epoch(3).map(Result::unwrap).collect::<Vec<_>>()
        };
        let nchw = batches(BatchFormat::default());
        let nhwc = batches(BatchFormat { channels_last: true, ..BatchFormat::default() });
        let raw = batches(BatchFormat { raw_u8: true, ..BatchFormat::default() });
        assert_eq!(nchw.len(), 3);
        for ((a, b), c) in nchw.iter().zip(&nhwc).zip(&raw) {
            assert_eq!(a.images.kind(), Kind::Float);
            assert!(a.normalization.is_none() && b.normalization.is_none());
            let n = a.images.size()[0];
            assert_eq!(a.images.stride(), [3 * 64, 64, 8, 1], "NCHW memory");
            assert_eq!(b.images.size(), a.images.size());
            assert_eq!(b.images.stride(), [3 * 64, 1, 24, 3], "NHWC memory");
            assert_eq!(c.images.kind(), Kind::Uint8);
            assert_eq!(c.images.stride(), [3 * 64, 1, 24, 3], "u8 pixels in the images' own HWC order");
            let on_device = c.images_on(tch::Device::Cpu).unwrap();
            assert_eq!(on_device.kind(), Kind::Float);
            assert_eq!(on_device.stride(), [3 * 64, 1, 24, 3], "normalised where it is, still channels-last");
            // Bit for bit: the same operations in the same order, wherever they run.
            assert!(a.images.equal(&b.images), "NHWC f32 differs from NCHW");
            assert!(a.images.equal(&on_device), "u8 normalised differs from the host's normalisation");
            assert_eq!(a.indices, c.indices);
            assert_eq!(n as usize, a.indices.len() * if matches!(transform, Transform::Train { .. }) { 2 } else { 1 });
        }
    }
}
