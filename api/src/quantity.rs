//! Typed resource quantities: memory in bytes (`64Mi`, `1Gi`, `512k`) and CPU in millicores
//! (`250m`, `2`, `0.5`), written the way Kubernetes users already write them.
//!
//! Both parse in their `Deserialize` impls, so a bad value in a manifest is reported with the
//! file, line, column and field path of the value, like every other manifest error.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Memory(pub u64);

/// An amount of CPU, in millicores (1000 = one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cpu(pub u64);

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} quantity {input:?}: {reason}")]
pub struct QuantityError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

const MEMORY_SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

/// The most memory a quantity may say (1 PiB): sums of many stay far from overflowing.
pub const MAX_MEMORY: u64 = 1 << 50;
/// The most CPU a quantity may say, in millicores (a million cores).
pub const MAX_CPU_MILLI: u64 = 1_000_000_000;

impl FromStr for Memory {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| QuantityError { what: "memory", input: input.to_owned(), reason };
        let (digits, multiplier) = MEMORY_SUFFIXES
            .iter()
            .find_map(|(suffix, m)| input.strip_suffix(suffix).map(|d| (d, *m)))
            .unwrap_or((input, 1));
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("expected a whole number with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T"));
        }
        let value: u64 = digits.parse().map_err(|_| err("number too large"))?;
        value
            .checked_mul(multiplier)
            .filter(|bytes| *bytes <= MAX_MEMORY)
            .map(Memory)
            .ok_or_else(|| err("more than the most, 1Pi"))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (suffix, m) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if bytes >= m && bytes.is_multiple_of(m) {
                return write!(f, "{}{suffix}", bytes / m);
            }
        }
        write!(f, "{bytes}")
    }
}

impl FromStr for Cpu {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| QuantityError { what: "cpu", input: input.to_owned(), reason };
        const SHAPE: &str = "expected millicores like 250m, or cores like 1 or 0.5";
        if let Some(milli) = input.strip_suffix('m') {
            if milli.is_empty() || !milli.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(SHAPE));
            }
            let milli: u64 = milli.parse().map_err(|_| err("number too large"))?;
            return (milli <= MAX_CPU_MILLI)
                .then_some(Cpu(milli))
                .ok_or_else(|| err("more than the most, 1000000 cores"));
        }
        let (whole, frac) = input.split_once('.').unwrap_or((input, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(frac) {
            return Err(err(SHAPE));
        }
        if frac.len() > 3 {
            return Err(err("precision finer than 1m (0.001 cores)"));
        }
        let whole: u64 = whole.parse().map_err(|_| err("number too large"))?;
        let frac_milli: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
        whole
            .checked_mul(1000)
            .and_then(|m| m.checked_add(frac_milli))
            .filter(|milli| *milli <= MAX_CPU_MILLI)
            .map(Cpu)
            .ok_or_else(|| err("more than the most, 1000000 cores"))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}m", self.0) }
    }
}

/// Serde support shared by both quantities: a string in the usual notation, or a plain
/// non-negative integer (bytes for memory, cores for CPU).
macro_rules! quantity_serde {
    ($ty:ident, $expecting:literal, $from_int:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        let from_int: fn(u64) -> Option<$ty> = $from_int;
                        from_int(v).ok_or_else(|| E::custom("number too large"))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        u64::try_from(v)
                            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                            .and_then(|v| self.visit_u64(v))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

quantity_serde!(Memory, "a memory quantity such as 64Mi or 1Gi", |v| (v <= MAX_MEMORY).then_some(Memory(v)));
quantity_serde!(Cpu, "a cpu quantity such as 250m or 1", |v| v
    .checked_mul(1000)
    .filter(|m| *m <= MAX_CPU_MILLI)
    .map(Cpu));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_parses_binary_and_decimal_suffixes() {
        assert_eq!("64Mi".parse::<Memory>().unwrap(), Memory(64 << 20));
        assert_eq!("1Gi".parse::<Memory>().unwrap(), Memory(1 << 30));
        assert_eq!("512k".parse::<Memory>().unwrap(), Memory(512_000));
        assert_eq!("1000".parse::<Memory>().unwrap(), Memory(1000));
        assert_eq!(Memory(64 << 20).to_string(), "64Mi");
        assert_eq!(Memory(1500).to_string(), "1500");
    }

    #[test]
    fn memory_rejects_garbage_with_reason() {
        let err = "64Mx".parse::<Memory>().unwrap_err().to_string();
        assert!(err.starts_with("invalid memory quantity \"64Mx\""), "{err}");
        assert!("".parse::<Memory>().is_err());
        assert!("-1Mi".parse::<Memory>().is_err());
        assert!("99999999999999Ti".parse::<Memory>().is_err());
        assert!("1025Ti".parse::<Memory>().unwrap_err().to_string().contains("the most, 1Pi"));
        assert_eq!("1024Ti".parse::<Memory>().unwrap(), Memory(MAX_MEMORY));
    }

    #[test]
    fn cpu_parses_millicores_and_cores() {
        assert_eq!("250m".parse::<Cpu>().unwrap(), Cpu(250));
        assert_eq!("2".parse::<Cpu>().unwrap(), Cpu(2000));
        assert_eq!("0.5".parse::<Cpu>().unwrap(), Cpu(500));
        assert_eq!("1.25".parse::<Cpu>().unwrap(), Cpu(1250));
        assert_eq!(Cpu(250).to_string(), "250m");
        assert_eq!(Cpu(2000).to_string(), "2");
        assert!("0.0001".parse::<Cpu>().is_err());
        assert!("m".parse::<Cpu>().is_err());
        assert!("abc".parse::<Cpu>().is_err());
        assert!("1000001".parse::<Cpu>().is_err());
        assert!("1000000001m".parse::<Cpu>().is_err());
    }

    #[test]
    fn quantities_deserialize_from_strings_and_integers() {
        let m: Memory = serde_json::from_str("\"1Ki\"").unwrap();
        assert_eq!(m, Memory(1024));
        let c: Cpu = serde_json::from_str("2").unwrap();
        assert_eq!(c, Cpu(2000));
        assert!(serde_json::from_str::<Cpu>("-2").is_err());
    }
}
