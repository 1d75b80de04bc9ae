//! Configuration: the environment (only the variables the workload's spec lists are there, its
//! own values and those it takes from Secrets and Configs), `wasi:config` (the spec's
//! `wasiConfig`), and files (the spec's `files`, read-only directories).

/// The value of variable `name`, if the spec sets it.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of `name`, or `default` when it is not set.
pub fn env_or(name: &str, default: &str) -> String {
    env(name).unwrap_or_else(|| default.to_owned())
}

/// The value of `key` in the workload's `wasiConfig`, read through `wasi:config/store`; `None`
/// when it has no such key (or outside a component).
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_family = "wasm")]
    {
        bindings::wasi::config::store::get(key).ok().flatten()
    }
    #[cfg(not(target_family = "wasm"))]
    {
        let _ = key;
        None
    }
}

/// Every key and value of the workload's `wasiConfig`.
pub fn get_all() -> Vec<(String, String)> {
    #[cfg(target_family = "wasm")]
    {
        bindings::wasi::config::store::get_all().unwrap_or_default()
    }
    #[cfg(not(target_family = "wasm"))]
    {
        Vec::new()
    }
}

/// The text of the file at `path` (e.g. `/etc/db/password`, in a directory the spec's `files`
/// grants), if it is there.
pub fn file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(target_family = "wasm")]
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "wasi:config/imports" });
}
