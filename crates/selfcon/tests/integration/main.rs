//! The integration tests, one module per subject, in one test binary: each binary links the whole
//! library and libtorch, so one binary instead of one per file saves most of the suite's build time.
//!
//! `cargo test` runs the fast set: every subject at a small scale. Tests marked
//! `#[ignore = "heavy (why): ..."]` (multi-rank kill/stop/soak, step-resume soaks, the whole parameter
//! grid, ...) are CI's extended set: `cargo test --workspace -- --include-ignored` runs everything,
//! `-- --ignored` only them (docs/development.md). Two suites keep binaries of their own:
//! `golden` (one test per golden file, its own harness) and `device_distributed` (joins a
//! distributed run through the environment: once per process).

#[path = "../common/mod.rs"]
mod common;

/// One compute thread per test, unless OMP_NUM_THREADS says otherwise. The harness runs a test per
/// core in parallel, and each would otherwise start an OpenMP team as wide as the machine: on 2
/// cores, 2 tests × 2 spinning OpenMP threads took twice the time (109 s against 57 s). libtorch
/// reads the setting as each thread starts its first parallel work; CLI runs a test starts inherit
/// the variable. Before main, while one thread runs, so the environment is written safely.
#[ctor::ctor(unsafe)]
fn one_compute_thread_per_test() {
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        std::env::set_var("OMP_NUM_THREADS", "1");
        tch::set_num_threads(1);
    }
}

mod architectures;
mod augment;
mod bench;
mod ce;
mod cli;
mod datasets;
mod demo;
mod device;
mod distributed;
mod download;
mod folders;
mod fuzz_regressions;
mod hostile_files;
mod interop;
mod interop_ce;
mod linear;
mod loader;
mod model;
mod packed;
mod param_grid;
mod pretrain;
mod report;
mod step_resume;
mod tensorboard;
