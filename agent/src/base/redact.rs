//! URLs as they may be shown: scheme, host and port. A webhook URL's path (Slack's is the
//! secret), its userinfo and its query may carry credentials, so errors, log lines, the
//! outbox and every endpoint show only this form.

/// `raw` reduced to `scheme://host[:port]` (an unparseable URL shows as a placeholder).
pub fn url(raw: &str) -> String {
    let Ok(u) = url::Url::parse(raw) else {
        return "(an invalid URL)".to_string();
    };
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// `text` (an error from a library, a peer's answer) with every occurrence of `raw` (as
/// written and as normalised by the parser) and of its secret parts replaced.
pub fn scrub(text: &str, raw: &str) -> String {
    let shown = url(raw);
    let mut out = text.replace(raw, &shown);
    if let Ok(u) = url::Url::parse(raw) {
        out = out.replace(u.as_str(), &shown);
        let parts = [
            u.password().map(str::to_string),
            Some(u.username().to_string()),
            u.query().map(str::to_string),
            Some(u.path().to_string()),
        ];
        // Parts short enough to be ordinary words ("/", "v2") are left alone.
        for part in parts.into_iter().flatten().filter(|p| p.len() >= 6) {
            out = out.replace(&part, "…");
        }
    }
    out
}

#[cfg(test)]
mod tests;
