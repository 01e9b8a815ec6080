//! Graph rich notifications (`includeResourceData`): the resource travels encrypted
//! (reference `graph.md` §4.5). Graph makes a fresh AES-256 key per item, encrypts the
//! resource JSON with AES-CBC and PKCS7 padding (IV = the first 16 bytes of the key), signs
//! the ciphertext with HMAC-SHA256 under the same key, and sends the key encrypted with
//! RSA-OAEP (SHA-1) to the subscriber's certificate. Decryption checks the signature
//! before decrypting. Pure functions: the caller holds the private key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("encryptedContent.{0} is not valid base64")]
    Base64(&'static str),
    #[error("the data key cannot be decrypted with our private key (wrong certificate?)")]
    KeyTransport,
    #[error("the data key has {0} bytes, expected 32")]
    KeyLength(usize),
    #[error("dataSignature does not match: the content was altered or not for us")]
    Signature,
    #[error("the data cannot be decrypted (padding)")]
    Decrypt,
}

/// `encryptedContent` of a change notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent {
    pub data: String,
    pub data_key: String,
    pub data_signature: String,
    #[serde(default)]
    pub encryption_certificate_id: Option<String>,
    #[serde(default)]
    pub encryption_certificate_thumbprint: Option<String>,
}

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// Largest encrypted payload accepted (base64 text), so a hostile body cannot make us
/// allocate without bound.
const MAX_DATA: usize = 4 * 1024 * 1024;

/// Verifies and decrypts one item's content; returns the resource JSON bytes.
pub fn decrypt(content: &EncryptedContent, key: &RsaPrivateKey) -> Result<Vec<u8>, CryptoError> {
    if content.data.len() > MAX_DATA {
        return Err(CryptoError::Base64("data"));
    }
    let wrapped = B64
        .decode(content.data_key.trim())
        .map_err(|_| CryptoError::Base64("dataKey"))?;
    let data = B64
        .decode(content.data.trim())
        .map_err(|_| CryptoError::Base64("data"))?;
    let signature = B64
        .decode(content.data_signature.trim())
        .map_err(|_| CryptoError::Base64("dataSignature"))?;
    let sym = key
        .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
        .map_err(|_| CryptoError::KeyTransport)?;
    if sym.len() != 32 {
        return Err(CryptoError::KeyLength(sym.len()));
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&sym).expect("HMAC takes any key length");
    mac.update(&data);
    mac.verify_slice(&signature)
        .map_err(|_| CryptoError::Signature)?;
    Aes256CbcDec::new(sym[..].into(), sym[..16].into())
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .map_err(|_| CryptoError::Decrypt)
}

/// Encrypts `plaintext` the way Graph does (used by the simulator and tests).
pub fn encrypt(
    plaintext: &[u8],
    key: &RsaPublicKey,
    certificate_id: &str,
) -> Result<EncryptedContent, CryptoError> {
    let mut sym = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut sym);
    let data = Aes256CbcEnc::new(sym[..].into(), sym[..16].into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&sym).expect("HMAC takes any key length");
    mac.update(&data);
    let signature = mac.finalize().into_bytes();
    let wrapped = key
        .encrypt(&mut rand_core::OsRng, Oaep::new::<sha1::Sha1>(), &sym)
        .map_err(|_| CryptoError::KeyTransport)?;
    Ok(EncryptedContent {
        data: B64.encode(&data),
        data_key: B64.encode(&wrapped),
        data_signature: B64.encode(signature),
        encryption_certificate_id: Some(certificate_id.to_string()),
        encryption_certificate_thumbprint: None,
    })
}

/// Reads a PKCS#8 PEM private key (the certificate's key, from a file or `${ENV}`).
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, String> {
    use rsa::pkcs8::DecodePrivateKey;
    RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("not a PKCS#8 PEM RSA private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        // 2048 bits as Graph requires; generated once per test binary.
        K.get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
    }

    const PRESENCE: &[u8] = br##"{"@odata.type":"#Microsoft.Graph.presence","id":"u1","availability":"Busy","activity":"InACall"}"##;

    #[test]
    fn round_trip() {
        let c = encrypt(PRESENCE, &key().to_public_key(), "cert-1").unwrap();
        assert_eq!(decrypt(&c, key()).unwrap(), PRESENCE);
        // A fresh key per item: the same plaintext never encrypts the same way twice.
        let c2 = encrypt(PRESENCE, &key().to_public_key(), "cert-1").unwrap();
        assert_ne!(c.data, c2.data);
    }

    #[test]
    fn tampering_and_wrong_keys_are_errors() {
        let c = encrypt(PRESENCE, &key().to_public_key(), "cert-1").unwrap();
        let mut data = B64.decode(&c.data).unwrap();
        data[0] ^= 1;
        let tampered = EncryptedContent {
            data: B64.encode(&data),
            ..c.clone()
        };
        assert_eq!(decrypt(&tampered, key()), Err(CryptoError::Signature));
        let forged_sig = EncryptedContent {
            data_signature: B64.encode([0u8; 32]),
            ..c.clone()
        };
        assert_eq!(decrypt(&forged_sig, key()), Err(CryptoError::Signature));
        let other = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        assert_eq!(decrypt(&c, &other), Err(CryptoError::KeyTransport));
        let garbage = EncryptedContent {
            data_key: "%%%".into(),
            ..c
        };
        assert_eq!(
            decrypt(&garbage, key()),
            Err(CryptoError::Base64("dataKey"))
        );
    }

    #[test]
    fn pem_keys_load_and_garbage_is_an_error() {
        use rsa::pkcs8::EncodePrivateKey;
        let pem = key().to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(&private_key_from_pem(&pem).unwrap(), key());
        assert!(private_key_from_pem("-----BEGIN NOPE-----").is_err());
    }
}
