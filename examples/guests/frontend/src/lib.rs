//! `frontend`: the shop example's front. `/` asks the `api` Service (`API_URL`, by default
//! `http://api.shop.svc.cluster.local/`) and wraps its answer; `/fetch/<host>/<path>` calls
//! `http://<host>/<path>`, which shows what the cluster lets a guest call and what it refuses.

use shoal_guest::{Request, Response, config};

fn relay(url: &str) -> Response {
    match shoal_guest::get(url) {
        Ok(answer) => Response::text(answer.status, format!("frontend got: {}", answer.body_text()))
            .with_header("x-upstream-status", &answer.status.to_string()),
        Err(e) => Response::text(502, format!("frontend: {e}\n")),
    }
}

fn frontend(request: Request) -> Response {
    if let Some(rest) = request.path.strip_prefix("/fetch/") {
        return relay(&format!("http://{rest}"));
    }
    relay(&config::env_or("API_URL", "http://api.shop.svc.cluster.local/"))
}

shoal_guest::http_handler!(frontend);
