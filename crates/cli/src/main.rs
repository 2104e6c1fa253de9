//! The manabi command (being written).
fn main() {
    eprintln!("manabi: not yet");
    std::process::exit(2);
}
