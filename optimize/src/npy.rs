//! NumPy `.npy` arrays of float32 (calibration inputs): read from bytes, written to bytes.

use crate::error::ExportError;

/// An f32 array: its shape and values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn bad(reason: impl Into<String>) -> ExportError {
    ExportError::Calibration(format!("not a float32 .npy array: {}", reason.into()))
}

/// Parses a version 1-3 `.npy` file holding a little-endian float32 (`<f4`) C-order array.
pub fn read_f32(bytes: &[u8]) -> Result<Array, ExportError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NumPy magic"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| bad("header longer than the file"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(bad(format!(
            "dtype {}",
            descr.split(',').next().unwrap_or(descr)
        )));
    }
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran order"));
    }
    let shape_text = field("shape").ok_or_else(|| bad("no shape"))?;
    let (dims, _) = shape_text
        .strip_prefix('(')
        .ok_or_else(|| bad("the shape is not a tuple"))?
        .split_once(')')
        .ok_or_else(|| bad("unterminated shape"))?;
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| bad(format!("dimension {d:?}")))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[end..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(bad(format!(
            "shape {shape:?} needs {count} values, the file holds {} bytes",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array { shape, values })
}

/// A version 1.0 `.npy` file of a little-endian float32 C-order array, as `numpy.save`
/// writes it.
pub fn write_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let tuple = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    encode(&tuple, values)
}

/// The file for a shape given as Python tuple text (tests also write lying shapes with it).
fn encode(shape: &str, values: &[f32]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    match u16::try_from(header.len()) {
        Ok(len) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        }
        // Version 2.0 only widens the length (to 4 bytes), for headers of many dimensions;
        // the padding rule differs by 2 bytes, which readers do not check.
        Err(_) => {
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &str, values: &[f32]) -> Vec<u8> {
        encode(shape, values)
    }

    #[test]
    fn what_is_written_reads_back() {
        for shape in [vec![3], vec![2, 3], vec![1, 3, 2, 2], vec![0]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let read = read_f32(&write_f32(&shape, &values)).unwrap();
            assert_eq!(read, Array { shape, values });
        }
    }

    #[test]
    fn reads_what_numpy_writes_and_refuses_the_rest() {
        let a = read_f32(&npy("(2, 3)", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values[5], 6.0);
        assert_eq!(
            read_f32(&npy("(3,)", &[1.0, 2.0, 3.0])).unwrap().shape,
            vec![3]
        );
        let good = npy("(2, 3)", &[0.0; 6]);
        for bad in [
            &good[..good.len() - 1],                     // truncated data
            &good[..20],                                 // truncated header
            b"not numpy at all".as_slice(),              // no magic
            &npy("(2, 3)", &[0.0; 5])[..],               // shape lies
            &npy("(99999999999, 99999999999)", &[])[..], // shape overflows the data
        ] {
            assert!(matches!(read_f32(bad), Err(ExportError::Calibration(_))));
        }
        let ints = String::from_utf8_lossy(&npy("(2,)", &[0.0; 2])).replace("<f4", "<i4");
        assert!(read_f32(ints.as_bytes()).is_err());
    }

    #[test]
    fn crafted_shapes_are_refused_not_panicked_on() {
        // A shape that closes before it opens, one that is not a tuple, one that starts with
        // a multi-byte character: each sliced an unchecked header before.
        for shape in [
            ")", ")(", "é)", "[2, 3]", "(", "", "(2, 3", "(-1,)", "(2,,3)",
        ] {
            let got = std::panic::catch_unwind(|| read_f32(&npy(shape, &[])));
            let got = got.unwrap_or_else(|_| panic!("shape {shape:?} panicked"));
            assert!(
                matches!(got, Err(ExportError::Calibration(_))),
                "{shape:?}: {got:?}"
            );
        }
    }
}
