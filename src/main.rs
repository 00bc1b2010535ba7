use std::process::ExitCode;

fn main() -> ExitCode {
    cloud_optimizer::cli::main()
}
