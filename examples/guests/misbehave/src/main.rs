//! `misbehave`: one command guest with many misdeeds, chosen by its first argument:
//!
//! - `spin`: loop forever, burning CPU;
//! - `membomb`: allocate without end;
//! - `stack`: recurse without end;
//! - `open PATH`: try to read a host file;
//! - `connect ADDR`: try to open a TCP connection;
//! - `env`: print every environment variable it can see;
//! - `exit N`: exit with code N.

use std::hint::black_box;

/// Recursion that keeps its state in wasm locals (not in linear memory), so that it is the
/// wasm stack that overflows.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX { 0 } else { recurse(depth + 1).wrapping_add(black_box(1)) }
}

/// Exits with `code` as it is: Rust's `std::process::exit` on wasip2 reports only success or
/// failure, `wasi:cli/exit.exit-with-code` the code itself.
fn exit(code: u8) -> ! {
    wasip2::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("spin") => {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        Some("membomb") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        Some("stack") => {
            println!("{}", recurse(0));
        }
        Some("open") => match std::fs::read_to_string(&args[2]) {
            Ok(text) => println!("read {} bytes", text.len()),
            Err(e) => {
                println!("open denied: {e}");
                exit(3);
            }
        },
        Some("connect") => match std::net::TcpStream::connect(&args[2]) {
            Ok(_) => println!("connected"),
            Err(e) => {
                println!("connect denied: {e}");
                exit(4);
            }
        },
        Some("env") => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        Some("exit") => exit(args[2].parse().unwrap_or(1)),
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
