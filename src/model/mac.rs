//! The normalized MAC address type shared by every component.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit MAC address, always displayed as lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected 00:15:65:aa:bb:cc, 00-15-65-aa-bb-cc or 001565aabbcc"
)]
pub struct MacParseError {
    input: String,
}

impl Mac {
    /// Builds a MAC from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Lower-case hex without separators (`001565aabbcc`), the form phones put in file names.
    pub fn to_bare(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    match pair {
        [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
        _ => None,
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let bytes = s.as_bytes();
        // Only one separator style per address: a mix such as `00:15-65…` is a typo
        // more often than a MAC, and accepting it would hide the typo.
        let stride = match bytes.len() {
            12 => 2,
            17 if bytes[2] == b':' || bytes[2] == b'-' => 3,
            _ => return Err(err()),
        };
        let mut octets = [0u8; 6];
        for (i, slot) in octets.iter_mut().enumerate() {
            let at = i * stride;
            if stride == 3 && i > 0 && bytes[at - 1] != bytes[2] {
                return Err(err());
            }
            *slot = hex_pair(&bytes[at..at + 2]).ok_or_else(err)?;
        }
        Ok(Mac(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than a `String`: every device and lease record holds a MAC, and
        // a million of them are decoded at start-up.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Mac;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Mac, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: [u8; 6] = [0x00, 0x15, 0x65, 0xaa, 0xbb, 0xcc];

    #[test]
    fn accepts_the_three_forms_in_any_case() {
        for input in [
            "00:15:65:AA:bb:cc",
            "00:15:65:aa:bb:cc",
            "00:15:65:AA:BB:CC",
            "001565aabbcc",
            "001565AABBCC",
            "00-15-65-aa-bb-cc",
            "00-15-65-AA-BB-CC",
        ] {
            let mac: Mac = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(mac.octets(), EXPECTED, "{input}");
            assert_eq!(mac.to_string(), "00:15:65:aa:bb:cc", "{input}");
            assert_eq!(mac.to_bare(), "001565aabbcc", "{input}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for input in [
            "",
            "00:15:65:aa:bb",
            "00:15:65:aa:bb:cc:dd",
            "00:15:65:aa:bb:c",
            "00:15:65:aa:bb:ccc",
            "0:15:65:aa:bb:cc:0",
            "00:15-65:aa:bb:cc",
            "00.15.65.aa.bb.cc",
            "0015.65aa.bbcc",
            "001565aabbc",
            "001565aabbccd",
            "00156gaabbcc",
            "00:15:65:aa:bb:zz",
            "+0:15:65:aa:bb:cc",
            " 00:15:65:aa:bb:cc",
            "00:15:65:aa:bb:cc ",
            "00:15:65:aa:bb:c\u{e9}",
            "001565aabb\u{e9}",
            "00::15:65:aa:bb:c",
        ] {
            assert!(
                input.parse::<Mac>().is_err(),
                "{input:?} should be rejected"
            );
        }
    }

    #[test]
    fn serde_round_trip_uses_the_normal_form() {
        let mac: Mac = serde_json::from_str("\"00-15-65-AA-BB-CC\"").unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"00:15:65:aa:bb:cc\""
        );
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
