//! `hello`: answers every request with a greeting, the path, and who answered.

use shoal_guest::{Request, Response, config};

fn hello(request: Request) -> Response {
    let greeting = config::env_or("GREETING", "hello");
    let version = config::env_or("VERSION", "v1");
    Response::text(200, format!("{greeting} from shoal ({version}): {} {}\n", request.method, request.path))
        .with_header("x-shoal-version", &version)
}

shoal_guest::http_handler!(hello);
