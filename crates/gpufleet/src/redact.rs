//! Hiding secrets before text is printed or logged: passwords in URLs (Redis, PostgreSQL, any
//! `scheme://user:secret@host`), used by `config check`, start-up logs and error messages.

/// Hides passwords in URLs (`scheme://user:secret@host` → `scheme://user:***@host`) before a
/// configuration is printed or logged.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '/').unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => out.push_str(&format!("{}:***{}", &userinfo[..colon], &authority[at..])),
                    None => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_url_passwords_only() {
        assert_eq!(redact("broker = \"redis://:hunter2@10.0.0.1:6379\""), "broker = \"redis://:***@10.0.0.1:6379\"");
        assert_eq!(redact("postgres://gpu:s3cret@db/test and http://host/x"), "postgres://gpu:***@db/test and http://host/x");
        assert_eq!(redact("no urls here"), "no urls here");
    }
}
