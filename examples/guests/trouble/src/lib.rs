//! `trouble`: an HTTP component that misbehaves on request, to show that the node stops the
//! request and nothing else:
//!
//! - `/spin`: loop forever;
//! - `/membomb`: allocate without end;
//! - `/stack`: recurse without end;
//! - `/file`: read `/etc/passwd` (no directory is granted);
//! - `/unready`: answer 503 (a readiness probe that never passes);
//! - anything else: answer `ok`.

use std::hint::black_box;

use shoal_guest::{Request, Response};

fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX { 0 } else { recurse(depth + 1).wrapping_add(black_box(1)) }
}

fn trouble(request: Request) -> Response {
    match request.path.as_str() {
        "/spin" => {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        "/membomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "/stack" => Response::text(200, format!("{}\n", recurse(0))),
        "/file" => match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => Response::text(200, format!("read {} bytes\n", text.len())),
            Err(e) => Response::text(403, format!("open denied: {e}\n")),
        },
        "/unready" => Response::text(503, "not ready\n"),
        _ => Response::text(200, "ok\n"),
    }
}

shoal_guest::http_handler!(trouble);
