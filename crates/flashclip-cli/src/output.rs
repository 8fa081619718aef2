//! Writing embeddings: `.npy`, `.safetensors` or JSON lines.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use clap::ValueEnum;

use crate::error::{CliError, Result};

/// Output formats of `flashclip embed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// NumPy `.npy`, float32 `[rows, dim]` (images first, then texts).
    Npy,
    /// safetensors with `image_embeds` / `text_embeds` and the paths and texts in the metadata.
    Safetensors,
    /// One JSON object per line: `{"path" | "text": ..., "embedding": [...]}`.
    Jsonl,
}

impl Format {
    /// The format an output file's extension implies, if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "npy" => Some(Format::Npy),
            "safetensors" => Some(Format::Safetensors),
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Embeddings of the images and texts that were embedded, row-major `[n, dim]`, L2-normalized.
#[derive(Debug, Default)]
pub struct Embeddings {
    pub dim: usize,
    pub image_paths: Vec<String>,
    pub image: Vec<f32>,
    pub texts: Vec<String>,
    pub text: Vec<f32>,
}

/// Scales each `dim`-wide row of `data` to unit L2 norm (an all-zero row stays zero).
pub fn l2_normalize(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// The bytes of a version 1.0 `.npy` file holding a little-endian float32 `[rows, cols]` array.
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and a final newline to a
    // multiple of 64 bytes (NumPy's own alignment; the format asks for 16).
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The bytes of a `.safetensors` file with `image_embeds` and/or `text_embeds` (float32) and metadata
/// `image_paths` / `text_inputs` (JSON arrays, in row order) and `dim`.
pub fn safetensors_bytes(e: &Embeddings) -> Result<Vec<u8>> {
    let err = |x: safetensors::SafeTensorError| CliError::Output(format!("safetensors: {x}"));
    let json = |v: &[String]| serde_json::to_string(v).map_err(|x| CliError::Output(x.to_string()));
    let (image, text) = (f32_bytes(&e.image), f32_bytes(&e.text));
    let mut tensors = Vec::new();
    if !e.image_paths.is_empty() {
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![e.image_paths.len(), e.dim],
            &image,
        )
        .map_err(err)?;
        tensors.push(("image_embeds", view));
    }
    if !e.texts.is_empty() {
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![e.texts.len(), e.dim],
            &text,
        )
        .map_err(err)?;
        tensors.push(("text_embeds", view));
    }
    let metadata = HashMap::from([
        ("image_paths".to_string(), json(&e.image_paths)?),
        ("text_inputs".to_string(), json(&e.texts)?),
        ("dim".to_string(), e.dim.to_string()),
        ("normalized".to_string(), "l2".to_string()),
    ]);
    safetensors::tensor::serialize(tensors, Some(metadata)).map_err(err)
}

/// Writes one JSON object per image, then per text.
pub fn write_jsonl(e: &Embeddings, out: &mut dyn Write) -> std::io::Result<()> {
    let rows = |data: &[f32]| {
        data.chunks_exact(e.dim.max(1))
            .map(<[f32]>::to_vec)
            .collect::<Vec<_>>()
    };
    for (path, emb) in e.image_paths.iter().zip(rows(&e.image)) {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({ "path": path, "embedding": emb }),
        )?;
        out.write_all(b"\n")?;
    }
    for (text, emb) in e.texts.iter().zip(rows(&e.text)) {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({ "text": text, "embedding": emb }),
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes the embeddings in `format` to `path`, or to standard output when `path` is `None` (JSON lines only).
pub fn write(e: &Embeddings, format: Format, path: Option<&Path>) -> Result<()> {
    let write_file = |bytes: &[u8], path: &Path| {
        std::fs::write(path, bytes).map_err(|x| CliError::io("cannot write", path, x))
    };
    match (format, path) {
        (Format::Jsonl, None) => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            write_jsonl(e, &mut lock).map_err(|x| CliError::Output(format!("standard output: {x}")))
        }
        (Format::Jsonl, Some(path)) => {
            let file =
                std::fs::File::create(path).map_err(|x| CliError::io("cannot create", path, x))?;
            let mut w = std::io::BufWriter::new(file);
            write_jsonl(e, &mut w).map_err(|x| CliError::io("cannot write", path, x))
        }
        (Format::Npy, Some(path)) => {
            let rows = e.image_paths.len() + e.texts.len();
            if !e.image_paths.is_empty() && !e.texts.is_empty() {
                eprintln!(
                    "note: {}: rows 0..{} are the images, rows {}..{rows} the texts",
                    path.display(),
                    e.image_paths.len(),
                    e.image_paths.len()
                );
            }
            let mut all = e.image.clone();
            all.extend_from_slice(&e.text);
            write_file(&npy_bytes(&all, rows, e.dim), path)
        }
        (Format::Safetensors, Some(path)) => write_file(&safetensors_bytes(e)?, path),
        (Format::Npy | Format::Safetensors, None) => Err(CliError::Usage(format!(
            "--format {} writes a binary file: give --out FILE",
            if format == Format::Npy {
                "npy"
            } else {
                "safetensors"
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let bytes = npy_bytes(&data, 2, 3);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'descr': '<f4'"));
        assert!(header.contains("'shape': (2, 3)"));
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + hlen + 24);
        assert_eq!(
            f32::from_le_bytes(bytes[10 + hlen + 20..].try_into().unwrap()),
            5.0
        );
    }

    #[test]
    fn normalizes_rows() {
        let mut d = vec![3.0, 4.0, 0.0, 0.0];
        l2_normalize(&mut d, 2);
        assert_eq!(d, vec![0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn safetensors_round_trip() {
        let e = Embeddings {
            dim: 2,
            image_paths: vec!["a.jpg".into()],
            image: vec![1.0, 0.0],
            texts: vec!["a cat".into(), "a dog".into()],
            text: vec![0.0, 1.0, 0.6, 0.8],
        };
        let bytes = safetensors_bytes(&e).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("image_embeds").unwrap().shape(), &[1, 2]);
        assert_eq!(st.tensor("text_embeds").unwrap().shape(), &[2, 2]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["text_inputs"], r#"["a cat","a dog"]"#);
    }

    #[test]
    fn jsonl_lines() {
        let e = Embeddings {
            dim: 2,
            image_paths: vec!["a.jpg".into()],
            image: vec![1.0, 0.0],
            texts: vec!["a cat".into()],
            text: vec![0.6, 0.8],
        };
        let mut out = Vec::new();
        write_jsonl(&e, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["path"], "a.jpg");
        assert_eq!(lines[1]["text"], "a cat");
        assert_eq!(lines[1]["embedding"][1].as_f64().unwrap() as f32, 0.8);
    }
}
