//! Densifying TFLite's sparse constants (the DENSIFY input of pruned models such as
//! mediapipe's pose detector): a traversal over dense and CSR levels, with optional blocks.

use super::schema::{DimMeta, SparsityDef};

/// The most elements a densified constant may have (a hostile file cannot make us allocate
/// more than this from a small sparse buffer).
pub const MAX_DENSE_ELEMENTS: usize = 1 << 28;

/// Expands `values` (stored in traversal order) into a dense row-major array of `shape`.
/// `zero` fills the positions the sparse format leaves out.
pub fn densify<T: Copy>(
    values: &[T],
    shape: &[usize],
    sparsity: &SparsityDef,
    zero: T,
) -> Result<Vec<T>, String> {
    let rank = shape.len();
    let dense_len = shape
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .filter(|n| *n <= MAX_DENSE_ELEMENTS)
        .ok_or("the dense shape is too large")?;
    let levels = sparsity.traversal_order.len();
    if levels > 16 {
        return Err("more than 16 sparse dimensions".into());
    }
    if levels != sparsity.dims.len() || levels < rank || levels != rank + sparsity.block_map.len() {
        return Err("traversal order, block map and dimension metadata disagree".into());
    }
    let order: Vec<usize> = sparsity
        .traversal_order
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|d| *d < levels))
        .collect::<Option<_>>()
        .ok_or("traversal order names a dimension out of range")?;
    let block_map: Vec<usize> = sparsity
        .block_map
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|d| *d < rank))
        .collect::<Option<_>>()
        .ok_or("block map names a dimension out of range")?;
    // Sizes of the expanded dimensions: block dimensions take their dense size from the
    // metadata at the level that traverses them.
    let mut expanded = vec![0usize; levels];
    for (level, &dim) in order.iter().enumerate() {
        if let DimMeta::Dense(size) = sparsity.dims[level] {
            expanded[dim] = size;
        }
    }
    let mut block_sizes = Vec::with_capacity(block_map.len());
    for (b, &orig) in block_map.iter().enumerate() {
        let size = expanded[rank + b];
        if size == 0 || !shape[orig].is_multiple_of(size) {
            return Err("a block size does not divide its dimension".into());
        }
        block_sizes.push(size);
    }
    let mut dense = vec![zero; dense_len];
    let strides = crate::tensor::strides(shape);
    let mut coords = vec![0usize; levels];
    let mut next_value = 0usize;
    let mut ctx = Walk {
        values,
        shape,
        sparsity,
        order: &order,
        block_map: &block_map,
        block_sizes: &block_sizes,
        strides: &strides,
        dense: &mut dense,
        next_value: &mut next_value,
    };
    ctx.walk(0, 0, &mut coords)?;
    if next_value != values.len() {
        return Err("the sparse data has more values than its indices".into());
    }
    Ok(dense)
}

struct Walk<'a, T> {
    values: &'a [T],
    shape: &'a [usize],
    sparsity: &'a SparsityDef,
    order: &'a [usize],
    block_map: &'a [usize],
    block_sizes: &'a [usize],
    strides: &'a [usize],
    dense: &'a mut Vec<T>,
    next_value: &'a mut usize,
}

impl<T: Copy> Walk<'_, T> {
    fn walk(&mut self, level: usize, parent: usize, coords: &mut [usize]) -> Result<(), String> {
        if level == self.order.len() {
            return self.emit(coords);
        }
        let dim = self.order[level];
        match &self.sparsity.dims[level] {
            DimMeta::Dense(size) => {
                for i in 0..*size {
                    coords[dim] = i;
                    let position = parent
                        .checked_mul(*size)
                        .and_then(|p| p.checked_add(i))
                        .ok_or("sparse positions overflow")?;
                    self.walk(level + 1, position, coords)?;
                }
            }
            DimMeta::Sparse { segments, indices } => {
                let (start, end) = match (segments.get(parent), segments.get(parent + 1)) {
                    (Some(s), Some(e)) if s <= e && *e <= indices.len() => (*s, *e),
                    _ => return Err("a sparse segment points outside its indices".into()),
                };
                for (j, &index) in indices.iter().enumerate().take(end).skip(start) {
                    coords[dim] = index;
                    self.walk(level + 1, j, coords)?;
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, coords: &[usize]) -> Result<(), String> {
        let rank = self.shape.len();
        let mut offset = 0usize;
        for d in 0..rank {
            let mut c = coords[d];
            if let Some(b) = self.block_map.iter().position(|m| *m == d) {
                c = c * self.block_sizes[b] + coords[rank + b];
            }
            if c >= self.shape[d] {
                return Err("a sparse index is outside the dense shape".into());
            }
            offset += c * self.strides[d];
        }
        let value = *self
            .values
            .get(*self.next_value)
            .ok_or("the sparse indices name more values than the data holds")?;
        *self.next_value += 1;
        self.dense[offset] = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_matrix_densifies() {
        // [[1, 0, 2], [0, 0, 3]]: row 0 has columns 0 and 2, row 1 has column 2.
        let sparsity = SparsityDef {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dims: vec![
                DimMeta::Dense(2),
                DimMeta::Sparse {
                    segments: vec![0, 2, 3],
                    indices: vec![0, 2, 2],
                },
            ],
        };
        let dense = densify(&[1.0f32, 2.0, 3.0], &[2, 3], &sparsity, 0.0).unwrap();
        assert_eq!(dense, vec![1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
    }

    #[test]
    fn blocked_sparsity_densifies() {
        // 2x4 matrix in 1x2 blocks: block row 0 keeps block column 1, row 1 keeps column 0.
        let sparsity = SparsityDef {
            traversal_order: vec![0, 1, 2],
            block_map: vec![1],
            dims: vec![
                DimMeta::Dense(2),
                DimMeta::Sparse {
                    segments: vec![0, 1, 2],
                    indices: vec![1, 0],
                },
                DimMeta::Dense(2),
            ],
        };
        let dense = densify(&[1i8, 2, 3, 4], &[2, 4], &sparsity, 0).unwrap();
        assert_eq!(dense, vec![0, 0, 1, 2, 3, 4, 0, 0]);
    }

    #[test]
    fn hostile_metadata_is_an_error() {
        let sparsity = SparsityDef {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dims: vec![
                DimMeta::Dense(2),
                DimMeta::Sparse {
                    segments: vec![0, 9, 3],
                    indices: vec![0, 7],
                },
            ],
        };
        assert!(densify(&[1.0f32, 2.0], &[2, 3], &sparsity, 0.0).is_err());
        assert!(densify(&[1.0f32], &[1 << 20, 1 << 20], &sparsity, 0.0).is_err());
    }
}
