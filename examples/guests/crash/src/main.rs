//! `crash`: prints a line, waits `CRASH_AFTER_MS` (default 200) milliseconds, then traps.

use shoal_guest::config;

fn main() {
    let after: u64 = config::env_or("CRASH_AFTER_MS", "200").parse().unwrap_or(200);
    println!("crash: up, trapping in {after} ms");
    std::thread::sleep(std::time::Duration::from_millis(after));
    // An explicit trap (not a panic's exit code): what a bug in the guest looks like to the host.
    core::arch::wasm32::unreachable()
}
