//! Per-thread scratch buffers (patches, accumulators, converted inputs) reused across runs.
//!
//! A buffer is taken out of its thread-local slot while in use and put back after, never
//! borrowed across the call: rayon may run another kernel's task on this thread while this
//! one waits (work stealing inside a GEMM), and that task must find the slot free.

use std::cell::RefCell;
use std::thread::LocalKey;

pub type Slot<T> = LocalKey<RefCell<Vec<T>>>;

/// Runs `f` on a buffer of `len` elements from `key` (contents unspecified).
pub fn with_scratch<T: Default + Clone, R>(
    key: &'static Slot<T>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = key.with(|cell| cell.take());
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    let result = f(&mut buf[..len]);
    key.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.capacity() < buf.capacity() {
            *slot = buf;
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static S: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn nested_use_of_one_slot_gets_its_own_buffer() {
        let total = with_scratch(&S, 4, |outer| {
            outer.fill(1);
            let inner = with_scratch(&S, 8, |inner| {
                inner.fill(2);
                inner.iter().map(|v| u32::from(*v)).sum::<u32>()
            });
            inner + outer.iter().map(|v| u32::from(*v)).sum::<u32>()
        });
        assert_eq!(total, 20);
    }
}
