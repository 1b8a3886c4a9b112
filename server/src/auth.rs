//! Password hashing (argon2id, salted, PHC strings) and bearer tokens (random, stored hashed).
//! Neither passwords nor tokens are ever logged.
//!
//! Hashing and verifying run in the working memory the caller lends ([`Scratch`]: 19 MiB for
//! the default parameters), so that a thread that hashes many passwords reuses one buffer, and
//! gives it back to the operating system when it drops it (the buffer is its own memory mapping,
//! not a heap block the allocator would keep).

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Working memory for argon2: an anonymous memory mapping of whole blocks, unmapped on drop.
pub struct Scratch {
    ptr: std::ptr::NonNull<Block>,
    blocks: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves ownership.
unsafe impl Send for Scratch {}

impl Scratch {
    /// Maps `blocks` zeroed blocks; `None` if the system refuses the mapping.
    pub fn new(blocks: usize) -> Option<Scratch> {
        let len = blocks.checked_mul(Block::SIZE)?;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Page-aligned, so aligned for `Block` (64 bytes).
        Some(Scratch { ptr: std::ptr::NonNull::new(ptr.cast())?, blocks })
    }

    /// The blocks (zeroed when new; argon2 overwrites every block it uses before reading it).
    fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping holds `blocks` blocks, is exclusively borrowed through `&mut self`,
        // and all-zero bytes are a valid `Block` (an array of integers).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.blocks) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing borrows any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.blocks * Block::SIZE);
        }
    }
}

/// Where a hash runs: a thread's reusable scratch memory, mapped on first use.
#[derive(Default)]
pub struct Workspace {
    scratch: Option<Scratch>,
}

impl Workspace {
    /// Runs argon2 in this workspace's memory (or a temporary heap buffer for parameters larger
    /// than the default, or if mapping fails).
    fn hash_into(&mut self, argon: &Argon2<'_>, params: &Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
        let needed = params.block_count();
        if self.scratch.as_ref().is_none_or(|s| s.blocks < needed) && needed <= Params::DEFAULT.block_count() {
            self.scratch = Scratch::new(Params::DEFAULT.block_count());
        }
        match &mut self.scratch {
            Some(s) if s.blocks >= needed => argon.hash_password_into_with_memory(password, salt, out, &mut s.blocks()[..needed]),
            _ => argon.hash_password_into(password, salt, out),
        }
    }

    /// Gives the scratch memory back to the system.
    pub fn release(&mut self) {
        self.scratch = None;
    }

    /// Whether scratch memory is mapped.
    pub fn holds_memory(&self) -> bool {
        self.scratch.is_some()
    }

    /// Hashes a password with argon2id (default parameters) and a random salt: a PHC string.
    pub fn hash_password(&mut self, password: &str) -> String {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let salt = SaltString::encode_b64(&raw).expect("16 bytes is a valid salt length");
        let params = Params::DEFAULT;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.hash_into(&argon, &params, password.as_bytes(), &raw, &mut out).expect("argon2 with default parameters");
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: (&params).try_into().expect("default parameters encode"),
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).expect("32 bytes is a valid output")),
        };
        phc.to_string()
    }

    /// Checks a password against a stored PHC hash (constant-time comparison of the outputs).
    pub fn verify_password(&mut self, password: &str, stored: &str) -> bool {
        let Ok(phc) = PasswordHash::new(stored) else { return false };
        let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(phc.algorithm), Params::try_from(&phc)) else { return false };
        let version = phc.version.map_or(Ok(Version::V0x13), Version::try_from).unwrap_or(Version::V0x13);
        let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else { return false };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        if self.hash_into(&argon, &params, password.as_bytes(), salt, &mut out).is_err() {
            return false;
        }
        Output::new(&out).is_ok_and(|computed| computed == expected)
    }
}

/// A hash to verify against when the user does not exist, so that a wrong username costs as much
/// time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| Workspace::default().hash_password("missive-dummy-password"))
}

/// A new bearer token and the hash under which it is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn passwords_are_salted_and_verified() {
        let mut w = Workspace::default();
        let a = w.hash_password("correct horse");
        let b = w.hash_password("correct horse");
        assert_ne!(a, b, "two hashes of one password must differ (salt)");
        assert!(!a.contains("correct horse"));
        assert!(w.verify_password("correct horse", &a));
        assert!(!w.verify_password("wrong horse", &a));
        assert!(!w.verify_password("x", "not a phc string"));
        assert!(w.holds_memory());
        w.release();
        assert!(!w.holds_memory());
        assert!(w.verify_password("correct horse", &b), "memory is mapped again when needed");
    }

    /// Hashes stored by earlier builds (the argon2 crate's own hasher) still verify, and ours
    /// verify with the crate's verifier: same algorithm, parameters and encoding.
    #[test]
    fn hashes_agree_with_the_argon2_crate() {
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        let mut w = Workspace::default();
        assert!(w.verify_password("correct horse", &theirs));
        assert!(!w.verify_password("correct horsf", &theirs));
        let ours = w.hash_password("correct horse");
        assert!(Argon2::default().verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        assert_eq!(ours.split('$').nth(3), theirs.split('$').nth(3), "same parameters: {ours}");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(token_hash(&t1), h1);
        assert!(t1.len() >= 43);
    }
}
