//! The `log-start-offset` checkpoint file of one partition directory.
//!
//! Owns the file's format (a version line `0`, then the offset in decimal) and its atomic
//! replacement: write a temp file, fsync it, rename over the old one, fsync the directory.
//! A reader therefore sees either the old offset or the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub(crate) const FILE_NAME: &str = "log-start-offset";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
const VERSION: &str = "0";
/// Far more than the two short lines a valid file holds; bounds what we read.
const MAX_FILE_BYTES: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error("checkpoint I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
}

/// Parses checkpoint contents.
pub(crate) fn parse(text: &str) -> Result<i64, CheckpointError> {
    let mut lines = text.lines();
    match lines.next() {
        Some(VERSION) => {}
        other => {
            return Err(CheckpointError::Malformed(format!(
                "unknown version line {other:?}"
            )))
        }
    }
    let offset = lines
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .filter(|o| *o >= 0)
        .ok_or_else(|| CheckpointError::Malformed("missing or invalid offset".into()))?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(CheckpointError::Malformed("trailing content".into()));
    }
    Ok(offset)
}

/// Reads the checkpoint in `dir`; `None` if there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<i64>, CheckpointError> {
    match read_small(&dir.join(FILE_NAME), MAX_FILE_BYTES) {
        Ok(Some(text)) => parse(&text).map(Some),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(CheckpointError::Malformed(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A small file's text; `None` if it does not exist, an error (`InvalidData`) if it is
/// longer than `max_bytes`.
pub(crate) fn read_small(path: &Path, max_bytes: u64) -> io::Result<Option<String>> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {len} bytes long", path.display()),
        ));
    }
    fs::read_to_string(path).map(Some)
}

/// Durably replaces the checkpoint in `dir` with `offset`.
pub(crate) fn write(dir: &Path, offset: i64) -> io::Result<()> {
    replace_file(dir, FILE_NAME, format!("{VERSION}\n{offset}\n").as_bytes())
}

/// Durably replaces `dir/name` with `contents`: a temp file (the suffix partition open
/// sweeps up after a crash), fsync, rename, directory fsync. Readers see the old contents or
/// the new, never a mix.
pub(crate) fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 42).unwrap();
        write(dir.path(), 1234).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(1234));
        assert!(!dir.path().join("log-start-offset.tmp").exists());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse("0\n7\n").unwrap(), 7);
        assert!(parse("1\n7\n").is_err());
        assert!(parse("0\n-7\n").is_err());
        assert!(parse("0\nseven\n").is_err());
        assert!(parse("0\n7\n8\n").is_err());
        assert!(parse("").is_err());
    }
}
