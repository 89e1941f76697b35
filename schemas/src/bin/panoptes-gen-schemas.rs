//! Writes the JSON Schema files of `panoptes-schemas` into the crate's `json/` folder.
//!
//! Run after changing any message type:
//! `cargo run -p panoptes-schemas --bin panoptes-gen-schemas`. Files of other names found
//! there are removed, so a renamed or dropped type leaves no stale schema behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::{fs, io};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("panoptes-gen-schemas: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    // The source tree, not the working directory: the files belong next to the crate
    // whichever directory cargo is run from.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    fs::create_dir_all(&dir)?;

    let schemas = panoptes_schemas::all_schemas();
    let wanted: Vec<OsString> = schemas.iter().map(|(name, _)| name.into()).collect();

    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && !wanted.contains(&entry.file_name()) {
            fs::remove_file(entry.path())?;
            println!("removed {}", entry.path().display());
        }
    }
    for (name, schema) in &schemas {
        let path = dir.join(name);
        let text = panoptes_schemas::render_schema(schema);
        // Leave unchanged files alone so their modification times (and build caches keyed
        // on them) are not disturbed.
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(&path, text)?;
            println!("wrote {}", path.display());
        } else {
            println!("unchanged {}", path.display());
        }
    }
    Ok(())
}
