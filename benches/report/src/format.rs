//! Number formatting shared by the report's tables and the charts' axes:
//! rates as `12.3k`, durations as `1.23 µs`, percentages with as many
//! decimals as small values need.

/// What a table cell shows for a value that was not measured.
pub const NA: &str = "–";

/// `v` with `digits` significant digits (at least one), without exponent:
/// `sig(0.012345, 3)` is `0.0123`, `sig(12345.0, 3)` is `12345`.
pub fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return NA.to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let magnitude = v.abs().log10().floor() as i64;
    let decimals = (digits.max(1) as i64 - 1 - magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Drops the zeros after a decimal point, and the point itself if nothing
/// is left after it: `10.50` → `10.5`, `25.0` → `25`.
pub fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

/// A value with an SI suffix (k, M, G) and three significant digits,
/// trailing zeros dropped: `950`, `12.3k`, `100k`, `1.5M`.
pub fn si(v: f64) -> String {
    if !v.is_finite() {
        return NA.to_owned();
    }
    const SUFFIXES: [(f64, &str); 4] = [(1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")];
    for (i, &(scale, suffix)) in SUFFIXES.iter().enumerate() {
        if v.abs() >= scale || i == SUFFIXES.len() - 1 {
            let text = trim_zeros(&sig(v / scale, 3));
            // 999.96k rounds to "1000k": say 1M instead.
            if i > 0 && text.trim_start_matches('-').parse::<f64>().unwrap_or(0.0) >= 1000.0 {
                return format!(
                    "{}{}",
                    trim_zeros(&sig(v / SUFFIXES[i - 1].0, 3)),
                    SUFFIXES[i - 1].1
                );
            }
            return format!("{text}{suffix}");
        }
    }
    unreachable!("the last suffix takes every value")
}

/// A rate in lines/s, without unit: [`si`].
pub fn rate(lps: f64) -> String {
    si(lps)
}

/// An optional rate, [`NA`] when absent.
pub fn opt_rate(lps: Option<f64>) -> String {
    lps.map_or_else(|| NA.to_owned(), rate)
}

/// A percentage without the `%` sign: `0`, `0.004`, `0.12`, `3.45`, `42.1`.
pub fn pct(v: f64) -> String {
    if !v.is_finite() {
        NA.to_owned()
    } else if v == 0.0 {
        "0".to_owned()
    } else if v.abs() < 0.01 {
        format!("{v:.3}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// An optional percentage, [`NA`] when absent.
pub fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| NA.to_owned(), pct)
}

/// Milliseconds without unit: two decimals below 10, one below 100.
pub fn ms(v: f64) -> String {
    if !v.is_finite() {
        NA.to_owned()
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Optional milliseconds, [`NA`] when absent.
pub fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| NA.to_owned(), ms)
}

/// An optional value with three significant digits, [`NA`] when absent.
pub fn opt_sig3(v: Option<f64>) -> String {
    v.map_or_else(|| NA.to_owned(), |v| sig(v, 3))
}

/// A ratio: `6.0×`, `12×`.
pub fn ratio(v: f64) -> String {
    if !v.is_finite() {
        NA.to_owned()
    } else if v.abs() < 10.0 {
        format!("{v:.1}×")
    } else {
        format!("{v:.0}×")
    }
}

/// A duration given in nanoseconds, with the unit that suits it:
/// `850 ns`, `1.23 µs`, `45.6 ms`, `2.00 s`.
pub fn nanos(ns: f64) -> String {
    if !ns.is_finite() {
        return NA.to_owned();
    }
    let (value, unit) = if ns.abs() < 1e3 {
        (ns, "ns")
    } else if ns.abs() < 1e6 {
        (ns / 1e3, "µs")
    } else if ns.abs() < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", sig(value, 3))
}

/// Bytes per second, binary (`KiB/s`, `MiB/s`, `GiB/s`) or decimal
/// (`kB/s`, `MB/s`, `GB/s`) units.
pub fn bytes_per_s(v: f64, decimal: bool) -> String {
    let (base, units): (f64, [&str; 4]) = if decimal {
        (1000.0, ["B/s", "kB/s", "MB/s", "GB/s"])
    } else {
        (1024.0, ["B/s", "KiB/s", "MiB/s", "GiB/s"])
    };
    let mut value = v;
    let mut unit = 0;
    while value.abs() >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    format!("{} {}", sig(value, 3), units[unit])
}

/// Escapes what would break a markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(sig(0.012345, 3), "0.0123");
        assert_eq!(sig(12345.0, 3), "12345");
        assert_eq!(sig(1.5, 3), "1.50");
        assert_eq!(sig(0.0, 3), "0");
        assert_eq!(sig(f64::NAN, 3), NA);
    }

    #[test]
    fn rates() {
        assert_eq!(rate(950.0), "950");
        assert_eq!(rate(12_345.0), "12.3k");
        assert_eq!(rate(10_000.0), "10k");
        assert_eq!(rate(25_000.0), "25k");
        assert_eq!(rate(100_000.0), "100k");
        assert_eq!(rate(1_500_000.0), "1.5M");
        assert_eq!(rate(999_960.0), "1M");
        assert_eq!(rate(0.0), "0");
        assert_eq!(opt_rate(None), NA);
    }

    #[test]
    fn percentages_and_times() {
        assert_eq!(pct(0.0), "0");
        assert_eq!(pct(0.004), "0.004");
        assert_eq!(pct(0.126), "0.13");
        assert_eq!(pct(42.12), "42.1");
        assert_eq!(ms(1.234), "1.23");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(123.4), "123");
        assert_eq!(nanos(850.0), "850 ns");
        assert_eq!(nanos(1234.0), "1.23 µs");
        assert_eq!(nanos(2e9), "2.00 s");
        assert_eq!(ratio(6.04), "6.0×");
        assert_eq!(ratio(12.4), "12×");
        assert_eq!(bytes_per_s(3.0 * 1024.0 * 1024.0, false), "3.00 MiB/s");
        assert_eq!(bytes_per_s(1500.0, true), "1.50 kB/s");
        assert_eq!(cell("a|b"), "a\\|b");
    }
}
