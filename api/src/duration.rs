//! Durations in specs, written as the CLI takes them: `500ms`, `5s`, `2m`, `1h30m`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time in a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// Whether it lies within `min..=max`; else a message saying so, for a field error.
    pub fn within(self, min: std::time::Duration, max: std::time::Duration) -> Result<(), String> {
        if self.0 < min || self.0 > max {
            let f = humantime::format_duration;
            return Err(format!("{}: from {} to {}", f(self.0), f(min), f(max)));
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Duration)
            .map_err(|e| format!("{s:?} is not a duration such as 500ms, 5s, 2m or 1h: {e}"))
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::checked::deserialize_checked_str(d, "a duration such as 5s", str::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_cli_writes_them_and_round_trip() {
        assert_eq!("5s".parse::<Duration>().unwrap(), Duration::from_secs(5));
        assert_eq!("1m30s".parse::<Duration>().unwrap(), Duration::from_secs(90));
        assert_eq!("250ms".parse::<Duration>().unwrap().0, std::time::Duration::from_millis(250));
        assert!("5".parse::<Duration>().unwrap_err().contains("not a duration"));
        let json = serde_json::to_string(&Duration::from_secs(90)).unwrap();
        assert_eq!(serde_json::from_str::<Duration>(&json).unwrap(), Duration::from_secs(90));
        let bound = Duration::from_secs(2).within(std::time::Duration::ZERO, std::time::Duration::from_secs(1));
        assert!(bound.unwrap_err().contains("from 0s to 1s"));
    }
}
