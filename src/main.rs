use std::process::ExitCode;

/// glibc's allocator was the largest single cost under load (profiled with perf): many small
/// per-request allocations across tokio worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cloud_optimizer::cli::main()
}
