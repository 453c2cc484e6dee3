//! Helpers shared by the integration tests.

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
