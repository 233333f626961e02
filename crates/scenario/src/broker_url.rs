//! `mqtt://host:port` broker addresses.

/// Parses `mqtt://host:port` (or `tcp://`), port 1883 if absent, into host
/// and port; the error says what was wrong and what is expected.
pub fn parse(url: &str) -> Result<(String, u16), String> {
    let expected = "expected 'mqtt://host:port', for example 'mqtt://127.0.0.1:1883'";
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("'{url}' has no mqtt:// scheme; {expected}"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("'{p}' in '{url}' is not a port; {expected}"))?,
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
    }
}
