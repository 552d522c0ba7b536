//! The session cookie: its name, how it is set (HttpOnly, SameSite=Strict, Secure when the
//! console is reached over HTTPS) and read back; and the sign-in form's CSRF cookie.

use axum::http::HeaderMap;

/// Name of the session cookie.
pub const SESSION: &str = "provisiond_session";

/// `Set-Cookie` value carrying session `id`, valid for the whole console.
pub fn set(id: &str, secure: bool, max_age_secs: u64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Name of the cookie that pairs the sign-in form with its CSRF field (before any session).
pub const SIGNIN: &str = "provisiond_signin";

/// How long a sign-in form stays usable.
const SIGNIN_MAX_AGE_SECS: u64 = 3600;

/// `Set-Cookie` value carrying the sign-in form's token; sent only back to the sign-in POST.
pub fn set_signin(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SIGNIN}={token}; Path=/console/signin; HttpOnly; SameSite=Strict; Max-Age={SIGNIN_MAX_AGE_SECS}{secure}"
    )
}

/// `Set-Cookie` value that removes the sign-in form's cookie.
pub fn clear_signin(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SIGNIN}=; Path=/console/signin; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The session id the request carries, if any (the first one when a client sends several).
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    read(headers, SESSION)
}

/// The sign-in form's token the request carries, if any.
pub fn signin_token(headers: &HeaderMap) -> Option<String> {
    read(headers, SIGNIN)
}

fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=1; provisiond_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_id(&headers).as_deref(), Some("abc"));
        assert!(set("x", true, 5).contains("; Secure"));
        assert!(!set("x", false, 5).contains("Secure"));
    }
}
