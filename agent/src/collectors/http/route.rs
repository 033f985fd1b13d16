//! HTTP route templating: raw paths become bounded route labels.
//!
//! The query string and fragment are dropped; a segment that is a number, a UUID or a
//! long hex string becomes `{id}`. Each target keeps at most `limit` distinct routes;
//! later new ones are folded into `_OTHER`. A 404 or 405 response never adds a route (a
//! scanner's probes would use up the budget): unless its route is already known, it is
//! labelled `_NOT_FOUND`.
use std::collections::HashSet;

pub const OVERFLOW_ROUTE: &str = "_OTHER";
/// The route of 404 and 405 responses whose path is not an admitted route.
pub const NOT_FOUND_ROUTE: &str = "_NOT_FOUND";

/// The route template of a request target (`/v1/items/42?x=1` → `/v1/items/{id}`).
pub fn template(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    // Absolute form (proxies): keep the path part.
    let path = match text.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => &text,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_string();
    }
    if path == "*" {
        return "*".to_string();
    }
    path.split('/')
        .map(|seg| if is_id(seg) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_id(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    // Long hex strings (hashes, object ids): all hex and at least one digit, so that
    // words like "deadbeef" stay… unless they carry a digit.
    b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Distinct routes of one target, capped.
#[derive(Debug, Default)]
pub struct RouteSet {
    seen: HashSet<String>,
}

impl RouteSet {
    /// The label for `route` answered with `status`: itself while under `limit` distinct
    /// routes, else `_OTHER`; `_NOT_FOUND` for a 404 or 405 on a route not admitted.
    pub fn admit(&mut self, route: String, status: u16, limit: usize) -> String {
        if self.seen.contains(&route) {
            return route;
        }
        if matches!(status, 404 | 405) {
            return NOT_FOUND_ROUTE.to_string();
        }
        if self.seen.len() >= limit {
            return OVERFLOW_ROUTE.to_string();
        }
        self.seen.insert(route.clone());
        route
    }
}

#[cfg(test)]
mod tests;
