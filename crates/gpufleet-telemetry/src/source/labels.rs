//! The `labels_raw` column of the DCGM long CSV: Prometheus-style `k="v"` pairs separated by
//! commas (optionally inside `{}`), values with `\"`, `\\` and `\n` escapes.

/// Parses `labels_raw` (already CSV-unescaped) into `(key, value)` pairs in file order.
/// The error says where and what is wrong.
pub(crate) fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut t = s.trim();
    if let Some(inner) = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        t = inner.trim();
    }
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == key_start || b[key_start].is_ascii_digit() {
            return Err(format!("labels_raw is malformed at byte {key_start}: expected a label name like key=\"value\""));
        }
        let key = &t[key_start..i];
        if b.get(i) != Some(&b'=') {
            return Err(format!(
                "labels_raw is malformed at byte {i}: expected '=' after label {key}"
            ));
        }
        i += 1;
        if b.get(i) != Some(&b'"') {
            return Err(format!("labels_raw is malformed at byte {i}: the value of label {key} must be in double quotes"));
        }
        i += 1;
        let mut value = String::new();
        let mut run = i;
        loop {
            match b.get(i) {
                None => {
                    return Err(format!(
                        "labels_raw is malformed: the value of label {key} has no closing quote"
                    ))
                }
                Some(b'"') => {
                    value.push_str(&t[run..i]);
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    value.push_str(&t[run..i]);
                    match b.get(i + 1) {
                        Some(b'n') => value.push('\n'),
                        Some(b'"') => value.push('"'),
                        Some(b'\\') => value.push('\\'),
                        _ => {
                            return Err(format!("labels_raw is malformed at byte {i}: unknown escape in the value of label {key}"))
                        }
                    }
                    i += 2;
                    run = i;
                }
                Some(_) => i += 1,
            }
        }
        out.push((key.to_owned(), value));
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => {
                return Err(format!(
                "labels_raw is malformed at byte {i}: expected ',' after the value of label {key}"
            ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_labels() {
        let l =
            parse_labels(r#"DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="h",gpu="0""#).unwrap();
        assert_eq!(
            l,
            vec![
                ("DCGM_FI_DRIVER_VERSION".into(), "535.129.03".into()),
                ("Hostname".into(), "h".into()),
                ("gpu".into(), "0".into())
            ]
        );
    }

    #[test]
    fn braces_escapes_and_empty() {
        assert_eq!(parse_labels("").unwrap(), vec![]);
        assert_eq!(
            parse_labels(r#"{a="x\"y\\z", b="é"}"#).unwrap(),
            vec![("a".into(), "x\"y\\z".into()), ("b".into(), "é".into())]
        );
        assert_eq!(
            parse_labels(r#"a="1","#).unwrap(),
            vec![("a".into(), "1".into())]
        );
    }

    #[test]
    fn malformed_says_where() {
        assert!(parse_labels("a=1").unwrap_err().contains("double quotes"));
        assert!(parse_labels(r#"a="1"#)
            .unwrap_err()
            .contains("no closing quote"));
        assert!(parse_labels(r#"a="1" b="2""#)
            .unwrap_err()
            .contains("expected ','"));
        assert!(parse_labels(r#"="1""#).unwrap_err().contains("label name"));
        assert!(parse_labels("justtext").unwrap_err().contains("'='"));
    }
}
