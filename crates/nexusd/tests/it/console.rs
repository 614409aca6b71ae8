//! The web console's files as the real daemon serves them: no token needed, the right
//! content types, validators and a strict Content-Security-Policy; the API stays protected.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::harness::{Daemon, Dirs};

fn header<'a>(res: &'a reqwest::Response, name: &reqwest::header::HeaderName) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header")
}

#[tokio::test]
async fn the_console_page_is_served_at_the_root_with_a_strict_csp() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let res = reqwest::get(daemon.url("/")).await.expect("GET /");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, &CONTENT_TYPE), "text/html; charset=utf-8");
    let csp = header(&res, &CONTENT_SECURITY_POLICY).to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-eval")
            && !csp
                .split(';')
                .any(|d| d.contains("script-src") && d.contains("unsafe-inline")),
        "scripts must never run inline or from strings: {csp}"
    );
    assert_eq!(header(&res, &CACHE_CONTROL), "no-cache");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let body = res.text().await.expect("body");
    assert!(
        body.contains(r#"<script type="module" src="/console/app.js">"#),
        "{body}"
    );
    assert!(!body.contains("<script>"), "no inline script: {body}");
}

#[tokio::test]
async fn the_bundled_xterm_is_served_with_its_type_and_revalidated_by_etag() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    let url = daemon.url("/console/vendor/xterm.mjs");
    let res = reqwest::get(&url).await.expect("GET xterm");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, &CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert!(header(&res, &CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
    let etag = header(&res, &ETAG).to_owned();
    let body = res.text().await.expect("body");
    assert!(
        body.contains("export{") && body.contains("Terminal"),
        "not xterm.js"
    );

    let again = reqwest::Client::new()
        .get(&url)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    for (path, kind) in [
        ("/console/vendor/xterm.css", "text/css; charset=utf-8"),
        (
            "/console/vendor/addon-fit.mjs",
            "text/javascript; charset=utf-8",
        ),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let res = reqwest::get(daemon.url(path)).await.expect("GET");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, &CONTENT_TYPE), kind, "{path}");
    }
}

#[tokio::test]
async fn unknown_console_files_are_404_and_the_api_still_needs_the_token() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs);
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/build.rs",
    ] {
        let res = reqwest::get(daemon.url(path)).await.expect("GET");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let res = reqwest::get(daemon.url("/v1/sandboxes"))
        .await
        .expect("GET /v1/sandboxes");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
