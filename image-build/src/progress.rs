//! Progress lines for long steps: `==> what` and, when done, how long it took.

use std::time::Instant;

pub fn step(message: &str) {
    eprintln!("\x1b[1m==>\x1b[0m {message}");
}

/// Runs `f` between a start line and a line with its duration.
pub fn timed<T>(message: &str, f: impl FnOnce() -> T) -> T {
    step(&format!("{message} ..."));
    let start = Instant::now();
    let result = f();
    eprintln!("    done in {:.1}s", start.elapsed().as_secs_f64());
    result
}
