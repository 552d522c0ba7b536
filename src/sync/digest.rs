//! Digest access authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760):
//! reading the challenges of a phone's 401 `WWW-Authenticate` or 407 `Proxy-Authenticate`
//! headers, and answering the best one with the device's SIP line credentials.
//!
//! Challenges come from the network: every input is bounded, and anything malformed is an
//! error, never a panic.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The credentials a challenge is answered with (SIP line 1 of the device's config).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `auth_username`, else `username`.
    pub username: String,
    /// `password`.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line.
        write!(f, "Credentials({:?}, <password>)", self.username)
    }
}

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header does not follow the challenge grammar.
    #[error("malformed challenge: {0}")]
    Malformed(&'static str),
    /// Well-formed, but no Digest challenge that we can answer.
    #[error("no usable Digest challenge: {0}")]
    Unusable(String),
    /// The user name cannot be written in a header.
    #[error("the SIP line 1 user name contains a control character")]
    BadUsername,
}

/// Challenges read from one response at most; the rest are ignored.
const MAX_CHALLENGES: usize = 16;
/// Parameters of one challenge at most.
const MAX_PARAMS: usize = 32;
/// Longest parameter value echoed (realm, nonce, opaque).
const MAX_VALUE_CHARS: usize = 1024;

/// A digest algorithm, in increasing order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// `MD5-sess`.
    Md5Sess,
    /// `MD5` (the default when the challenge names none).
    Md5,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-256`.
    Sha256,
}

impl Algorithm {
    fn parse(token: &str) -> Option<Algorithm> {
        [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(token))
        .map(|(_, a)| a)
    }

    /// The name written in the answer.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The hash of `data` in lower-case hex.
    fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The quality of protection chosen among the challenge's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// `auth`.
    Auth,
    /// `auth-int`: also covers the body, which a NOTIFY of ours never has.
    AuthInt,
}

impl Qop {
    fn name(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A Digest challenge we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed as received.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// The `qop` chosen, `None` when the challenge offers none (RFC 2069 style).
    pub qop: Option<Qop>,
}

/// One scheme and its parameters, as written (names in lower case).
#[derive(Debug, PartialEq, Eq)]
struct Raw {
    scheme: String,
    params: Vec<(String, String)>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Reads a header value holding one or more challenges (`Digest realm="x", nonce="y",
/// Basic realm="z"`).
fn parse_header(value: &str) -> Result<Vec<Raw>, DigestError> {
    let bytes = value.as_bytes();
    let mut at = 0;
    let mut out: Vec<Raw> = Vec::new();
    let skip_ws = |at: &mut usize| {
        while bytes.get(*at).is_some_and(|b| *b == b' ' || *b == b'\t') {
            *at += 1;
        }
    };
    loop {
        while bytes
            .get(at)
            .is_some_and(|b| *b == b' ' || *b == b'\t' || *b == b',')
        {
            at += 1;
        }
        let Some(&first) = bytes.get(at) else {
            return Ok(out);
        };
        if is_ctl(first) {
            return Err(DigestError::Malformed("control character"));
        }
        let start = at;
        while bytes.get(at).copied().is_some_and(is_tchar) {
            at += 1;
        }
        if at == start {
            return Err(DigestError::Malformed(
                "expected an authentication scheme or a parameter name",
            ));
        }
        let token = &value[start..at];
        skip_ws(&mut at);
        if bytes.get(at) != Some(&b'=') {
            if out.len() == MAX_CHALLENGES {
                return Ok(out);
            }
            out.push(Raw {
                scheme: token.to_owned(),
                params: Vec::new(),
            });
            continue;
        }
        at += 1;
        skip_ws(&mut at);
        let param_value = if bytes.get(at) == Some(&b'"') {
            quoted(bytes, &mut at)?
        } else {
            let start = at;
            while let Some(&b) = bytes.get(at) {
                if b == b',' || b == b' ' || b == b'\t' {
                    break;
                }
                if is_ctl(b) || b == b'"' {
                    return Err(DigestError::Malformed("bad character in a parameter value"));
                }
                at += 1;
            }
            value[start..at].to_owned()
        };
        skip_ws(&mut at);
        if bytes.get(at).is_some_and(|b| *b != b',') {
            return Err(DigestError::Malformed("expected a comma after a parameter"));
        }
        let current = out
            .last_mut()
            .ok_or(DigestError::Malformed("a parameter before any scheme"))?;
        if current.params.len() == MAX_PARAMS {
            return Err(DigestError::Malformed("too many parameters"));
        }
        current
            .params
            .push((token.to_ascii_lowercase(), param_value));
    }
}

/// Reads the quoted string starting at `bytes[*at]` (a `"`), undoing `\` escapes.
fn quoted(bytes: &[u8], at: &mut usize) -> Result<String, DigestError> {
    *at += 1;
    let mut out = Vec::new();
    loop {
        match bytes.get(*at) {
            None => return Err(DigestError::Malformed("unterminated quoted string")),
            Some(b'"') => {
                *at += 1;
                break;
            }
            Some(b'\\') => {
                let escaped = *bytes
                    .get(*at + 1)
                    .ok_or(DigestError::Malformed("unterminated quoted string"))?;
                if is_ctl(escaped) {
                    return Err(DigestError::Malformed("control character"));
                }
                out.push(escaped);
                *at += 2;
            }
            Some(&b) if is_ctl(b) => return Err(DigestError::Malformed("control character")),
            Some(&b) => {
                out.push(b);
                *at += 1;
            }
        }
    }
    // Only ASCII bytes were removed from valid UTF-8: still valid, checked all the same.
    String::from_utf8(out).map_err(|_| DigestError::Malformed("invalid UTF-8"))
}

/// The Digest challenge `raw`, or why we cannot answer it.
fn digest_challenge(raw: &Raw) -> Result<Challenge, String> {
    if !raw.scheme.eq_ignore_ascii_case("Digest") {
        return Err(format!("scheme {:?} is not Digest", short(&raw.scheme)));
    }
    let get = |name: &str| -> Result<Option<&str>, String> {
        let mut found = raw.params.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(format!("parameter {name} given twice"));
        }
        if first.is_some_and(|v| v.chars().count() > MAX_VALUE_CHARS) {
            return Err(format!("parameter {name} longer than {MAX_VALUE_CHARS}"));
        }
        Ok(first)
    };
    let realm = get("realm")?.ok_or("no realm")?.to_owned();
    let nonce = get("nonce")?
        .filter(|n| !n.is_empty())
        .ok_or("no nonce")?
        .to_owned();
    let opaque = get("opaque")?.map(str::to_owned);
    let algorithm = match get("algorithm")? {
        None => Algorithm::Md5,
        Some(name) => Algorithm::parse(name)
            .ok_or_else(|| format!("algorithm {:?} is not supported", short(name)))?,
    };
    let qop = match get("qop")? {
        None => None,
        Some(list) => {
            let offered: Vec<&str> = list.split(',').map(str::trim).collect();
            let has = |q: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(q));
            Some(if has("auth") {
                Qop::Auth
            } else if has("auth-int") {
                Qop::AuthInt
            } else {
                return Err(format!("qop {:?} is not supported", short(list)));
            })
        }
    };
    // A -sess hash takes the client nonce, which RFC 2617 sends only with a qop.
    if algorithm.is_sess() && qop.is_none() {
        return Err(format!("{} without qop", algorithm.name()));
    }
    Ok(Challenge {
        realm,
        nonce,
        opaque,
        algorithm,
        qop,
    })
}

/// At most 64 characters of something a phone sent, for an error message.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The challenge to answer among the values of a response's challenge headers: the Digest
/// one with the strongest algorithm (SHA-256 over MD5), the first of equals. A header that
/// does not parse is skipped; the error says why when no challenge is left.
pub fn choose<S: AsRef<str>>(headers: &[S]) -> Result<Challenge, DigestError> {
    let mut best: Option<Challenge> = None;
    let mut why: Option<DigestError> = None;
    for header in headers.iter().take(MAX_CHALLENGES) {
        let raws = match parse_header(header.as_ref()) {
            Ok(raws) => raws,
            Err(e) => {
                why.get_or_insert(e);
                continue;
            }
        };
        for raw in &raws {
            match digest_challenge(raw) {
                Ok(c) if best.as_ref().is_none_or(|b| c.algorithm > b.algorithm) => best = Some(c),
                Ok(_) => {}
                Err(reason) => {
                    why.get_or_insert(DigestError::Unusable(reason));
                }
            }
        }
    }
    best.ok_or_else(|| why.unwrap_or(DigestError::Unusable("no challenge header".into())))
}

/// `"text"` with `\` and `"` escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `Authorization` / `Proxy-Authorization` value answering `challenge` for a request
/// `method` to `uri` with an empty body, with the client nonce `cnonce` (nonce count 1).
pub fn authorization(
    challenge: &Challenge,
    credentials: &Credentials,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Result<String, DigestError> {
    if credentials.username.bytes().any(is_ctl) {
        return Err(DigestError::BadUsername);
    }
    let alg = challenge.algorithm;
    let nc = "00000001";
    let mut ha1 = alg.hex(&format!(
        "{}:{}:{}",
        credentials.username, challenge.realm, credentials.password
    ));
    if alg.is_sess() {
        ha1 = alg.hex(&format!("{ha1}:{}:{cnonce}", challenge.nonce));
    }
    let ha2 = match challenge.qop {
        Some(Qop::AuthInt) => alg.hex(&format!("{method}:{uri}:{}", alg.hex(""))),
        _ => alg.hex(&format!("{method}:{uri}")),
    };
    let response = match challenge.qop {
        Some(qop) => alg.hex(&format!(
            "{ha1}:{}:{nc}:{cnonce}:{}:{ha2}",
            challenge.nonce,
            qop.name()
        )),
        None => alg.hex(&format!("{ha1}:{}:{ha2}", challenge.nonce)),
    };
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(&credentials.username),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        quote(uri),
        alg.name(),
    );
    if let Some(qop) = challenge.qop {
        out.push_str(&format!(
            ", cnonce={}, qop={}, nc={nc}",
            quote(cnonce),
            qop.name()
        ));
    }
    if let Some(opaque) = &challenge.opaque {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
        }
    }

    #[test]
    fn rfc_2617_example_gives_its_response() {
        // RFC 2617 §3.5, with its method and URI.
        let challenge = choose(&[
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        ])
        .unwrap();
        assert_eq!(challenge.qop, Some(Qop::Auth));
        let header = authorization(
            &challenge,
            &Credentials {
                username: "Mufasa".into(),
                password: "Circle Of Life".into(),
            },
            "GET",
            "/dir/index.html",
            "0a4f113b",
        )
        .unwrap();
        assert!(
            header.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{header}"
        );
        assert!(header.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
        assert!(header.contains("qop=auth, nc=00000001"));
    }

    #[test]
    fn rfc_7616_sha256_example_gives_its_response() {
        // RFC 7616 §3.9.1.
        let challenge = choose(&[
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        ])
        .unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        let header = authorization(
            &challenge,
            &creds(),
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        .unwrap();
        assert!(
            header.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{header}"
        );
    }

    #[test]
    fn sha256_is_preferred_whatever_the_order_and_names_are_case_insensitive() {
        let md5 = r#"Digest realm="r", nonce="n1", algorithm=MD5"#;
        let sha = r#"digest REALM="r", Nonce="n2", ALGORITHM=sha-256, QOP="Auth""#;
        for headers in [[md5, sha], [sha, md5]] {
            let c = choose(&headers).unwrap();
            assert_eq!((c.algorithm, c.nonce.as_str()), (Algorithm::Sha256, "n2"));
            assert_eq!(c.qop, Some(Qop::Auth));
        }
        // Both in one header.
        let c = choose(&[format!("{md5}, {sha}")]).unwrap();
        assert_eq!(c.nonce, "n2");
        // Unsupported ones are passed over.
        let c = choose(&[
            r#"Digest realm="r", nonce="x", algorithm=SHA-512-256, Basic realm="b", Digest realm="r", nonce="m""#,
        ])
        .unwrap();
        assert_eq!((c.algorithm, c.nonce.as_str()), (Algorithm::Md5, "m"));
    }

    #[test]
    fn quoted_strings_keep_commas_escapes_and_equals() {
        let c = choose(&[
            r#"Digest realm="a, \"b\" = c\\", nonce = "n,=", opaque=tok/en==, algorithm="MD5-sess", qop="auth-int""#,
        ])
        .unwrap();
        assert_eq!(c.realm, r#"a, "b" = c\"#);
        assert_eq!(c.nonce, "n,=");
        assert_eq!(c.opaque.as_deref(), Some("tok/en=="));
        assert_eq!(
            (c.algorithm, c.qop),
            (Algorithm::Md5Sess, Some(Qop::AuthInt))
        );
        // Written back escaped.
        let header = authorization(&c, &creds(), "NOTIFY", "sip:h", "c").unwrap();
        assert!(header.contains(r#"realm="a, \"b\" = c\\""#), "{header}");
        assert!(header.contains(r#"nonce="n,=""#), "{header}");
    }

    #[test]
    fn no_qop_challenges_are_answered_without_cnonce() {
        let c = choose(&[r#"Digest realm="r", nonce="n""#]).unwrap();
        assert_eq!(c.qop, None);
        let header = authorization(&c, &creds(), "NOTIFY", "sip:10.0.0.1:5060", "c").unwrap();
        let ha1 = Algorithm::Md5.hex("Mufasa:r:Circle of Life");
        let ha2 = Algorithm::Md5.hex("NOTIFY:sip:10.0.0.1:5060");
        let expected = Algorithm::Md5.hex(&format!("{ha1}:n:{ha2}"));
        assert!(
            header.contains(&format!("response=\"{expected}\"")),
            "{header}"
        );
        assert!(!header.contains("cnonce") && !header.contains("nc="));
    }

    #[test]
    fn hostile_or_garbage_challenges_are_errors() {
        let long = format!(r#"Digest realm="r", nonce="{}""#, "n".repeat(2000));
        let many = format!("Digest {}", "a=b, ".repeat(40));
        let cases: Vec<String> = vec![
            String::new(),
            "Digest".into(),
            "Digest realm".into(),
            r#"Digest realm="r""#.into(),
            r#"Digest nonce="n""#.into(),
            r#"Digest realm="r", nonce="""#.into(),
            r#"Digest realm="unterminated, nonce="n""#.into(),
            r#"Digest realm="r\"#.into(),
            r#"Digest realm="r" nonce="n""#.into(),
            r#"Digest realm="r", nonce="n", nonce="m""#.into(),
            r#"Digest realm="r", nonce="n", algorithm=SHA-1"#.into(),
            r#"Digest realm="r", nonce="n", qop="auth-conf""#.into(),
            r#"Digest realm="r", nonce="n", algorithm=MD5-sess"#.into(),
            "Digest realm=\"r\u{1}\", nonce=\"n\"".into(),
            "Digest realm=r\u{7f}, nonce=n".into(),
            r#"realm="r", nonce="n""#.into(),
            r#"=, ,,, ="#.into(),
            r#"Basic realm="x""#.into(),
            "\u{fffd}\u{fffd}".into(),
            "Digest realm=\"r\", nonce=\"n\", \"x\"".into(),
            "Digest realm=a\"b\", nonce=n".into(),
            long,
            many,
        ];
        for case in &cases {
            assert!(choose(&[case]).is_err(), "{case:?} accepted");
        }
        assert!(choose::<&str>(&[]).is_err());
        // Garbage beside a good header does not hide it.
        let c = choose(&[r#"Digest realm="x"#, r#"Digest realm="r", nonce="n""#]).unwrap();
        assert_eq!(c.nonce, "n");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic generator: every byte pattern of short inputs over the
        // grammar's special characters, plus mutations of a valid challenge.
        let alphabet = [b'"', b'\\', b',', b'=', b' ', b'D', b'a', b'\t', 0xc3, 0xa9];
        let mut input = Vec::new();
        for n in 0..100_000u32 {
            input.clear();
            let mut x = n;
            while x > 0 {
                input.push(alphabet[(x % alphabet.len() as u32) as usize]);
                x /= alphabet.len() as u32;
            }
            let text = String::from_utf8_lossy(&input);
            let _ = choose(&[text.as_ref()]);
        }
        let valid = r#"Digest realm="r", nonce="n", qop="auth", opaque="o", algorithm=SHA-256"#;
        for cut in 0..=valid.len() {
            let _ = choose(&[&valid[..cut]]);
        }
    }

    #[test]
    fn a_username_with_a_line_break_is_never_written() {
        let c = choose(&[r#"Digest realm="r", nonce="n""#]).unwrap();
        let bad = Credentials {
            username: "a\r\nVia: x".into(),
            password: "p".into(),
        };
        assert_eq!(
            authorization(&c, &bad, "NOTIFY", "sip:h", "c"),
            Err(DigestError::BadUsername)
        );
    }
}
