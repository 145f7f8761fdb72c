//! `cargo xtask …`: the project's automation.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("image") => {
            let t = Instant::now();
            match xtask::image::ensure_image_info() {
                Ok(image) => {
                    eprintln!("image {} ({}) in {:.1?}", image.tag, if image.cached { "cached" } else { "built" }, t.elapsed());
                    println!("{}", image.tag);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask image: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: cargo xtask <test|image|demo|bench>");
            ExitCode::from(64)
        }
    }
}
