//! manabi-data (being written).
