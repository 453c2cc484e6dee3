//! The official run name and output folder (SPEC §6), with floats printed as Python's `str()`.

/// Python's `str(float)`: shortest round-trip digits, positional for exponents −4..16,
/// otherwise scientific with at least two exponent digits (`1e-05`).
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{x:e}"); // shortest digits, e.g. "1.5e-5"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

pub fn python_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        for (x, s) in [
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (0.05, "0.05"),
            (1.0, "1.0"),
            (3.0, "3.0"),
            (0.1, "0.1"),
            (0.07, "0.07"),
            (1e16, "1e+16"),
            (123.25, "123.25"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(x), s, "{x}");
        }
    }
}
