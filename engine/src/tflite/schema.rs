//! Typed access to the parts of a TFLite flatbuffer the reader uses (schema version 3):
//! the model, its operator codes, subgraphs, tensors with their quantization and sparsity,
//! buffers and operators. Field numbers are the schema's; every read is bounds-checked.

use crate::flatbuf::{FlatError, Table, Tables};

pub type Result<T> = std::result::Result<T, FlatError>;

/// Tensor element types, as the schema numbers them.
pub mod tensor_type {
    pub const FLOAT32: u8 = 0;
    pub const FLOAT16: u8 = 1;
    pub const INT32: u8 = 2;
    pub const UINT8: u8 = 3;
    pub const INT64: u8 = 4;
    pub const STRING: u8 = 5;
    pub const BOOL: u8 = 6;
    pub const INT16: u8 = 7;
    pub const INT8: u8 = 9;
    pub const FLOAT64: u8 = 10;
    pub const RESOURCE: u8 = 13;

    pub fn name(t: u8) -> &'static str {
        match t {
            0 => "float32",
            1 => "float16",
            2 => "int32",
            3 => "uint8",
            4 => "int64",
            5 => "string",
            6 => "bool",
            7 => "int16",
            8 => "complex64",
            9 => "int8",
            10 => "float64",
            11 => "complex128",
            12 => "uint64",
            13 => "resource",
            14 => "variant",
            15 => "uint32",
            16 => "uint16",
            17 => "int4",
            18 => "bfloat16",
            _ => "unknown",
        }
    }
}

#[derive(Clone, Copy)]
pub struct Model<'a> {
    buf: &'a [u8],
    table: Table<'a>,
}

#[derive(Debug, Clone)]
pub struct OpCode {
    pub builtin: i32,
    pub custom: Option<String>,
    pub version: i32,
}

#[derive(Debug, Clone)]
pub struct QuantDef {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub axis: i32,
}

/// One dimension of a sparse tensor's storage (TFLite's DimensionMetadata).
#[derive(Debug, Clone)]
pub enum DimMeta {
    Dense(usize),
    /// CSR-style: `segments[i]..segments[i + 1]` index into `indices`.
    Sparse {
        segments: Vec<usize>,
        indices: Vec<usize>,
    },
}

#[derive(Debug, Clone)]
pub struct SparsityDef {
    pub traversal_order: Vec<i32>,
    pub block_map: Vec<i32>,
    pub dims: Vec<DimMeta>,
}

#[derive(Debug, Clone)]
pub struct TensorDef {
    pub name: String,
    pub shape: Vec<i32>,
    pub shape_signature: Option<Vec<i32>>,
    pub ttype: u8,
    pub buffer: u32,
    pub quant: Option<QuantDef>,
    pub is_variable: bool,
    pub sparsity: Option<SparsityDef>,
}

#[derive(Clone)]
pub struct OperatorDef<'a> {
    pub opcode_index: u32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options_type: u8,
    pub options: Option<Table<'a>>,
    pub custom_options: Option<&'a [u8]>,
}

#[derive(Clone, Copy)]
pub struct SubGraph<'a> {
    table: Table<'a>,
}

impl<'a> Model<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Model<'a>> {
        if buf.get(4..8) != Some(b"TFL3") {
            return Err(FlatError {
                what: "model",
                reason: "no TFL3 file identifier",
            });
        }
        Ok(Model {
            buf,
            table: Table::root(buf)?,
        })
    }

    pub fn version(&self) -> Result<u32> {
        self.table.scalar(0, 0u32, "model version")
    }

    pub fn operator_codes(&self) -> Result<Vec<OpCode>> {
        let Some(codes) = self.table.tables(1, "operator codes")? else {
            return Ok(Vec::new());
        };
        codes
            .iter()
            .map(|t| {
                let t = t?;
                let deprecated: i8 = t.scalar(0, 0, "deprecated builtin code")?;
                let builtin: i32 = t.scalar(3, 0, "builtin code")?;
                Ok(OpCode {
                    builtin: builtin.max(i32::from(deprecated)),
                    custom: t.string(1, "custom code")?.map(str::to_owned),
                    version: t.scalar(2, 1, "operator version")?,
                })
            })
            .collect()
    }

    pub fn subgraphs(&self) -> Result<Option<Tables<'a>>> {
        self.table.tables(2, "subgraphs")
    }

    pub fn subgraph(&self, index: usize) -> Result<SubGraph<'a>> {
        let subgraphs = self.subgraphs()?.ok_or(FlatError {
            what: "subgraphs",
            reason: "the model has none",
        })?;
        Ok(SubGraph {
            table: subgraphs.get(index)?,
        })
    }

    pub fn subgraph_count(&self) -> Result<usize> {
        Ok(self.subgraphs()?.map(|s| s.len()).unwrap_or(0))
    }

    /// The bytes of buffer `index`: inline data, or a range of the file for models written
    /// with external buffers (offset and size fields). Empty when the buffer has no data.
    pub fn buffer(&self, index: u32) -> Result<&'a [u8]> {
        let Some(buffers) = self.table.tables(4, "buffers")? else {
            return Ok(&[]);
        };
        if index as usize >= buffers.len() {
            return Err(FlatError {
                what: "tensor buffer",
                reason: "buffer index out of range",
            });
        }
        let b = buffers.get(index as usize)?;
        if let Some(data) = b.bytes(0, "buffer data")? {
            return Ok(data);
        }
        let offset: u64 = b.scalar(1, 0, "buffer offset")?;
        let size: u64 = b.scalar(2, 0, "buffer size")?;
        if offset > 1 {
            let start = usize::try_from(offset).ok();
            let end = start.and_then(|s| s.checked_add(usize::try_from(size).ok()?));
            return match (start, end) {
                (Some(s), Some(e)) if e <= self.buf.len() => Ok(&self.buf[s..e]),
                _ => Err(FlatError {
                    what: "buffer offset",
                    reason: "points past the end of the file",
                }),
            };
        }
        Ok(&[])
    }
}

impl<'a> SubGraph<'a> {
    pub fn name(&self) -> Result<String> {
        Ok(self
            .table
            .string(4, "subgraph name")?
            .unwrap_or_default()
            .to_owned())
    }

    pub fn inputs(&self) -> Result<Vec<i32>> {
        self.table.vec(1, "subgraph inputs")
    }

    pub fn outputs(&self) -> Result<Vec<i32>> {
        self.table.vec(2, "subgraph outputs")
    }

    pub fn tensors(&self) -> Result<Vec<TensorDef>> {
        let Some(tensors) = self.table.tables(0, "tensors")? else {
            return Ok(Vec::new());
        };
        tensors.iter().map(|t| tensor(t?)).collect()
    }

    pub fn operators(&self) -> Result<Vec<OperatorDef<'a>>> {
        let Some(ops) = self.table.tables(3, "operators")? else {
            return Ok(Vec::new());
        };
        ops.iter()
            .map(|t| {
                let t = t?;
                Ok(OperatorDef {
                    opcode_index: t.scalar(0, 0, "opcode index")?,
                    inputs: t.vec(1, "operator inputs")?,
                    outputs: t.vec(2, "operator outputs")?,
                    options_type: t.scalar(3, 0, "builtin options type")?,
                    options: t.table(4, "builtin options")?,
                    custom_options: t.bytes(5, "custom options")?,
                })
            })
            .collect()
    }
}

fn tensor(t: Table<'_>) -> Result<TensorDef> {
    let quant = match t.table(4, "quantization")? {
        Some(q) => {
            let scale: Vec<f32> = q.vec(2, "quantization scale")?;
            let zero_point: Vec<i64> = q.vec(3, "quantization zero point")?;
            (!scale.is_empty()).then_some(QuantDef {
                scale,
                zero_point,
                axis: q.scalar(6, 0, "quantized dimension")?,
            })
        }
        None => None,
    };
    let sparsity = match t.table(6, "sparsity")? {
        Some(s) => Some(sparsity(s)?),
        None => None,
    };
    let signature = t.vector::<i32>(7, "shape signature")?;
    Ok(TensorDef {
        name: t.string(3, "tensor name")?.unwrap_or_default().to_owned(),
        shape: t.vec(0, "tensor shape")?,
        shape_signature: signature.map(|v| v.iter().collect()),
        ttype: t.scalar(1, 0, "tensor type")?,
        buffer: t.scalar(2, 0, "tensor buffer")?,
        quant,
        is_variable: t.scalar(5, false, "is variable")?,
        sparsity,
    })
}

/// A sparse index vector: a union of int32, uint16 and uint8 vectors.
fn index_vector(t: &Table<'_>, type_id: usize, what: &'static str) -> Result<Vec<usize>> {
    let kind: u8 = t.scalar(type_id, 0, what)?;
    let Some(table) = t.table(type_id + 1, what)? else {
        return Ok(Vec::new());
    };
    Ok(match kind {
        1 => table
            .vec::<i32>(0, what)?
            .into_iter()
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
            .collect(),
        2 => table
            .vec::<u16>(0, what)?
            .into_iter()
            .map(usize::from)
            .collect(),
        3 => table
            .vec::<u8>(0, what)?
            .into_iter()
            .map(usize::from)
            .collect(),
        _ => {
            return Err(FlatError {
                what,
                reason: "unknown sparse index vector type",
            });
        }
    })
}

fn sparsity(s: Table<'_>) -> Result<SparsityDef> {
    let mut dims = Vec::new();
    if let Some(metas) = s.tables(2, "dimension metadata")? {
        for m in metas.iter() {
            let m = m?;
            let format: u8 = m.scalar(0, 0, "dimension format")?;
            dims.push(match format {
                0 => {
                    let size: i32 = m.scalar(1, 0, "dense size")?;
                    DimMeta::Dense(usize::try_from(size).map_err(|_| FlatError {
                        what: "dense size",
                        reason: "negative",
                    })?)
                }
                _ => DimMeta::Sparse {
                    segments: index_vector(&m, 2, "array segments")?,
                    indices: index_vector(&m, 4, "array indices")?,
                },
            });
        }
    }
    Ok(SparsityDef {
        traversal_order: s.vec(0, "traversal order")?,
        block_map: s.vec(1, "block map")?,
        dims,
    })
}
