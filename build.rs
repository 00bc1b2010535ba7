//! Lists the web console's files (`assets/console/`) for `src/console.rs`, which compiles each
//! one into the binary: a file added to the directory is served without touching the code.

use std::fmt::Write;

fn main() {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("assets/console");
    // The directory's own change (a file added or removed) reruns this script; a file's content
    // is tracked by `include_bytes!`.
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
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?}) as &[u8]),",
            path.display()
        )
        .expect("writing to a String");
    }
    out.push(']');
    let target = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets it"))
        .join("console_files.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
