//! manabi-optim (being written).
#![no_std]
