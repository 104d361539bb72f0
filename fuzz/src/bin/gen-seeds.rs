//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from
//! `aloft_fuzz::seeds` (`cargo xtask fuzz --seed`). Each target's directory
//! is emptied first, so the committed corpus is exactly the generated one.
//! `--check` writes nothing and fails if the committed corpus differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = aloft_fuzz::seeds::all();
    let mut stale = Vec::new();
    for target in aloft_fuzz::seeds::TARGETS {
        let dir = root.join(target);
        let ours: Vec<_> = seeds.iter().filter(|s| s.target == *target).collect();
        let mut existing: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).expect("read a seed"))
            })
            .collect();
        existing.sort();
        let mut wanted: Vec<(String, Vec<u8>)> = ours
            .iter()
            .map(|s| (s.name.clone(), s.bytes.clone()))
            .collect();
        wanted.sort();
        if check {
            if existing != wanted {
                stale.push(*target);
            }
            continue;
        }
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, _) in &existing {
            std::fs::remove_file(dir.join(name)).expect("remove an old seed");
        }
        let mut total = 0;
        for (name, bytes) in &wanted {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
            total += bytes.len();
        }
        println!("{target:<18} {} seeds, {total} bytes", wanted.len());
    }
    if !stale.is_empty() {
        eprintln!(
            "the committed seed corpus differs from the generated one for: {}\n\
             run `cargo xtask fuzz --seed` and commit fuzz/corpus",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
