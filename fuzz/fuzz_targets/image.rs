//! Image decoding (every format ImageFolder accepts), the crop-aware decode (libjpeg's reduced
//! and region decoding of JPEGs), and the augmentations that follow them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::data::augment::{sample_rng, EvalTransform, TrainTransform};
use selfcon::data::{decode_for_crops, decode_image_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = decode_image_bytes(data) {
        let mut rng = sample_rng(0, 1, 2, 0);
        let _ = TrainTransform::pretrain(16, false).with_randaugment().apply(&image, &mut rng);
        let _ = TrainTransform::crop_flip(16).apply(&image, &mut rng);
        let _ = EvalTransform::for_folder(16).apply(&image);
    }
    // Output sizes small enough that most crops ask for 1/2, 1/4 or 1/8 of a region.
    for size in [1usize, 3, 8] {
        let transform = TrainTransform::pretrain(size, false);
        let mut rng = sample_rng(0, 1, 2, size as u64);
        let mut crop = None;
        let decoded = decode_for_crops(data, &mut |w, h| {
            let b = transform.crop_box(w, h, &mut rng);
            crop = Some(b);
            transform.decode_request(&[b])
        });
        if let (Ok(source), Some(b)) = (decoded, crop) {
            let out = transform.finish_from(&source, b, &mut rng);
            assert_eq!((out.width, out.height), (size, size));
        }
    }
});
