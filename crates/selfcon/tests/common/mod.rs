//! Helpers shared by the integration tests.

pub mod device;
pub mod official;

/// The error of `r`, checked to be a user error rendered as one line.
#[allow(dead_code)]
pub fn user_error<T>(r: selfcon::Result<T>) -> String {
    let e = r.err().expect("should fail");
    assert!(e.is_user_error(), "{e}");
    let s = e.to_string();
    assert_eq!(s.lines().count(), 1, "{s}");
    s
}

/// Standard-normal f32 values on the CPU, drawn holding libtorch's generator lock with a seed
/// fixed by the shape, so that a test never shifts the draws of a seeded model build running in
/// another test thread of the same binary.
#[allow(dead_code)]
pub fn seeded_randn(shape: &[i64]) -> tch::Tensor {
    let seed = shape.iter().fold(17u64, |h, &d| h.wrapping_mul(31).wrapping_add(d as u64));
    selfcon::engine::seeded(seed, || tch::Tensor::randn(shape, (tch::Kind::Float, tch::Device::Cpu)))
}

/// Writes a small MNIST-layout data set into `dir`: the first `n_train` / `n_test` images of the
/// bundled Fashion-MNIST subset (raw IDX files).
#[allow(dead_code)]
pub fn tiny_fashion_mnist(dir: &std::path::Path, n_train: usize, n_test: usize) {
    let demo = selfcon::data::bundled_fashion_mnist().expect("bundled subset");
    for (split, n) in [("train", n_train), ("t10k", n_test)] {
        let images = selfcon::data::read_idx(&demo.join(format!("{split}-images-idx3-ubyte.gz")), 3).unwrap();
        let labels = selfcon::data::read_idx(&demo.join(format!("{split}-labels-idx1-ubyte.gz")), 1).unwrap();
        let write = |name: String, dims: &[u32], body: &[u8]| {
            let mut v = vec![0u8, 0, 8, dims.len() as u8];
            for d in dims {
                v.extend(d.to_be_bytes());
            }
            v.extend_from_slice(body);
            std::fs::write(dir.join(name), v).unwrap();
        };
        // A stride coprime with the set size spreads the picks over all classes.
        let pick: Vec<usize> = (0..n).map(|i| (i * 37) % labels.dims[0]).collect();
        let body: Vec<u8> = pick.iter().flat_map(|&i| images.data[i * 784..(i + 1) * 784].to_vec()).collect();
        write(format!("{split}-images-idx3-ubyte"), &[n as u32, 28, 28], &body);
        let lab: Vec<u8> = pick.iter().map(|&i| labels.data[i]).collect();
        write(format!("{split}-labels-idx1-ubyte"), &[n as u32], &lab);
    }
}

/// Runs the `selfcon` binary built for these tests.
#[allow(dead_code)]
pub fn selfcon(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_selfcon")).args(args).output().expect("run selfcon")
}

/// Runs `args`, expecting exit code 2 and one stderr line containing `want`.
#[allow(dead_code)]
pub fn assert_usage_error(args: &[&str], want: &str) {
    let o = selfcon(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.starts_with("selfcon: error: ") && err.contains(want), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
}

/// The device of the tests that can run on a GPU: `SELFCON_TEST_DEVICE` (`cpu`, `cuda`,
/// `cuda:N`; the CPU when unset). On a GPU the kernels are made deterministic, so that tests
/// comparing two runs bit for bit hold there too. `bench/gpu_check.sh` sets it.
#[allow(dead_code)]
pub fn test_device() -> tch::Device {
    static DEVICE: std::sync::OnceLock<tch::Device> = std::sync::OnceLock::new();
    *DEVICE.get_or_init(|| {
        let request = std::env::var("SELFCON_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
        let device = selfcon::engine::select_device(request.parse().expect("SELFCON_TEST_DEVICE: cpu, cuda or cuda:N"))
            .unwrap_or_else(|e| panic!("SELFCON_TEST_DEVICE={request}: {e}"));
        if device.is_cuda() {
            assert_eq!(
                std::env::var("CUBLAS_WORKSPACE_CONFIG").as_deref(),
                Ok(":4096:8"),
                "deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 set before the tests start"
            );
            selfcon::engine::set_deterministic(true);
        }
        device
    })
}

/// SelfCon-FC on the README's Fashion-MNIST ResNet, fp32, a cosine schedule that changes the
/// learning rate every step (a resume at the wrong step shows), a loss read every step.
#[allow(dead_code)]
pub fn tiny_pretrain_config(save_dir: &std::path::Path, epochs: usize, batch: usize) -> selfcon::train::PretrainConfig {
    use selfcon::data::DatasetKind;
    use selfcon::loss::Method;
    use selfcon::model::{ExitPositions, ModelConfig, SubNetworkSize};
    use selfcon::train::{OptimConfig, Precision, PretrainConfig};
    let mut model = ModelConfig::readme(DatasetKind::FashionMnist);
    model.exits = ExitPositions::new(vec![false, true, false]);
    model.sub_size = SubNetworkSize::Fc;
    PretrainConfig {
        model,
        method: Method::SelfCon,
        multiview: false,
        label: true,
        alpha: 0.0,
        temp: 0.1,
        optim: OptimConfig {
            epochs,
            batch_size: batch,
            learning_rate: 0.05,
            lr_decay_epochs: vec![700],
            lr_decay_rate: 0.1,
            weight_decay: 1e-4,
            momentum: 0.9,
            // The learning rate changes every step (cosine with warm-up per iteration): a resume
            // at the wrong step would show.
            cosine: true,
            warm: false,
            seed: 5,
            num_workers: 2,
            save_dir: save_dir.to_path_buf(),
            exp_name: String::new(),
            precision: Precision::Fp32,
            channels_last: false,
            flush_denormal: false,
            distributed: Default::default(),
            step_cosine_warmup: Some(2),
            lars_eta: None,
            save_every_steps: 0,
            tensorboard: false,
        },
        weakaug: false,
        randaug: false,
        full_decode: false,
        min_crop_scale: 0.2,
        print_freq: 1,
        save_freq: 0,
        dataset_name: "fashionmnist".into(),
        image_size: 32,
        knn: Default::default(),
    }
}

/// Every file under `p` (or `p` itself when it is a file).
#[allow(dead_code)]
pub fn walk_files(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    if p.is_dir() {
        std::fs::read_dir(p).unwrap().flat_map(|e| walk_files(&e.unwrap().path())).collect()
    } else {
        vec![p.to_path_buf()]
    }
}
