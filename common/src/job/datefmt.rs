//! Date patterns in Java's `SimpleDateFormat` notation, as DataX jobs carry them
//! (`yyyy-MM-dd HH:mm:ss`), translated into chrono's format once, when the job is parsed.
//!
//! A pattern with a letter Ferry does not know, or one chrono cannot print, is refused with the
//! JSON path of the setting, so no formatting error can surface in the middle of a run.

use serde::{Deserialize, Serialize};

/// A translated pattern and what it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatePattern {
    /// The pattern as written in the job.
    java: String,
    /// The same pattern in chrono's `strftime` notation.
    chrono: String,
    /// It shows a calendar date (year, month or day).
    pub has_date: bool,
    /// It shows a time of day.
    pub has_time: bool,
    /// It shows a UTC offset.
    pub has_offset: bool,
}

impl DatePattern {
    /// Translates a Java pattern; the error names the letter or text it cannot take.
    pub fn parse(java: &str) -> Result<Self, String> {
        let mut out = DatePattern {
            java: java.to_string(),
            chrono: String::new(),
            has_date: false,
            has_time: false,
            has_offset: false,
        };
        let chars: Vec<char> = java.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // 'literal text', with '' standing for one quote.
                let mut j = i + 1;
                if chars.get(j) == Some(&'\'') {
                    out.chrono.push('\'');
                    i = j + 1;
                    continue;
                }
                loop {
                    match chars.get(j) {
                        None => return Err(format!("unclosed quote in date pattern \"{java}\"")),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            out.chrono.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&other) => {
                            push_literal(&mut out.chrono, other);
                            j += 1;
                        }
                    }
                }
                i = j + 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                push_literal(&mut out.chrono, c);
                i += 1;
                continue;
            }
            let run = chars[i..].iter().take_while(|&&x| x == c).count();
            let item = match (c, run) {
                ('y', 2) => "%y",
                ('y', _) => "%Y",
                ('M', 1 | 2) => "%m",
                ('M', 3) => "%b",
                ('M', _) => "%B",
                ('d', 1 | 2) => "%d",
                ('H', 1 | 2) => "%H",
                ('h', 1 | 2) => "%I",
                ('m', 1 | 2) => "%M",
                ('s', 1 | 2) => "%S",
                ('S', 1..=3) => "%3f",
                ('S', 6) => "%6f",
                ('S', 9) => "%9f",
                ('a', 1) => "%p",
                ('E', 1..=3) => "%a",
                ('E', _) => "%A",
                ('Z', _) => "%z",
                ('X', 1 | 2) => "%z",
                ('X', 3) => "%:z",
                _ => {
                    return Err(format!(
                        "date pattern \"{java}\": \"{}\" is not supported; use letters of y M d H h m s S a E Z X, quote literal text with '",
                        chars[i..i + run].iter().collect::<String>()
                    ));
                }
            };
            match c {
                'y' | 'M' | 'd' | 'E' => out.has_date = true,
                'H' | 'h' | 'm' | 's' | 'S' | 'a' => out.has_time = true,
                _ => out.has_offset = true,
            }
            out.chrono.push_str(item);
            i += run;
        }
        if !out.has_date && !out.has_time {
            return Err(format!(
                "date pattern \"{java}\" shows neither a date nor a time"
            ));
        }
        // chrono reports a bad item only when formatting; check every item now.
        if chrono::format::StrftimeItems::new(&out.chrono)
            .any(|item| matches!(item, chrono::format::Item::Error))
        {
            return Err(format!("date pattern \"{java}\" cannot be used"));
        }
        Ok(out)
    }

    /// The pattern as the job wrote it.
    pub fn java(&self) -> &str {
        &self.java
    }

    /// The pattern in chrono's notation.
    pub fn chrono(&self) -> &str {
        &self.chrono
    }
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

impl TryFrom<String> for DatePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        DatePattern::parse(&s)
    }
}

impl From<DatePattern> for String {
    fn from(p: DatePattern) -> String {
        p.java
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_translate() -> Result<(), String> {
        let p = DatePattern::parse("yyyy-MM-dd HH:mm:ss")?;
        assert_eq!(p.chrono(), "%Y-%m-%d %H:%M:%S");
        assert!(p.has_date && p.has_time && !p.has_offset);
        assert_eq!(DatePattern::parse("yyyyMMdd")?.chrono(), "%Y%m%d");
        assert_eq!(
            DatePattern::parse("yyyy-MM-dd'T'HH:mm:ss.SSSXXX")?.chrono(),
            "%Y-%m-%dT%H:%M:%S.%3f%:z"
        );
        assert_eq!(DatePattern::parse("HH:mm '100%'")?.chrono(), "%H:%M 100%%");
        Ok(())
    }

    #[test]
    fn unknown_letters_and_empty_patterns_are_refused() {
        for bad in ["yyyy-ww", "GGGG", "'open", "---", ""] {
            assert!(DatePattern::parse(bad).is_err(), "{bad}");
        }
    }
}
