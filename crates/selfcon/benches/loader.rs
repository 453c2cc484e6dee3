//! `cargo bench --bench loader`: images/s of the pre-training input pipeline on the bundled
//! Fashion-MNIST subset (10,000 images, 32×32 after padding) at 1 and 2 worker threads.

use std::time::Instant;

use selfcon::data::augment::TrainTransform;
use selfcon::data::{bundled_fashion_mnist, open_dataset, DataLoader, DatasetKind, LoaderConfig, Transform};

fn main() {
    let root = bundled_fashion_mnist().expect("bundled data/fashion-mnist-demo");
    let data = open_dataset(DatasetKind::FashionMnist, Some(&root)).expect("open the bundled subset");
    for (name, transform) in [
        ("pretrain", TrainTransform::pretrain(32, false)),
        ("randaug", TrainTransform::pretrain(32, false).with_randaugment()),
    ] {
        for threads in [1, 2] {
            let config = LoaderConfig {
                batch_size: 256,
                threads,
                prefetch: 2,
                shuffle: true,
                seed: 0,
                drop_last: false,
                background: false,
                shard: None,
                format: Default::default(),
                mean: data.mean,
                std: data.std,
            };
            let loader = DataLoader::new(
                data.train.clone(),
                Transform::Train { transform: transform.clone(), views: 1 },
                config,
            )
            .unwrap();
            let start = Instant::now();
            let images: usize = loader.epoch(0).map(|b| b.unwrap().indices.len()).sum();
            let s = start.elapsed().as_secs_f64();
            println!(
                "loader/{name}/{threads} thread(s): {images} images in {s:.3} s = {:.0} images/s",
                images as f64 / s
            );
        }
    }
}
