//! Turning `--images` and `--texts-file` arguments into lists of paths and texts.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// File extensions taken from directories (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one character.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` and the name position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Image files under `dir`, recursively, sorted. Unreadable subdirectories are reported and skipped; symlinked
/// directories are not followed (no loops).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::io("cannot read directory", dir, e))?;
    let mut paths: Vec<(PathBuf, bool)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("cannot read directory", dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        paths.push((entry.path(), is_dir));
    }
    paths.sort();
    for (path, is_dir) in paths {
        if is_dir {
            if let Err(e) = walk(&path, out) {
                eprintln!("warning: {e}");
            }
        } else if path.is_file() && has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Files in one directory whose names match a wildcard pattern, sorted.
fn glob(spec: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let parent = match spec.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent_str = parent.to_string_lossy();
    if parent_str.contains('*') || parent_str.contains('?') {
        return Err(CliError::Usage(format!(
            "{}: wildcards are supported in the file name only, not in directories",
            spec.display()
        )));
    }
    let entries = std::fs::read_dir(&parent)
        .map_err(|e| CliError::io("cannot read directory", &parent, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(pattern, n))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    // Spelled like the user's argument (`./` only where they wrote it).
    if spec.parent().is_none_or(|p| p.as_os_str().is_empty()) {
        out = out
            .into_iter()
            .map(|p| p.file_name().map(PathBuf::from).unwrap_or(p))
            .collect();
    }
    Ok(out)
}

/// Expands `--images` arguments: directories are searched recursively for jpg/jpeg/png/webp files, a `*` or `?`
/// in the file name matches files of that directory, anything else is taken as a file (a missing one is
/// reported as skipped when decoding).
pub fn expand_images(specs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for spec in specs {
        let name = spec.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if spec.is_dir() {
            let before = out.len();
            walk(spec, &mut out)?;
            if out.len() == before {
                eprintln!(
                    "warning: no {} files in {}",
                    IMAGE_EXTENSIONS.join("/"),
                    spec.display()
                );
            }
        } else if name.contains('*') || name.contains('?') {
            let matched = glob(spec, name)?;
            if matched.is_empty() {
                eprintln!("warning: {} matched no files", spec.display());
            }
            out.extend(matched);
        } else {
            out.push(spec.clone());
        }
    }
    Ok(out)
}

/// The non-empty lines of a texts file (`-` reads standard input).
pub fn read_texts_file(path: &Path) -> Result<Vec<String>> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::io("cannot read", "<stdin>", e))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::io("cannot read texts file", path, e))?
    };
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.jpg", "a.jpg"));
        assert!(wildcard_match("*.jpg", ".jpg"));
        assert!(!wildcard_match("*.jpg", "a.jpeg"));
        assert!(wildcard_match("img_??.png", "img_01.png"));
        assert!(!wildcard_match("img_??.png", "img_1.png"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYbc"));
        assert!(!wildcard_match("a*b*c", "aXXbYYb"));
        assert!(wildcard_match("cat", "cat"));
        assert!(!wildcard_match("cat", "cats"));
    }

    #[test]
    fn expands_directories_and_patterns() {
        let dir = std::env::temp_dir().join(format!("flashclip-cli-inputs-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for f in ["a.jpg", "b.PNG", "notes.txt", "sub/c.webp", "sub/d.jpeg"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let all = expand_images(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            ["a.jpg", "b.PNG", "sub/c.webp", "sub/d.jpeg"].map(PathBuf::from)
        );
        let jpgs = expand_images(&[dir.join("*.jpg")]).unwrap();
        assert_eq!(jpgs, vec![dir.join("a.jpg")]);
        assert!(expand_images(&[dir.join("*.gif")]).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
