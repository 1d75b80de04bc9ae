//! Durations given as periods (`--heartbeat`, `--node-grace`, `--controller-resync`): written as
//! the CLI takes every duration (`500ms`, `10s`), and never zero, since a zero period is a loop
//! that spins (a heartbeat without pause, every node always dead, a resync on every wake-up).

use std::time::Duration;

/// Parses a period of at least a millisecond.
pub fn parse(input: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(input).map_err(|e| e.to_string())?;
    if period < Duration::from_millis(1) {
        return Err(format!("{input:?} is no period: give at least 1ms"));
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_duration_of_at_least_a_millisecond() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert!(parse("0s").unwrap_err().contains("at least 1ms"));
        assert!(parse("soon").is_err());
    }
}
