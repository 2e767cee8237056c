//! Skeleton of the optimize crate. Nothing is implemented yet: quantization and export passes
//! (TFLite, Triton, TorchServe, BentoML) arrive with their own issue. This crate exports no API.
