//! CSRF protection: every session has a random token; every form carries it in a hidden
//! `csrf` field, and a POST whose token is missing or different is refused with 403 before
//! anything else is looked at. SameSite=Strict already keeps the cookie off cross-site
//! requests; the token also covers browsers that ignore SameSite.

use subtle::ConstantTimeEq;

/// Name of the form field.
pub const FIELD: &str = "csrf";

/// True when the form's token is the session's.
pub fn valid(session_token: &str, form: &[(String, String)]) -> bool {
    let mut sent = form.iter().filter(|(k, _)| k == FIELD);
    match (sent.next(), sent.next()) {
        (Some((_, token)), None) => {
            !token.is_empty() && bool::from(token.as_bytes().ct_eq(session_token.as_bytes()))
        }
        _ => false,
    }
}

/// A fresh random token (also used for session ids): 32 bytes, base64url.
pub fn random_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_field() {
        let form = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(valid("t", &form(&[("csrf", "t")])));
        assert!(!valid("t", &form(&[("csrf", "u")])));
        assert!(!valid("t", &form(&[])));
        assert!(!valid("t", &form(&[("csrf", "t"), ("csrf", "t")])));
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
