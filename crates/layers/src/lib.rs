//! manabi-layers (being written).
#![no_std]
