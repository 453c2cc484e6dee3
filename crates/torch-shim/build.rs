//! Compiles `src/shim.cpp` against the headers of the libtorch torch-sys found, with the same
//! flags torch-sys uses for its own wrapper (C++17, the CXX11 ABI of the PyPI wheels).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/distributed.cpp");
    println!("cargo:rerun-if-changed=src/jit.cpp");
    println!("cargo:rerun-if-changed=src/shim_error.h");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
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
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
    // This crate's own tests start without LD_LIBRARY_PATH (selfcon's build.rs does the same).
    let dir = std::fs::canonicalize(&lib).unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{}", dir.display());
}
