//! Embedding rows as the commands write them: L2-normalized, in `.npy` files.

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

/// The element type of written embeddings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OutDType {
    /// IEEE half precision (`<f2`): half the size, about 3 significant digits.
    #[value(alias = "f16")]
    Float16,
    /// IEEE single precision (`<f4`).
    #[value(alias = "f32")]
    Float32,
}

/// The bytes of a version 1.0 `.npy` file holding a little-endian `[rows, cols]` array of `data` in `dtype`.
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize, dtype: OutDType) -> Vec<u8> {
    let descr = match dtype {
        OutDType::Float16 => "<f2",
        OutDType::Float32 => "<f4",
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and a final newline to a
    // multiple of 64 bytes (NumPy's own alignment; the format asks for 16).
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &x in data {
        match dtype {
            OutDType::Float16 => out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
            OutDType::Float32 => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let bytes = npy_bytes(&data, 2, 3, OutDType::Float32);
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
    fn npy_half_precision() {
        let bytes = npy_bytes(&[0.5, -2.0], 1, 2, OutDType::Float16);
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert!(std::str::from_utf8(&bytes[10..10 + hlen])
            .unwrap()
            .contains("'<f2'"));
        let body = &bytes[10 + hlen..];
        assert_eq!(body.len(), 4);
        assert_eq!(half::f16::from_le_bytes([body[2], body[3]]).to_f32(), -2.0);
    }

    #[test]
    fn normalizes_rows() {
        let mut d = vec![3.0, 4.0, 0.0, 0.0];
        l2_normalize(&mut d, 2);
        assert_eq!(d, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
