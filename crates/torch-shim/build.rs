//! Compiles `src/shim.cpp` against the headers of the libtorch torch-sys found, with the same
//! flags torch-sys uses for its own wrapper (C++17, the CXX11 ABI of the PyPI wheels), and, when
//! the CUDA/NCCL headers are installed (`SELFCON_NCCL=1 ./scripts/setup.sh`), the NCCL shim object
//! `libselfcon_nccl.so` (`src/nccl.cpp`), whose path it passes to the crate as
//! `SELFCON_NCCL_SHIM_BUILT`.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/distributed.cpp");
    println!("cargo:rerun-if-changed=src/jit.cpp");
    println!("cargo:rerun-if-changed=src/shim_error.h");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-changed=src/nccl.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=SELFCON_CUDA_INCLUDE");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports the libtorch library folder (links = \"tch\")"),
    );
    let root = lib.parent().expect("libtorch lib folder has a parent").to_path_buf();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .file("src/distributed.cpp")
        .file("src/jit.cpp")
        .include(root.join("include"))
        // Declarations for the Gloo names libtorch's ProcessGroupGloo.hpp mentions (include/gloo/README.md).
        .include("include")
        .define("USE_C10D_GLOO", None)
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("selfcon_torch_shim");
    build_nccl_object(&root, &abi);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
    // This crate's own tests start without LD_LIBRARY_PATH (selfcon's build.rs does the same).
    let dir = std::fs::canonicalize(&lib).unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{}", dir.display());
}

/// `libselfcon_nccl.so` in OUT_DIR when `SELFCON_CUDA_INCLUDE` holds nccl.h; without the headers
/// nothing is built and the crate reports NCCL as not built. The object leaves libtorch's symbols
/// undefined: libtorch_cuda.so, loaded at run time with RTLD_GLOBAL, provides them.
fn build_nccl_object(libtorch: &Path, abi: &str) {
    let include = std::env::var_os("SELFCON_CUDA_INCLUDE").map(PathBuf::from);
    let Some(include) = include.filter(|dir| dir.join("nccl.h").is_file()) else {
        println!("cargo:rustc-env=SELFCON_NCCL_SHIM_BUILT=");
        return;
    };
    println!("cargo:rerun-if-changed=include/cuda-libs");
    println!("cargo:rerun-if-changed={}", include.join("nccl.h").display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libselfcon_nccl.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut command: Command = compiler.to_command();
    command
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-w"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .args(["-DGLOG_USE_GLOG_EXPORT", "-DUSE_C10D_NCCL"])
        .arg("-I")
        .arg(libtorch.join("include"))
        .arg("-I")
        .arg(libtorch.join("include/torch/csrc/api/include"))
        // The real CUDA runtime and NCCL headers first, then declarations for the math libraries.
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg("include/cuda-libs")
        .arg("-I")
        .arg("src")
        .arg("src/nccl.cpp")
        .arg("-o")
        .arg(&out);
    let status = command.status().unwrap_or_else(|e| panic!("running the C++ compiler for src/nccl.cpp: {e}"));
    assert!(status.success(), "compiling the NCCL shim object (src/nccl.cpp against {}) failed", include.display());
    println!("cargo:rustc-env=SELFCON_NCCL_SHIM_BUILT={}", out.display());
}
