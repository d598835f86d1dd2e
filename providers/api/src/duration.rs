//! The one duration syntax of anycloud, for config values and flags alike: a whole number
//! with `s`, `m` or `h` (`60s`, `5m`, `1h`). A number without a unit is refused (`5` could
//! mean seconds or minutes; the reader of a config should not have to guess); `0` alone is
//! the same in every unit.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{t}' is not a duration like 60s, 5m or 1h"))?;
    let mult = match unit {
        "" if n == 0 => 1,
        "" => return Err(no_unit(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("'{t}' has unit '{unit}'; use s, m or h (e.g. 60s)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{t}' is too long"))
}

/// `secs` as a config would write it: `10m`, `2h`, `90s` (the largest unit that divides it).
pub fn text(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why a number without a unit is refused.
pub fn no_unit(n: u64) -> String {
    format!("'{n}' has no unit; write {n}s, {n}m or {n}h")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse("45").unwrap_err(),
            "'45' has no unit; write 45s, 45m or 45h"
        );
        assert!(parse("5d").unwrap_err().contains("unit 'd'"));
        assert!(parse("soon").unwrap_err().contains("not a duration"));
        assert!(parse("99999999999999999999h").is_err());
        for secs in [0, 90, 600, 7200] {
            assert_eq!(parse(&text(secs)), Ok(Duration::from_secs(secs)));
        }
        assert_eq!(text(600), "10m");
    }
}
