//! Encryption of objects, byte for byte JuiceFS's (`--encrypt-rsa-key`).
//!
//! The design: every object gets a fresh random data key, used once with an AEAD
//! cipher: AES-256-GCM (`aes256gcm-rsa`, the default) or ChaCha20-Poly1305
//! (`chacha20-rsa`). The data key is wrapped with the volume's RSA key (RSA-OAEP with
//! SHA-256 and the label `keys`) and stored in front of the ciphertext:
//!
//! ```text
//! [wrapped key length: u16 BE][nonce length: u8][wrapped key][nonce][ciphertext + 16-byte tag]
//! ```
//!
//! so a volume encrypted by JuiceFS reads here and the reverse. Only the private key
//! opens an object; it is kept in the volume's settings (`EncryptKey`, a PEM, possibly
//! protected by a passphrase that clients take from the environment), as JuiceFS keeps
//! it. The AEAD tag makes a changed object fail its read instead of returning wrong
//! data. [`EncryptedStore`] applies it to a whole store, after compression; objects are
//! decrypted whole, so ranged reads fetch the whole object (the data path knows it
//! and asks for whole blocks).
//!
//! Private keys are read as JuiceFS reads them: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8
//! (`PRIVATE KEY`), and with a passphrase either the legacy OpenSSL encryption
//! (`Proc-Type: 4,ENCRYPTED` with `DEK-Info: AES-*-CBC`, what `openssl genrsa
//! -traditional -aes256` and JuiceFS itself write) or PKCS#8 (`ENCRYPTED PRIVATE
//! KEY`, what OpenSSL 3 writes by default).

use crate::{Error, ObjectInfo, ObjectStore, Result};
use aes_gcm::aead::{Aead, KeyInit};
use async_trait::async_trait;
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPrivateKey};
use std::ops::Range;
use std::sync::Arc;

/// The label JuiceFS gives RSA-OAEP.
const OAEP_LABEL: &str = "keys";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;

/// The cipher of the data keys (`--encrypt-algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptAlgo {
    Aes256GcmRsa,
    Chacha20Rsa,
}

impl EncryptAlgo {
    /// Parses JuiceFS's names; empty is the default, `aes256gcm-rsa`.
    pub fn parse(s: &str) -> Result<EncryptAlgo> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "aes256gcm-rsa" => Ok(EncryptAlgo::Aes256GcmRsa),
            "chacha20-rsa" => Ok(EncryptAlgo::Chacha20Rsa),
            other => Err(Error::Config(format!(
                "unknown encryption algorithm {other:?}: use aes256gcm-rsa or chacha20-rsa"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EncryptAlgo::Aes256GcmRsa => "aes256gcm-rsa",
            EncryptAlgo::Chacha20Rsa => "chacha20-rsa",
        }
    }
}

/// Encrypts and decrypts objects with one RSA key. Cheap to share.
pub struct Encryptor {
    key: RsaPrivateKey,
    algo: EncryptAlgo,
}

impl std::fmt::Debug for Encryptor {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("algo", &self.algo)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// An encryptor of the RSA private key `pem`, opened with `passphrase` if it is
    /// protected by one.
    pub fn from_pem(pem: &str, passphrase: Option<&str>, algo: EncryptAlgo) -> Result<Encryptor> {
        let key = parse_private_key(pem, passphrase.filter(|p| !p.is_empty()))?;
        Ok(Encryptor { key, algo })
    }

    pub fn algo(&self) -> EncryptAlgo {
        self.algo
    }

    /// The stored form of `plain` (see the module doc).
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut data_key = [0u8; DATA_KEY_LEN];
        OsRng.fill_bytes(&mut data_key);
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let wrapped = self
            .key
            .to_public_key()
            .encrypt(&mut OsRng, oaep(), &data_key)
            .map_err(|e| Error::Permanent(format!("wrapping a data key: {e}")))?;
        let sealed = seal(self.algo, &data_key, &nonce, plain)?;
        let mut out = Vec::with_capacity(3 + wrapped.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
        out.push(NONCE_LEN as u8);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of a stored object; an error (never wrong bytes) when it was
    /// changed or was encrypted with another key.
    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let bad = |why: String| Error::Permanent(format!("cannot decrypt the object: {why}"));
        if stored.len() < 3 {
            return Err(bad(format!("{} bytes, too short", stored.len())));
        }
        let key_len = u16::from_be_bytes([stored[0], stored[1]]) as usize;
        let nonce_len = stored[2] as usize;
        if nonce_len != NONCE_LEN || 3 + key_len + nonce_len + TAG_LEN > stored.len() {
            return Err(bad(format!(
                "malformed header (key {key_len} bytes, nonce {nonce_len}, object {})",
                stored.len()
            )));
        }
        let (wrapped, rest) = stored[3..].split_at(key_len);
        let (nonce, sealed) = rest.split_at(nonce_len);
        let data_key = self
            .key
            .decrypt(oaep(), wrapped)
            .map_err(|_| bad("its key does not open with this RSA key (another key?)".into()))?;
        open(self.algo, &data_key, nonce, sealed)
            .map_err(|_| bad("its content fails authentication (changed or truncated)".into()))
    }
}

fn oaep() -> Oaep {
    Oaep::new_with_label::<sha2::Sha256, _>(OAEP_LABEL)
}

fn seal(algo: EncryptAlgo, key: &[u8], nonce: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let sealed = match algo {
        EncryptAlgo::Aes256GcmRsa => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(|e| Error::Permanent(e.to_string()))?
            .encrypt(aes_gcm::Nonce::from_slice(nonce), plain),
        EncryptAlgo::Chacha20Rsa => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .map_err(|e| Error::Permanent(e.to_string()))?
            .encrypt(chacha20poly1305::Nonce::from_slice(nonce), plain),
    };
    sealed.map_err(|e| Error::Permanent(format!("encrypting: {e}")))
}

fn open(algo: EncryptAlgo, key: &[u8], nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ()> {
    let opened = match algo {
        EncryptAlgo::Aes256GcmRsa => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(drop)?
            .decrypt(aes_gcm::Nonce::from_slice(nonce), sealed),
        EncryptAlgo::Chacha20Rsa => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .map_err(drop)?
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), sealed),
    };
    opened.map_err(drop)
}

/// Reads an RSA private key in any of the PEM forms of the module doc.
fn parse_private_key(pem: &str, passphrase: Option<&str>) -> Result<RsaPrivateKey> {
    use pkcs1::DecodeRsaPrivateKey;
    use pkcs8::DecodePrivateKey;
    let bad = |why: String| Error::Config(format!("the RSA private key: {why}"));
    let text = pem.trim();
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let pass = passphrase.ok_or_else(|| {
            bad("it is protected by a passphrase: set NECTAR_RSA_PASSPHRASE (or JFS_RSA_PASSPHRASE)".into())
        })?;
        return RsaPrivateKey::from_pkcs8_encrypted_pem(text, pass)
            .map_err(|e| bad(format!("cannot open it with the passphrase given ({e})")));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        let pass = passphrase.ok_or_else(|| {
            bad("it is protected by a passphrase: set NECTAR_RSA_PASSPHRASE (or JFS_RSA_PASSPHRASE)".into())
        })?;
        let der = decrypt_legacy_pem(text, pass).map_err(bad)?;
        return RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|_| bad("the passphrase is wrong (the key does not decode)".into()));
    }
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| bad(e.to_string()));
    }
    if text.contains("BEGIN PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| bad(e.to_string()));
    }
    Err(bad(
        "not a PEM RSA private key (expected BEGIN RSA PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY)".into(),
    ))
}

/// The DER of a PEM block encrypted the legacy OpenSSL way: `DEK-Info: AES-<n>-CBC,<iv>`,
/// the key derived from the passphrase and the IV's first 8 bytes with MD5
/// (`EVP_BytesToKey`, one round), PKCS#7 padding.
fn decrypt_legacy_pem(text: &str, pass: &str) -> std::result::Result<Vec<u8>, String> {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    use md5::{Digest, Md5};
    let mut dek = None;
    let mut body = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("DEK-Info:") {
            dek = Some(v.trim().to_string());
        } else if !line.starts_with("-----") && !line.contains(':') {
            body.push_str(line);
        }
    }
    let dek = dek.ok_or("an encrypted PEM block without DEK-Info")?;
    let (cipher, iv_hex) = dek.split_once(',').ok_or("a malformed DEK-Info")?;
    let iv: Vec<u8> = (0..iv_hex.len() / 2)
        .map(|i| u8::from_str_radix(&iv_hex[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| "a malformed DEK-Info IV")?;
    let key_len = match cipher {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        other => {
            return Err(format!(
                "its cipher {other} is not supported (use AES-*-CBC or PKCS#8)"
            ))
        }
    };
    if iv.len() != 16 {
        return Err("a DEK-Info IV that is not 16 bytes".into());
    }
    let mut key = Vec::with_capacity(key_len + 16);
    let mut prev: Vec<u8> = Vec::new();
    while key.len() < key_len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(pass.as_bytes());
        h.update(&iv[..8]);
        prev = h.finalize().to_vec();
        key.extend_from_slice(&prev);
    }
    key.truncate(key_len);
    let mut data = base64_decode(&body).ok_or("a PEM body that is not base64")?;
    let plain_len = match key_len {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut data)
            .map(|p| p.len()),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut data)
            .map(|p| p.len()),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut data)
            .map(|p| p.len()),
    }
    .map_err(|_| "the passphrase is wrong")?;
    data.truncate(plain_len);
    Ok(data)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A store whose objects are encrypted (see the module doc).
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    enc: Arc<Encryptor>,
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, enc: Arc<Encryptor>) -> Self {
        Self { inner, enc }
    }

    /// RSA and AEAD over a block cost milliseconds: off the async workers.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Encryptor) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let enc = self.enc.clone();
        tokio::task::spawn_blocking(move || f(&enc))
            .await
            .map_err(|e| Error::Permanent(format!("the encryption task failed: {e}")))?
    }
}

#[async_trait]
impl ObjectStore for EncryptedStore {
    fn describe(&self) -> String {
        format!(
            "{} (encrypted, {})",
            self.inner.describe(),
            self.enc.algo.name()
        )
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let sealed = self.run(move |e| e.encrypt(&data)).await?;
        self.inner.put(key, Bytes::from(sealed)).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let stored = self.inner.get(key, None).await?;
        let k = key.to_string();
        let plain = self
            .run(move |e| {
                e.decrypt(&stored)
                    .map_err(|err| Error::Permanent(format!("object {k}: {err}")))
            })
            .await?;
        let plain = Bytes::from(plain);
        Ok(match range {
            None => plain,
            Some(r) => {
                let end = (r.end as usize).min(plain.len());
                let start = (r.start as usize).min(end);
                plain.slice(start..end)
            }
        })
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.inner.delete_many(keys).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix, start_after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit test key (generated once; only for these tests).
    fn key_pem() -> String {
        use pkcs1::EncodeRsaPrivateKey;
        let key = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        key.to_pkcs1_pem(pkcs1::LineEnding::LF).unwrap().to_string()
    }

    #[test]
    fn round_trips_with_both_ciphers_and_refuses_changes_and_other_keys() {
        let pem = key_pem();
        for algo in [EncryptAlgo::Aes256GcmRsa, EncryptAlgo::Chacha20Rsa] {
            let e = Encryptor::from_pem(&pem, None, algo).unwrap();
            for n in [0usize, 1, 4096, 100_000] {
                let plain: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
                let sealed = e.encrypt(&plain).unwrap();
                // The layout: 256-byte wrapped key, 12-byte nonce, 16-byte tag.
                assert_eq!(sealed.len(), 3 + 256 + 12 + n + 16);
                assert_eq!(&sealed[..3], &[1, 0, 12]);
                assert_eq!(e.decrypt(&sealed).unwrap(), plain);
                let mut changed = sealed.clone();
                let last = changed.len() - 1;
                changed[last] ^= 1;
                let err = e.decrypt(&changed).unwrap_err().to_string();
                assert!(err.contains("fails authentication"), "{err}");
                assert!(e.decrypt(&sealed[..sealed.len() - 20]).is_err());
            }
        }
        let other = Encryptor::from_pem(&key_pem(), None, EncryptAlgo::Aes256GcmRsa).unwrap();
        let sealed = Encryptor::from_pem(&pem, None, EncryptAlgo::Aes256GcmRsa)
            .unwrap()
            .encrypt(b"x")
            .unwrap();
        let err = other.decrypt(&sealed).unwrap_err().to_string();
        assert!(err.contains("another key"), "{err}");
    }

    #[test]
    fn keys_in_every_pem_form() {
        use pkcs8::EncodePrivateKey;
        let key = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(pkcs8::LineEnding::LF).unwrap().to_string();
        let encrypted = key
            .to_pkcs8_encrypted_pem(&mut OsRng, "s3cret", pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        assert!(Encryptor::from_pem(&pkcs8, None, EncryptAlgo::Aes256GcmRsa).is_ok());
        let e = Encryptor::from_pem(&encrypted, None, EncryptAlgo::Aes256GcmRsa).unwrap_err();
        assert!(e.to_string().contains("NECTAR_RSA_PASSPHRASE"), "{e}");
        assert!(Encryptor::from_pem(&encrypted, Some("wrong"), EncryptAlgo::Aes256GcmRsa).is_err());
        assert!(Encryptor::from_pem(&encrypted, Some("s3cret"), EncryptAlgo::Aes256GcmRsa).is_ok());
        let e = Encryptor::from_pem("hello", None, EncryptAlgo::Aes256GcmRsa).unwrap_err();
        assert!(e.to_string().contains("not a PEM RSA private key"), "{e}");
        assert!(EncryptAlgo::parse("sm4gcm").is_err());
    }
}
