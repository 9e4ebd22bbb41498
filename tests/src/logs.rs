//! Log files of the child processes: opening them for a child's stdout and stderr, and
//! showing their last lines when something went wrong.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

/// How many lines of a log a failure message shows.
pub const TAIL_LINES: usize = 40;

/// Opens (appending, so a restarted process continues the same file) a log file and writes a
/// banner line, returning the two handles a child's stdout and stderr go to.
pub fn open_for_child(path: &Path, banner: &str) -> Result<(Stdio, Stdio)> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open log file {}", path.display()))?;
    writeln!(file, "===== {banner} =====")
        .with_context(|| format!("failed to write to log file {}", path.display()))?;
    let for_stderr = file
        .try_clone()
        .with_context(|| format!("failed to duplicate log file handle {}", path.display()))?;
    Ok((Stdio::from(file), Stdio::from(for_stderr)))
}

/// The last `lines` lines of a log file, or a note saying why they cannot be shown.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// What a log file holds from byte `offset` on (empty if it cannot be read): what one start
/// of a process wrote to a log that every start appends to.
pub fn since(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The length of a log file so far (0 if it cannot be read), to read what comes after it with
/// [`since`].
pub fn length(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Creates an empty file, so that a log path printed before a process writes is valid.
pub fn touch(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    Ok(())
}
