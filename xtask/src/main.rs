//! manabi's task runner (placeholder while the tasks are written).
fn main() {}
