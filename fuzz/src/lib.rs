//! Helpers shared by the fuzz targets (no fuzzing entry points here).

pub mod rfc6570;
