//! The provisioning-code form that phones in autoprov show in their own XML browser: its
//! per-device signed URLs and the texts of its screens.
//!
//! A phone's autoprov file carries the absolute URL of its form,
//! `<base>code-form/<mac>/<sig>`, where `<sig>` is the first 16 bytes, in hex, of
//! HMAC-SHA256(store secret, `"code-form\0" + mac`) with the MAC as 12 lower-case hex digits.
//! Only this server can make a valid `<sig>`, so a phone (or anyone) who learns its own form
//! URL cannot make another phone's: the form redeems a code for the device of the path's MAC
//! only. The secret lives in the store's `meta` tree ([`crate::store::Store::code_form_secret`]).

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use url::Url;

use crate::model::Mac;

/// First path segment of the form's routes on the provisioning server.
pub const PATH_PREFIX: &str = "code-form";

/// Last path segment of the form's submission.
pub const SUBMIT_SEGMENT: &str = "submit";

/// Bytes of the HMAC kept in a URL: 128 bits, beyond any guessing over HTTP.
const SIG_BYTES: usize = 16;

/// Domain separation: the same secret must never sign anything else the same way.
const SIG_CONTEXT: &[u8] = b"code-form\0";

/// Title of both screens.
pub const TITLE: &str = "Provisioning code";
/// Prompt of the input screen.
pub const PROMPT: &str = "Enter the 12-digit code";
/// Result after a redemption.
pub const ACCEPTED: &str = "Phone provisioned, updating";
/// Result for every refused code: wrong, expired, used, or not allowed for this phone. One
/// message, so that the screen never says which part was wrong.
pub const REFUSED: &str = "Code not accepted";
/// Result when the phone's address is over its failure budget.
pub const TOO_MANY: &str = "Too many attempts, wait";

/// The key that signs and checks form URLs.
#[derive(Clone)]
pub struct FormKey {
    secret: [u8; crate::store::CODE_FORM_SECRET_LEN],
}

impl std::fmt::Debug for FormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormKey(..)")
    }
}

impl FormKey {
    /// A key over the store's secret.
    pub fn new(secret: [u8; crate::store::CODE_FORM_SECRET_LEN]) -> FormKey {
        FormKey { secret }
    }

    fn mac_of(&self, mac: &Mac) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail for 32 bytes.
        let mut hmac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        hmac.update(SIG_CONTEXT);
        hmac.update(mac.to_bare().as_bytes());
        hmac
    }

    /// The `<sig>` of `mac`'s form URL: 32 lower-case hex digits.
    pub fn sign(&self, mac: &Mac) -> String {
        let tag = self.mac_of(mac).finalize().into_bytes();
        tag[..SIG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True when `sig` is `mac`'s signature; the comparison takes the same time whatever
    /// the bytes, so that timing does not reveal how much of a guess was right.
    pub fn verify(&self, mac: &Mac, sig: &str) -> bool {
        let Some(bytes) = decode_hex::<SIG_BYTES>(sig) else {
            return false;
        };
        self.mac_of(mac).verify_truncated_left(&bytes).is_ok()
    }

    /// The absolute URL of `mac`'s form under `base` (a base URL ending in `/`).
    pub fn form_url(&self, base: &Url, mac: &Mac) -> String {
        format!("{}{}", with_slash(base), form_path(mac, &self.sign(mac)))
    }
}

/// `code-form/<mac>/<sig>`, relative to the base URL.
pub fn form_path(mac: &Mac, sig: &str) -> String {
    format!("{PATH_PREFIX}/{}/{sig}", mac.to_bare())
}

/// The absolute URL of the form's submission, without its query.
pub fn submit_url(base: &Url, mac: &Mac, sig: &str) -> String {
    format!(
        "{}{}/{SUBMIT_SEGMENT}",
        with_slash(base),
        form_path(mac, sig)
    )
}

fn with_slash(base: &Url) -> String {
    let mut text = base.as_str().to_owned();
    if !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// Which page of the form a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormPage {
    /// The input screen.
    Input,
    /// The submission of a code.
    Submit,
}

/// A form path, parsed; the signature is not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPath {
    /// The device's MAC.
    pub mac: Mac,
    /// The signature as sent.
    pub sig: String,
    /// Input screen or submission.
    pub page: FormPage,
}

/// Why a `code-form/…` path is not one of the form's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormPathError {
    /// Not `code-form/<12 hex digits>/<32 hex digits>[/submit]`.
    #[error("not a code form path")]
    Malformed,
}

/// True when `path` (decoded, without its leading `/`) is under the form's prefix: such a
/// path is the form's to answer, never a plugin file's.
pub fn is_form_path(path: &str) -> bool {
    path == PATH_PREFIX || path.starts_with(&format!("{PATH_PREFIX}/"))
}

/// Parses a path under [`PATH_PREFIX`] (decoded, without its leading `/`).
pub fn parse_path(path: &str) -> Result<FormPath, FormPathError> {
    let rest = path
        .strip_prefix(PATH_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(FormPathError::Malformed)?;
    let mut parts = rest.split('/');
    let (Some(mac), Some(sig)) = (parts.next(), parts.next()) else {
        return Err(FormPathError::Malformed);
    };
    let page = match (parts.next(), parts.next()) {
        (None, _) => FormPage::Input,
        (Some(SUBMIT_SEGMENT), None) => FormPage::Submit,
        _ => return Err(FormPathError::Malformed),
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !lower_hex(mac, 12) || !lower_hex(sig, 2 * SIG_BYTES) {
        return Err(FormPathError::Malformed);
    }
    let mac = mac.parse().map_err(|_| FormPathError::Malformed)?;
    Ok(FormPath {
        mac,
        sig: sig.to_owned(),
        page,
    })
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// What the input screen's template sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputScreen {
    /// Absolute URL the phone submits to, without a query.
    pub submit_url: String,
    /// Name of the query parameter that carries the code.
    pub param: String,
    /// Screen title.
    pub title: String,
    /// Prompt of the input field.
    pub prompt: String,
    /// Digits of a code.
    pub digits: usize,
}

/// What the result screen's template sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResultScreen {
    /// Screen title.
    pub title: String,
    /// True when the code was redeemed.
    pub ok: bool,
    /// The one line shown.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> Mac {
        text.parse().unwrap()
    }

    #[test]
    fn signatures_are_per_device_and_per_secret() {
        let key = FormKey::new([7; 32]);
        let a = mac("80:5e:c0:11:22:33");
        let b = mac("80:5e:c0:11:22:34");
        let sig = key.sign(&a);
        assert_eq!(sig.len(), 32);
        assert!(key.verify(&a, &sig));
        assert!(!key.verify(&b, &sig), "another MAC");
        assert!(!FormKey::new([8; 32]).verify(&a, &sig), "another secret");
        let mut flipped = sig.clone().into_bytes();
        flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
        assert!(!key.verify(&a, std::str::from_utf8(&flipped).unwrap()));
        for bad in ["", "zz", &sig[..30], &format!("{sig}00")] {
            assert!(!key.verify(&a, bad), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        let key = FormKey::new([1; 32]);
        let m = mac("00:04:13:aa:bb:cc");
        let sig = key.sign(&m);
        let base: Url = "http://10.0.0.2:8667".parse().unwrap();
        let url = key.form_url(&base, &m);
        assert_eq!(
            url,
            format!("http://10.0.0.2:8667/code-form/000413aabbcc/{sig}")
        );
        let path = url.trim_start_matches("http://10.0.0.2:8667/");
        assert_eq!(
            parse_path(path),
            Ok(FormPath {
                mac: m,
                sig: sig.clone(),
                page: FormPage::Input
            })
        );
        assert_eq!(
            parse_path(&format!("{path}/submit")).map(|p| p.page),
            Ok(FormPage::Submit)
        );
        assert_eq!(
            submit_url(&"http://h/prov/".parse().unwrap(), &m, &sig),
            format!("http://h/prov/code-form/000413aabbcc/{sig}/submit")
        );
        for bad in [
            "code-form".to_owned(),
            "code-form/".to_owned(),
            "code-form/000413aabbcc".to_owned(),
            format!("code-form/000413AABBCC/{sig}"),
            format!("code-form/00:04:13:aa:bb:cc/{sig}"),
            format!("code-form/000413aabbcc/{sig}/other"),
            format!("code-form/000413aabbcc/{sig}/submit/x"),
            format!("code-form/000413aabbcc/{}", &sig[..31]),
            format!("code-formx/000413aabbcc/{sig}"),
        ] {
            assert_eq!(parse_path(&bad), Err(FormPathError::Malformed), "{bad}");
        }
        assert!(is_form_path("code-form"));
        assert!(is_form_path("code-form/x"));
        assert!(!is_form_path("code-formx"));
    }
}
