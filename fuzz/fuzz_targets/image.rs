//! Image decoding (every format ImageFolder accepts) and the augmentations that follow it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfcon::data::augment::{sample_rng, EvalTransform, TrainTransform};
use selfcon::data::decode_image_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = decode_image_bytes(data) {
        let mut rng = sample_rng(0, 1, 2, 0);
        let _ = TrainTransform::pretrain(16, false).with_randaugment().apply(&image, &mut rng);
        let _ = TrainTransform::crop_flip(16).apply(&image, &mut rng);
        let _ = EvalTransform::for_folder(16).apply(&image);
    }
});
