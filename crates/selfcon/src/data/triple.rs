//! `--mean` / `--std` of an image folder: three numbers, written the way the official scripts
//! and Python users write them — "(a, b, c)", "[a, b, c]" or "a,b,c".

/// The three finite numbers of `text`, or what is wrong with it.
pub fn parse_triple(text: &str) -> Result<[f32; 3], String> {
    let bad = || format!("'{text}' is not three numbers");
    let trimmed = text.trim();
    // At most one pair of brackets, and a matching one: "(a, b, c]" is a typo, not a triple.
    let inner = match trimmed.chars().next() {
        Some(open @ ('(' | '[')) => {
            let close = if open == '(' { ')' } else { ']' };
            trimmed[1..].strip_suffix(close).ok_or_else(bad)?
        }
        _ => trimmed,
    };
    let values: Vec<f32> = inner
        .split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|x| x.is_finite()).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    <[f32; 3]>::try_from(values).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::parse_triple;

    #[test]
    fn the_official_spellings_and_nothing_else() {
        for text in ["(0.5, 0.25, 0.125)", "[0.5,0.25,0.125]", "0.5,0.25,0.125", " ( 0.5 ,0.25, 0.125 ) "] {
            assert_eq!(parse_triple(text), Ok([0.5, 0.25, 0.125]), "{text}");
        }
        for text in [
            "",
            "(1, 2)",
            "1,2,3,4",
            "a,b,c",
            "(1, nan, 2)",
            "(1, inf, 2)",
            "((((",
            ",",
            "(1, 2, 3]",
            "[1, 2, 3)",
            "((1, 2, 3))",
            "1, 2, 3)",
        ] {
            assert!(parse_triple(text).unwrap_err().contains("is not three numbers"), "{text}");
        }
    }
}
