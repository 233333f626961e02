//! `mqtt://host:port` and `mqtts://host:port` broker addresses.

/// A broker's address, as a URL gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port (1883, or 8883 for TLS, when the URL has none).
    pub port: u16,
    /// Whether the broker is reached over TLS (`mqtts://`).
    pub tls: bool,
}

/// Parses `mqtt://host:port` (or `tcp://`; port 1883 if absent) or
/// `mqtts://host:port` (or `ssl://`; TLS, port 8883 if absent); the error
/// says what was wrong and what is expected.
pub fn parse(url: &str) -> Result<BrokerUrl, String> {
    let expected = "expected 'mqtt://host:port' or 'mqtts://host:port' (TLS), for example 'mqtt://127.0.0.1:1883'";
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
    let (rest, tls) = if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (r, false)
    } else if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (r, true)
    } else {
        return Err(format!(
            "'{url}' has no mqtt:// or mqtts:// scheme; {expected}"
        ));
    };
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
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host; {expected}"));
    }
    Ok(BrokerUrl {
        host: host.to_owned(),
        port,
        tls,
    })
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_expected() {
        let url = |host: &str, port, tls| BrokerUrl {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            parse("mqtt://127.0.0.1:1884"),
            Ok(url("127.0.0.1", 1884, false))
        );
        assert_eq!(
            parse("mqtt://broker.local"),
            Ok(url("broker.local", 1883, false))
        );
        assert_eq!(
            parse("mqtts://broker.local"),
            Ok(url("broker.local", 8883, true))
        );
        assert_eq!(
            parse("ssl://10.0.0.1:9000"),
            Ok(url("10.0.0.1", 9000, true))
        );
        assert_eq!(
            parse("mqtts://b:8884").unwrap().to_string(),
            "mqtts://b:8884"
        );
        assert!(
            parse("http://x:1")
                .unwrap_err()
                .contains("'http://x:1' has no mqtt:// or mqtts:// scheme")
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
