//! `mqtt://host:port` broker addresses.

/// Parses `mqtt://host:port` (or `tcp://`), port 1883 if absent, into host
/// and port; the error says what was wrong and what is expected.
pub fn parse(url: &str) -> Result<(String, u16), String> {
    let expected = "expected 'mqtt://host:port', for example 'mqtt://127.0.0.1:1883'";
    // Credentials never belong in a URL that reports, logs and error
    // messages repeat: refuse them, and never echo the secret.
    if let Some((before, after)) = url.split_once('@') {
        let shown = match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…@{after}"),
            None => format!("…@{after}"),
        };
        return Err(format!(
            "'{shown}' carries credentials; {expected}, with credentials from the run's provisioning, not the URL"
        ));
    }
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("'{url}' has no mqtt:// scheme; {expected}"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| {
                    format!("'{p}' in '{url}' is not a port; expected 1 to 65535: {expected}")
                })?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host; {expected}"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_expected() {
        assert_eq!(
            parse("mqtt://127.0.0.1:1884"),
            Ok(("127.0.0.1".into(), 1884))
        );
        assert_eq!(
            parse("mqtt://broker.local"),
            Ok(("broker.local".into(), 1883))
        );
        assert!(
            parse("http://x:1")
                .unwrap_err()
                .contains("'http://x:1' has no mqtt:// scheme")
        );
        assert!(
            parse("mqtt://x:99999")
                .unwrap_err()
                .contains("'99999' in 'mqtt://x:99999' is not a port")
        );
        assert!(parse("mqtt://:1883").unwrap_err().contains("has no host"));
        assert!(
            parse("mqtt://x:0")
                .unwrap_err()
                .contains("'0' in 'mqtt://x:0' is not a port; expected 1 to 65535")
        );
        let e = parse("mqtt://user:hunter2@x:1883").unwrap_err();
        assert!(e.contains("'mqtt://…@x:1883' carries credentials"), "{e}");
        assert!(!e.contains("hunter2"), "the secret is never echoed: {e}");
    }
}
