//! `settings`: answers with the values its spec gives it, so that a person (or a test) can see
//! where each comes from:
//! - `GET /env/NAME`: the environment variable `NAME`;
//! - `GET /config/KEY`: `KEY` through `wasi:config/store`;
//! - `GET /file/PATH`: the file at `/PATH` (in a directory the spec's `files` grants);
//! - `GET /`: a summary of the three (values that look secret are shown only by length).
//!
//! A value that is not there is a 404.

use shoal_guest::{Request, Response, config};

fn found(value: Option<String>) -> Response {
    match value {
        Some(value) => Response::text(200, value),
        None => Response::text(404, "not set\n"),
    }
}

fn settings(request: Request) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    if let Some(name) = path.strip_prefix("/env/") {
        return found(config::env(name));
    }
    if let Some(key) = path.strip_prefix("/config/") {
        return found(config::get(key));
    }
    if let Some(file) = path.strip_prefix("/file/") {
        return found(config::file(&format!("/{file}")));
    }
    let greeting = config::get("greeting").unwrap_or_else(|| "hello".into());
    let password = config::file("/etc/db/password").or_else(|| config::env("DB_PASSWORD"));
    let shown = password.map_or("none".to_owned(), |p| format!("{} characters", p.chars().count()));
    Response::text(200, format!("{greeting}; the database password has {shown}\n"))
}

shoal_guest::http_handler!(settings);
