//! Time-zone facts for templates, read from the system's tzdata (`/usr/share/zoneinfo`).

use std::path::Path;

use serde::Serialize;

/// What vendors' formats need of a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TzInfo {
    /// POSIX TZ rule, `CET-1CEST,M3.5.0,M10.5.0/3`.
    pub posix: String,
    /// Standard-time offset east of UTC, in minutes.
    pub utc_offset_minutes: i32,
    /// The same as `+01:00`.
    pub utc_offset: String,
}

const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Looks `name` (IANA, `Europe/Paris`) up in the system tzdata; `None` when unknown.
pub fn lookup(name: &str) -> Option<TzInfo> {
    lookup_in(Path::new(ZONEINFO), name)
}

fn lookup_in(root: &Path, name: &str) -> Option<TzInfo> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_+-".contains(&c));
    if !valid {
        return None;
    }
    let bytes = std::fs::read(root.join(name)).ok()?;
    if !bytes.starts_with(b"TZif") {
        return None;
    }
    // TZif version 2+ files end with "\n<POSIX TZ>\n".
    let body = bytes.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n')? + 1;
    let posix = std::str::from_utf8(&body[start..]).ok()?;
    if posix.is_empty() || !posix.bytes().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let minutes = std_offset_minutes(posix)?;
    let sign = if minutes < 0 { '-' } else { '+' };
    Some(TzInfo {
        posix: posix.to_owned(),
        utc_offset_minutes: minutes,
        utc_offset: format!("{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60),
    })
}

/// Standard offset east of UTC from a POSIX TZ rule (whose offsets count west).
fn std_offset_minutes(posix: &str) -> Option<i32> {
    let rest = if let Some(quoted) = posix.strip_prefix('<') {
        &quoted[quoted.find('>')? + 1..]
    } else {
        posix.trim_start_matches(|c: char| c.is_ascii_alphabetic())
    };
    let (sign, rest) = match rest.as_bytes().first()? {
        b'-' => (-1, &rest[1..]),
        b'+' => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split(':').map(|p| p.parse::<i32>());
    let hours = parts.next()?.ok()?;
    let minutes = parts.next().transpose().ok()?.unwrap_or(0);
    if !(0..=24).contains(&hours) || !(0..60).contains(&minutes) {
        return None;
    }
    Some(-sign * (hours * 60 + minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_offsets() {
        assert_eq!(std_offset_minutes("CET-1CEST,M3.5.0,M10.5.0/3"), Some(60));
        assert_eq!(std_offset_minutes("EST5EDT,M3.2.0,M11.1.0"), Some(-300));
        assert_eq!(std_offset_minutes("<+0530>-5:30"), Some(330));
        assert_eq!(std_offset_minutes("UTC0"), Some(0));
        assert_eq!(std_offset_minutes("<-03>3"), Some(-180));
        assert_eq!(std_offset_minutes("CET"), None);
    }

    #[test]
    fn hostile_names_are_not_looked_up() {
        for name in [
            "../../etc/passwd",
            "/etc/passwd",
            "Europe/../../x",
            "Europe/Paris\0",
            "",
            "a b",
        ] {
            assert_eq!(lookup(name), None, "{name:?}");
        }
    }

    #[test]
    fn reads_a_tzif_footer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Test")).unwrap();
        std::fs::write(dir.path().join("Test/Zone"), b"TZif2\0\0binary\nIST-5:30\n").unwrap();
        std::fs::write(dir.path().join("Test/NotTzif"), b"hello\nCET-1\n").unwrap();
        let info = lookup_in(dir.path(), "Test/Zone").unwrap();
        assert_eq!(info.posix, "IST-5:30");
        assert_eq!(info.utc_offset_minutes, 330);
        assert_eq!(info.utc_offset, "+05:30");
        assert_eq!(lookup_in(dir.path(), "Test/NotTzif"), None);
        assert_eq!(lookup_in(dir.path(), "Test/Missing"), None);
    }
}
