use super::*;

#[test]
fn templates() {
    for (raw, want) in [
        ("/", "/"),
        ("", "/"),
        ("*", "*"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/items/42", "/items/{id}"),
        ("/items/42/", "/items/{id}/"),
        ("/items/42?full=1#x", "/items/{id}"),
        ("/u/123e4567-e89b-12d3-a456-426614174000/x", "/u/{id}/x"),
        ("/blob/9f86d081884c7d65", "/blob/{id}"),
        ("/blob/deadbeefcafe", "/blob/deadbeefcafe"),
        ("/v2/models", "/v2/models"),
        ("http://example.com/a/7", "/a/{id}"),
        ("http://example.com", "/"),
    ] {
        assert_eq!(template(raw.as_bytes()), want, "{raw}");
    }
}

#[test]
fn cap_folds_new_routes() {
    let mut r = RouteSet::default();
    assert_eq!(r.admit("/a".into(), 200, 2), "/a");
    assert_eq!(r.admit("/b".into(), 200, 2), "/b");
    assert_eq!(r.admit("/c".into(), 200, 2), OVERFLOW_ROUTE);
    assert_eq!(r.admit("/a".into(), 200, 2), "/a");
}

#[test]
fn not_found_and_refused_methods_fold_into_one_route() {
    let mut r = RouteSet::default();
    for i in 0..500 {
        assert_eq!(r.admit(format!("/scan{i}x"), 404, 2), NOT_FOUND_ROUTE);
        assert_eq!(r.admit(format!("/m{i}x"), 405, 2), NOT_FOUND_ROUTE);
    }
    assert_eq!(r.admit("/a".into(), 200, 2), "/a");
    // A route already admitted keeps its label for a 404.
    assert_eq!(r.admit("/a".into(), 404, 2), "/a");
    assert_eq!(r.admit("/b".into(), 500, 2), "/b");
    assert_eq!(r.admit("/c".into(), 200, 2), OVERFLOW_ROUTE);
}
