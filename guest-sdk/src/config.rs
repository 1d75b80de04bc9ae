//! Configuration from the environment: only the variables the workload's spec lists are there.

/// The value of variable `name`, if the spec sets it.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of `name`, or `default` when it is not set.
pub fn env_or(name: &str, default: &str) -> String {
    env(name).unwrap_or_else(|| default.to_owned())
}
