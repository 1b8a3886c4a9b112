//! SASL for XMPP: SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, RFC 7677), and PLAIN (RFC 4616).
//!
//! Pure: the caller carries the messages. A successful SCRAM exchange yields a [`Credential`]
//! holding the salted password (not the password), which the SDK stores as its session token so a
//! restart can log in again without the password; it works as long as the server keeps the same
//! salt and iteration count (a password change makes it fail with `AuthFailed`).
//! Passwords are used as given (no SASLprep): non-ASCII passwords may not match other clients.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Mechanism::ScramSha256, Mechanism::ScramSha1, Mechanism::Plain].into_iter().find(|m| m.name() == name)
    }

    /// The strongest offered mechanism we may use; PLAIN only when `plain_allowed` (TLS or
    /// loopback).
    pub fn choose<'a>(offered: impl IntoIterator<Item = &'a str>, plain_allowed: bool) -> Option<Self> {
        offered.into_iter().filter_map(Mechanism::from_name).filter(|m| *m != Mechanism::Plain || plain_allowed).min_by_key(|m| *m as u8)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    #[error("the server's nonce does not extend ours")]
    NonceMismatch,
    #[error("the server's signature is wrong: not the server we registered with")]
    BadServerSignature,
    #[error("the server reported an error: {0}")]
    Server(String),
    #[error("the stored credential does not match the server's salt; log in again")]
    StaleCredential,
}

/// What lets the client authenticate again without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, i={})", self.mechanism.name(), self.iterations)
    }
}

impl Credential {
    pub fn encode(&self) -> String {
        format!("{}:{}:{}:{}", self.mechanism.name(), B64.encode(&self.salt), self.iterations, B64.encode(&self.salted_password))
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let mechanism = Mechanism::from_name(parts.next()?)?;
        let salt = B64.decode(parts.next()?).ok()?;
        let iterations = parts.next()?.parse().ok()?;
        let salted_password = B64.decode(parts.next()?).ok()?;
        (mechanism != Mechanism::Plain && parts.next().is_none()).then_some(Credential { mechanism, salt, iterations, salted_password })
    }
}

/// The PLAIN initial response: `\0user\0password`, base64.
pub fn plain(username: &str, password: &str) -> String {
    B64.encode(format!("\0{username}\0{password}"))
}

/// What the client authenticates with.
pub enum Secret<'a> {
    Password(&'a str),
    Stored(&'a Credential),
}

/// A SCRAM exchange in progress.
pub struct Scram {
    mechanism: Mechanism,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<Vec<u8>>,
    credential: Option<Credential>,
}

fn escape_username(u: &str) -> String {
    u.replace('=', "=3D").replace(',', "=2C")
}

fn hmac(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha1 => {
            let mut m = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha1 => Sha1::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

fn salt_password(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha1 => pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password.as_bytes(), salt, iterations).to_vec(),
        _ => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations).to_vec(),
    }
}

/// Most PBKDF2 iterations a server may ask for: a hostile server must not stall the client.
const MAX_ITERATIONS: u32 = 1_000_000;

impl Scram {
    /// Starts an exchange; returns it and the client-first message (not yet base64).
    pub fn start(mechanism: Mechanism, username: &str, nonce: &str) -> (Self, String) {
        let client_first_bare = format!("n={},r={nonce}", escape_username(username));
        let first = format!("n,,{client_first_bare}");
        (Scram { mechanism, client_first_bare, nonce: nonce.into(), expected_server_signature: None, credential: None }, first)
    }

    /// Answers the server-first message with the client-final message.
    pub fn respond(&mut self, server_first: &str, secret: Secret<'_>) -> Result<String, SaslError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for field in server_first.split(',') {
            match field.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| SaslError::Malformed("salt is not base64"))?),
                Some(("i", v)) => iterations = Some(v.parse::<u32>().map_err(|_| SaslError::Malformed("iteration count"))?),
                Some(("e", v)) => return Err(SaslError::Server(v.into())),
                Some(("m", _)) => return Err(SaslError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(SaslError::Malformed("no nonce"))?;
        let salt = salt.ok_or(SaslError::Malformed("no salt"))?;
        let iterations = iterations.ok_or(SaslError::Malformed("no iteration count"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::NonceMismatch);
        }
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(SaslError::Malformed("iteration count out of range"));
        }
        let salted_password = match secret {
            Secret::Password(p) => salt_password(self.mechanism, p, &salt, iterations),
            Secret::Stored(c) => {
                if c.mechanism != self.mechanism || c.salt != salt || c.iterations != iterations {
                    return Err(SaslError::StaleCredential);
                }
                c.salted_password.clone()
            }
        };
        let m = self.mechanism;
        let client_key = hmac(m, &salted_password, b"Client Key");
        let stored_key = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = hmac(m, &salted_password, b"Server Key");
        self.expected_server_signature = Some(hmac(m, &server_key, auth_message.as_bytes()));
        self.credential = Some(Credential { mechanism: m, salt, iterations, salted_password });
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message (from `<success>`); returns the reusable credential.
    pub fn finish(self, server_final: &str) -> Result<Credential, SaslError> {
        let expected = self.expected_server_signature.ok_or(SaslError::Malformed("finish before respond"))?;
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(SaslError::Server(e.into()));
        }
        let v = server_final.split(',').find_map(|f| f.strip_prefix("v=")).ok_or(SaslError::Malformed("no verifier"))?;
        let got = B64.decode(v).map_err(|_| SaslError::Malformed("verifier is not base64"))?;
        if got != expected {
            return Err(SaslError::BadServerSignature);
        }
        Ok(self.credential.expect("set with the signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(m: Mechanism, nonce: &str, server_first: &str, client_final: &str, server_final: &str) {
        let (mut scram, first) = Scram::start(m, "user", nonce);
        assert_eq!(first, format!("n,,n=user,r={nonce}"));
        assert_eq!(scram.respond(server_first, Secret::Password("pencil")).unwrap(), client_final);
        let credential = scram.finish(server_final).unwrap();
        // The stored credential gives the same proof without the password.
        let (mut again, _) = Scram::start(m, "user", nonce);
        assert_eq!(again.respond(server_first, Secret::Stored(&credential)).unwrap(), client_final);
        assert_eq!(Credential::decode(&credential.encode()), Some(credential));
        // A forged server signature is refused.
        let (mut forged, _) = Scram::start(m, "user", nonce);
        forged.respond(server_first, Secret::Password("pencil")).unwrap();
        assert_eq!(forged.finish("v=AAAA").unwrap_err(), SaslError::BadServerSignature);
    }

    #[test]
    fn rfc5802_sha1_vector() {
        exchange(
            Mechanism::ScramSha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc7677_sha256_vector() {
        exchange(
            Mechanism::ScramSha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn refuses_hostile_server_first_messages() {
        for bad in [
            "r=other,s=QSXCR+Q6sek8bf92,i=4096",
            "r=abc,s=QSXCR+Q6sek8bf92,i=4096",
            "r=abcdef,s=!!,i=4096",
            "r=abcdef,s=QSXCR+Q6sek8bf92,i=0",
            "r=abcdef,s=QSXCR+Q6sek8bf92,i=4000000000",
            "r=abcdef,s=QSXCR+Q6sek8bf92",
            "m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=1",
            "e=invalid-proof",
            "",
        ] {
            let (mut s, _) = Scram::start(Mechanism::ScramSha1, "u", "abc");
            assert!(s.respond(bad, Secret::Password("p")).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn chooses_the_strongest_allowed_mechanism() {
        assert_eq!(Mechanism::choose(["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"], true), Some(Mechanism::ScramSha256));
        assert_eq!(Mechanism::choose(["PLAIN", "SCRAM-SHA-1"], true), Some(Mechanism::ScramSha1));
        assert_eq!(Mechanism::choose(["PLAIN", "X-OAUTH"], false), None);
        assert_eq!(Mechanism::choose(["PLAIN"], true), Some(Mechanism::Plain));
        assert_eq!(plain("user", "pw"), "AHVzZXIAcHc=");
    }
}
