//! Lists the web console's files (`assets/console/`) for `src/console.rs`, which compiles each
//! one into the binary, as it is and gzip-compressed: a file added to the directory is served
//! without touching the code.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("assets/console");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    // The directory's own change (a file added or removed) reruns this script; a file's content
    // is tracked by `include_bytes!`, and its compressed copy is made again with it.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("assets/console exists")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.into_string().expect("console file names are UTF-8"))
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut out = String::from("&[\n");
    for name in names {
        let path = dir.join(&name);
        println!("cargo:rerun-if-changed={}", path.display());
        // Compressed once here rather than on every request: serving a file then costs no CPU
        // in any build, and the best compression level costs nothing at run time.
        let body = std::fs::read(&path).expect("a console file is readable");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body).expect("in memory");
        let gz_path = out_dir.join(format!("console-{name}.gz"));
        std::fs::write(&gz_path, gz.finish().expect("in memory")).expect("OUT_DIR is writable");
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?}) as &[u8], include_bytes!({:?}) as &[u8]),",
            path.display(),
            gz_path.display()
        )
        .expect("writing to a String");
    }
    out.push(']');
    std::fs::write(out_dir.join("console_files.rs"), out).expect("OUT_DIR is writable");
}
