//! `GET /`: the web page, one self-contained HTML file (`page.html`) compiled into the
//! binary: inline CSS and JavaScript, no build step, nothing fetched from anywhere but
//! this listener's own API.
//!
//! It is served with a Content-Security-Policy that allows exactly its own inline script
//! and style (by their SHA-256, computed once from the embedded file) and connections to
//! this origin only: the browser itself refuses any other script, style, font, image or
//! request, so a hostile label can neither run code nor make the page call out even if a
//! future change forgot to escape it (the page sets every value with `textContent`).

use std::sync::OnceLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The page.
pub const PAGE: &str = include_str!("page.html");

/// `GET /`.
pub(super) async fn page() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp())),
            // The page is part of the binary: revalidate, so an upgrade shows at once.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// The page's Content-Security-Policy.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| policy(PAGE))
}

/// A policy allowing the inline `<script>` and `<style>` blocks of `html` by hash and
/// nothing else but requests to the page's own origin.
fn policy(html: &str) -> String {
    let hashes = |tag| {
        inline_blocks(html, tag)
            .into_iter()
            .map(|b| {
                let digest = Sha256::digest(b.as_bytes());
                format!(
                    " 'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect::<String>()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("script"),
        hashes("style")
    )
}

/// The contents of every `<TAG>...</TAG>` block (exactly as the browser hashes them).
fn inline_blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        assert_eq!(inline_blocks(PAGE, "script").len(), 1);
        assert_eq!(inline_blocks(PAGE, "style").len(), 1);
        let p = csp();
        assert!(
            p.starts_with("default-src 'none'; script-src 'sha256-"),
            "{p}"
        );
        assert_eq!(p.matches("'sha256-").count(), 2, "{p}");
        assert!(!p.contains("unsafe"), "{p}");
        assert!(p.contains("connect-src 'self'"), "{p}");
        assert_eq!(
            inline_blocks("<b><style>a</style>x<style>b</style>", "style"),
            ["a", "b"]
        );
    }

    #[test]
    fn the_page_is_self_contained_and_never_parses_data_as_html() {
        // No external request: no other origin named anywhere, no fonts.
        for needle in [
            "http://",
            "https://",
            "//cdn",
            "@import",
            "@font-face",
            "url(",
        ] {
            assert!(!PAGE.contains(needle), "page contains {needle:?}");
        }
        // Values are set with textContent; nothing is parsed as HTML.
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(needle), "page uses {needle:?}");
        }
        // Inline style attributes would be blocked by the policy (style-src by hash).
        assert!(!PAGE.contains(" style=\""), "inline style attribute");
        assert!(PAGE.contains("name=\"viewport\""));
    }
}
