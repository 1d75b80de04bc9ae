//! Leveled log lines on stderr (`INFO message`), which the node keeps per instance and
//! `shoal logs` shows.

/// Writes one line at `level`.
pub fn write(level: &str, message: &str) {
    eprintln!("{level} {message}");
}

/// Logs at INFO.
pub fn info(message: &str) {
    write("INFO", message);
}

/// Logs at WARN.
pub fn warn(message: &str) {
    write("WARN", message);
}

/// Logs at ERROR.
pub fn error(message: &str) {
    write("ERROR", message);
}
