//! A bounds-checked reader for FlatBuffers, the binary layout TFLite files use: tables with
//! vtables, vectors, strings and unions, read lazily from a byte slice.
//!
//! Every offset is checked against the buffer before it is followed, so a truncated or hostile
//! file gives an error naming what was being read, never a panic or an out-of-range read.
//! Written here rather than taken from the `flatbuffers` crate because that crate's accessors
//! are `unsafe` and trust a separate verifier pass; this one checks each read as it is made.

use std::fmt;

/// Where a read went wrong: what was being read and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatError {
    pub what: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

impl std::error::Error for FlatError {}

pub type FlatResult<T> = Result<T, FlatError>;

fn err<T>(what: &'static str, reason: &'static str) -> FlatResult<T> {
    Err(FlatError { what, reason })
}

/// A scalar that can sit in a table field or a vector.
pub trait Scalar: Copy {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
scalar!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

impl Scalar for bool {
    const SIZE: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

fn slice<'a>(buf: &'a [u8], at: usize, len: usize, what: &'static str) -> FlatResult<&'a [u8]> {
    let end = at.checked_add(len).ok_or(FlatError {
        what,
        reason: "offset overflows",
    })?;
    buf.get(at..end).ok_or(FlatError {
        what,
        reason: "points past the end of the file",
    })
}

fn read_at<T: Scalar>(buf: &[u8], at: usize, what: &'static str) -> FlatResult<T> {
    Ok(T::read(slice(buf, at, T::SIZE, what)?))
}

/// Follows the unsigned offset stored at `at` (relative to `at`).
fn follow(buf: &[u8], at: usize, what: &'static str) -> FlatResult<usize> {
    let offset: u32 = read_at(buf, at, what)?;
    let target = at.checked_add(offset as usize).ok_or(FlatError {
        what,
        reason: "offset overflows",
    })?;
    if target >= buf.len() {
        return err(what, "points past the end of the file");
    }
    Ok(target)
}

/// One table: its position and its vtable's.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    /// Number of field slots the vtable declares.
    slots: usize,
    /// Bytes of inline table data the vtable declares.
    size: usize,
}

impl fmt::Debug for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table@{}", self.pos)
    }
}

impl<'a> Table<'a> {
    /// The root table of a buffer.
    pub fn root(buf: &'a [u8]) -> FlatResult<Table<'a>> {
        let pos = follow(buf, 0, "root table")?;
        Table::at(buf, pos, "root table")
    }

    fn at(buf: &'a [u8], pos: usize, what: &'static str) -> FlatResult<Table<'a>> {
        let soffset: i32 = read_at(buf, pos, what)?;
        let vtable = (pos as i64) - i64::from(soffset);
        if vtable < 0 || vtable as usize >= buf.len() {
            return err(what, "vtable offset points outside the file");
        }
        let vtable = vtable as usize;
        let vt_len: u16 = read_at(buf, vtable, what)?;
        let size: u16 = read_at(buf, vtable + 2, what)?;
        let vt_len = usize::from(vt_len);
        if vt_len < 4 || vt_len % 2 != 0 {
            return err(what, "malformed vtable");
        }
        slice(buf, vtable, vt_len, what)?;
        slice(buf, pos, usize::from(size).max(4), what)?;
        Ok(Table {
            buf,
            pos,
            vtable,
            slots: (vt_len - 4) / 2,
            size: usize::from(size),
        })
    }

    /// The absolute position of field `id`, when the table has it.
    fn field(&self, id: usize, width: usize, what: &'static str) -> FlatResult<Option<usize>> {
        if id >= self.slots {
            return Ok(None);
        }
        let offset: u16 = read_at(self.buf, self.vtable + 4 + 2 * id, what)?;
        if offset == 0 {
            return Ok(None);
        }
        let offset = usize::from(offset);
        if offset + width > self.size.max(4) {
            return err(what, "field lies outside its table");
        }
        Ok(Some(self.pos + offset))
    }

    /// A scalar field, or `default` when absent.
    pub fn scalar<T: Scalar>(&self, id: usize, default: T, what: &'static str) -> FlatResult<T> {
        match self.field(id, T::SIZE, what)? {
            Some(at) => read_at(self.buf, at, what),
            None => Ok(default),
        }
    }

    /// A sub-table field.
    pub fn table(&self, id: usize, what: &'static str) -> FlatResult<Option<Table<'a>>> {
        match self.field(id, 4, what)? {
            Some(at) => {
                let target = follow(self.buf, at, what)?;
                Table::at(self.buf, target, what).map(Some)
            }
            None => Ok(None),
        }
    }

    /// A vector field of scalars.
    pub fn vector<T: Scalar>(
        &self,
        id: usize,
        what: &'static str,
    ) -> FlatResult<Option<Vector<'a, T>>> {
        match self.field(id, 4, what)? {
            Some(at) => Vector::at(self.buf, follow(self.buf, at, what)?, what).map(Some),
            None => Ok(None),
        }
    }

    /// A vector field of scalars, read into a `Vec` (empty when absent).
    pub fn vec<T: Scalar>(&self, id: usize, what: &'static str) -> FlatResult<Vec<T>> {
        Ok(self
            .vector::<T>(id, what)?
            .map(|v| v.iter().collect())
            .unwrap_or_default())
    }

    /// A `[ubyte]` field as a slice of the buffer.
    pub fn bytes(&self, id: usize, what: &'static str) -> FlatResult<Option<&'a [u8]>> {
        Ok(self.vector::<u8>(id, what)?.map(|v| v.data))
    }

    /// A string field.
    pub fn string(&self, id: usize, what: &'static str) -> FlatResult<Option<&'a str>> {
        match self.bytes(id, what)? {
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| FlatError {
                what,
                reason: "not UTF-8",
            }),
            None => Ok(None),
        }
    }

    /// A vector field of tables.
    pub fn tables(&self, id: usize, what: &'static str) -> FlatResult<Option<Tables<'a>>> {
        match self.field(id, 4, what)? {
            Some(at) => {
                let start = follow(self.buf, at, what)?;
                let len: u32 = read_at(self.buf, start, what)?;
                let len = len as usize;
                slice(self.buf, start + 4, len.saturating_mul(4), what)?;
                Ok(Some(Tables {
                    buf: self.buf,
                    start: start + 4,
                    len,
                    what,
                }))
            }
            None => Ok(None),
        }
    }

    /// The byte offset of this table in the buffer (for diagnostics).
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// A vector of scalars, read on access.
#[derive(Clone, Copy)]
pub struct Vector<'a, T> {
    data: &'a [u8],
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T: Scalar> Vector<'a, T> {
    fn at(buf: &'a [u8], start: usize, what: &'static str) -> FlatResult<Vector<'a, T>> {
        let len: u32 = read_at(buf, start, what)?;
        let len = len as usize;
        let bytes = len.checked_mul(T::SIZE).ok_or(FlatError {
            what,
            reason: "vector length overflows",
        })?;
        let data = slice(buf, start + 4, bytes, what)?;
        Ok(Vector {
            data,
            len,
            _t: std::marker::PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| T::read(&self.data[i * T::SIZE..]))
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.data.chunks_exact(T::SIZE).map(T::read)
    }
}

/// A vector of tables, each read on access.
#[derive(Clone, Copy)]
pub struct Tables<'a> {
    buf: &'a [u8],
    start: usize,
    len: usize,
    what: &'static str,
}

impl<'a> Tables<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> FlatResult<Table<'a>> {
        if i >= self.len {
            return err(self.what, "index out of range");
        }
        let at = self.start + 4 * i;
        Table::at(self.buf, follow(self.buf, at, self.what)?, self.what)
    }

    pub fn iter(&self) -> impl Iterator<Item = FlatResult<Table<'a>>> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a buffer by hand: root offset, a vtable with two fields, a table with an i32
    /// and an offset to a vector of three u16.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 4];
        // vtable at 4: len 8, table size 12, field 0 at +4, field 1 at +8
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&12u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        // table at 12: soffset = 12 - 4 = 8
        let table = b.len();
        b.extend_from_slice(&(8i32).to_le_bytes());
        b.extend_from_slice(&(-7i32).to_le_bytes());
        let vec_field = b.len();
        b.extend_from_slice(&0u32.to_le_bytes());
        let vec_start = b.len();
        b.extend_from_slice(&3u32.to_le_bytes());
        for v in [1u16, 2, 3] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let rel = (vec_start - vec_field) as u32;
        b[vec_field..vec_field + 4].copy_from_slice(&rel.to_le_bytes());
        b[0..4].copy_from_slice(&(table as u32).to_le_bytes());
        b
    }

    #[test]
    fn reads_fields_vectors_and_defaults() {
        let buf = sample();
        let t = Table::root(&buf).unwrap();
        assert_eq!(t.scalar::<i32>(0, 0, "a").unwrap(), -7);
        assert_eq!(t.vec::<u16>(1, "b").unwrap(), vec![1, 2, 3]);
        assert_eq!(t.scalar::<i32>(5, 42, "absent").unwrap(), 42);
        assert!(t.table(7, "absent").unwrap().is_none());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        for cut in 0..buf.len() {
            let short = &buf[..cut];
            let result = Table::root(short).and_then(|t| {
                t.scalar::<i32>(0, 0, "a")?;
                t.vec::<u16>(1, "b")
            });
            assert!(result.is_err(), "cut at {cut} read fine");
        }
    }

    #[test]
    fn a_vector_longer_than_the_file_is_refused() {
        let mut buf = sample();
        let n = buf.len();
        buf[n - 10..n - 6].copy_from_slice(&u32::MAX.to_le_bytes());
        let t = Table::root(&buf).unwrap();
        assert!(t.vec::<u16>(1, "b").is_err());
    }
}
