//! Deserializing strings that must pass a check, with the check run *inside* the visitor so that
//! the YAML parser attaches the value's line and column to the error (an error returned after
//! deserializing would carry no location).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Deserializes a string and converts it with `check`, whose error becomes the serde error.
pub(crate) fn deserialize_checked_str<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct V<T, E>(&'static str, fn(&str) -> Result<T, E>, PhantomData<T>);
    impl<T, E: fmt::Display> Visitor<'_> for V<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
            (self.1)(v).map_err(Er::custom)
        }
    }
    d.deserialize_str(V(expecting, check, PhantomData))
}
