//! Records where libtorch was found as the binaries' RUNPATH, so `cargo run`/`cargo test` and the
//! built binary start without any LD_LIBRARY_PATH on this machine. RUNPATH (not RPATH) is searched
//! after LD_LIBRARY_PATH, so on another machine LD_LIBRARY_PATH pointing at any libtorch 2.11 wins.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the checkout's `.libtorch` link so the binary keeps working if the checkout moves.
        let dir = std::fs::canonicalize(&dir).map(|p| p.display().to_string()).unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{dir}");
    }
}
