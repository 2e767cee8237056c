//! Fuzz the `.npy` reader (`aq export --calibration`, `aq optimize quantize`). Model check:
//! any bytes give an array or an error, never a panic; an accepted array's values fill its
//! shape exactly, and writing it back reads back the same array.
#![no_main]

use aq_optimize::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = npy::read_f32(data) {
        let count: usize = array.shape.iter().product();
        assert_eq!(count, array.values.len());
        let again = npy::read_f32(&npy::write_f32(&array.shape, &array.values)).unwrap();
        assert_eq!(again.shape, array.shape);
        assert_eq!(again.values.len(), array.values.len());
        for (a, b) in again.values.iter().zip(&array.values) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
});
