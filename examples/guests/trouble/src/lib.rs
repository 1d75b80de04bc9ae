//! `trouble`: an HTTP component that misbehaves on request, to show that the node stops the
//! request and nothing else:
//!
//! - `/spin`: loop forever;
//! - `/membomb`: allocate without end;
//! - `/stack`: recurse without end;
//! - `/file`: read `/etc/passwd` (no directory is granted);
//! - `/unready`: answer 503 (a readiness probe that never passes);
//! - `/hold/<MiB>/<ms>`: take that much memory, touched, and keep it that long (to show that
//!   an instance's requests in flight share its memory limit);
//! - anything else: answer `ok`.

use std::hint::black_box;

use shoal_guest::{Request, Response};

fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX { 0 } else { recurse(depth + 1).wrapping_add(black_box(1)) }
}

fn hold(path: &str) -> Response {
    let mut parts = path.trim_start_matches("/hold/").split('/').map(|p| p.parse::<u64>());
    let (Some(Ok(mib)), Some(Ok(ms))) = (parts.next(), parts.next()) else {
        return Response::text(400, "expected /hold/<MiB>/<ms>\n");
    };
    let held = vec![1u8; (mib as usize) << 20];
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Response::text(200, format!("held {} MiB\n", black_box(&held).len() >> 20))
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
        path if path.starts_with("/hold/") => hold(path),
        _ => Response::text(200, "ok\n"),
    }
}

shoal_guest::http_handler!(trouble);
