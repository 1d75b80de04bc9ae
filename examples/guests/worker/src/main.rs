//! `worker`: logs a line every `INTERVAL_MS` (default 1000) milliseconds, `COUNT` times (default:
//! forever), then exits 0.

use shoal_guest::{config, log};

fn main() {
    let interval: u64 = config::env_or("INTERVAL_MS", "1000").parse().unwrap_or(1000);
    let count: Option<u64> = config::env("COUNT").and_then(|c| c.parse().ok());
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        n += 1;
        println!("tick {n}");
        log::info(&format!("worker tick {n}"));
        std::thread::sleep(std::time::Duration::from_millis(interval));
    }
}
