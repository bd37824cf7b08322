//! The block codec: how a block's bytes become an object's bytes and back.
//!
//! A block is encoded whole, in stages: first compression (none, a raw LZ4 block with no
//! size prefix, or a zstd frame at level 1 — JuiceFS's formats, so its volumes read
//! back), then encryption by the store beneath (AES-256-GCM or ChaCha20-Poly1305 with an
//! RSA-wrapped per-object key, `nectar_object::EncryptedStore`). Decoding runs the stages backwards and checks that the
//! result has exactly the length named in the object key; anything else is
//! [`Error::Corrupt`]. No header is stored: the length in the key is what lets LZ4
//! decompress into an exactly sized buffer. The stages live in this one type so the
//! encryption stage is one more field here and nothing else in the crate changes; the
//! only thing the rest of the crate asks is [`Codec::is_identity`], because only an
//! object that stores the raw bytes can be read with a byte-range GET.

use crate::{Error, Result};
use bytes::Bytes;
use std::fmt;
use std::str::FromStr;

/// zstd level JuiceFS uses; fast enough to keep up with uploads.
const ZSTD_LEVEL: i32 = 1;

/// Compression of blocks, fixed per volume at format time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// Parses `none`, `lz4` or `zstd` (any case; an empty string means none, as in
    /// JuiceFS's format record).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(Error::Invalid(format!(
                "unknown compression {other:?}: use none, lz4 or zstd"
            ))),
        }
    }
}

/// Encodes and decodes whole blocks. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    compression: Compression,
    /// Objects are encrypted by the store beneath (`nectar_object::EncryptedStore`),
    /// which decrypts them whole.
    encrypted: bool,
}

impl Codec {
    pub fn new(compression: Compression) -> Self {
        Self {
            compression,
            encrypted: false,
        }
    }

    /// The same codec over a store that encrypts objects.
    pub fn with_encryption(mut self, encrypted: bool) -> Self {
        self.encrypted = encrypted;
        self
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether objects hold the block's bytes unchanged, so any byte range of a block
    /// can be fetched with a ranged GET.
    pub fn is_identity(&self) -> bool {
        self.compression == Compression::None && !self.encrypted
    }

    /// Whether encoding or decoding costs enough CPU to move off the async workers
    /// (the store encrypts off them by itself).
    pub fn is_costly(&self) -> bool {
        self.compression != Compression::None
    }

    /// Turns a block into the bytes to store under `key` (only used in messages).
    pub fn encode(&self, key: &str, raw: Bytes) -> Result<Bytes> {
        match self.compression {
            Compression::None => Ok(raw),
            Compression::Lz4 => Ok(Bytes::from(lz4_flex::block::compress(&raw))),
            Compression::Zstd => zstd::bulk::compress(&raw, ZSTD_LEVEL)
                .map(Bytes::from)
                .map_err(|e| Error::Encode {
                    key: key.to_string(),
                    reason: format!("zstd: {e}"),
                }),
        }
    }

    /// Turns stored bytes back into the block of length `len` named in `key`.
    pub fn decode(&self, key: &str, stored: Bytes, len: usize) -> Result<Bytes> {
        let raw = match self.compression {
            Compression::None => stored,
            Compression::Lz4 => {
                // The output buffer is exactly `len`: a block that would decode to more
                // fails here instead of allocating whatever the data claims.
                let mut out = vec![0u8; len];
                let n = lz4_flex::block::decompress_into(&stored, &mut out)
                    .map_err(|e| Error::corrupt(key, format!("lz4: {e}")))?;
                out.truncate(n);
                Bytes::from(out)
            }
            Compression::Zstd => {
                // `capacity` bounds the output, so a bogus frame cannot make us allocate
                // more than the key says.
                let out = zstd::bulk::decompress(&stored, len)
                    .map_err(|e| Error::corrupt(key, format!("zstd: {e}")))?;
                Bytes::from(out)
            }
        };
        if raw.len() != len {
            return Err(Error::corrupt(
                key,
                format!("decoded to {} bytes, the key says {len}", raw.len()),
            ));
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Bytes {
        // Half text-like (compressible), half pseudo-random.
        let mut v: Vec<u8> = (0..n / 2).map(|i| b"nectar "[i % 7]).collect();
        let mut x = 0x9E37_79B9u32;
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push(x as u8);
        }
        Bytes::from(v)
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!("LZ4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!(" zstd ".parse::<Compression>().unwrap(), Compression::Zstd);
        assert_eq!("".parse::<Compression>().unwrap(), Compression::None);
        let e = "gzip".parse::<Compression>().unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
    }

    #[test]
    fn round_trip_every_compression() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let codec = Codec::new(c);
            for n in [1usize, 100, 4096, 100_000] {
                let raw = sample(n);
                let enc = codec.encode("k", raw.clone()).unwrap();
                assert_eq!(codec.decode("k", enc, n).unwrap(), raw, "{c} {n}");
            }
        }
    }

    #[test]
    fn lz4_is_a_raw_block_and_zstd_a_frame() {
        let raw = sample(10_000);
        let lz = Codec::new(Compression::Lz4)
            .encode("k", raw.clone())
            .unwrap();
        // No size prefix: the plain block decoder reads it given the length.
        assert_eq!(lz4_flex::block::decompress(&lz, raw.len()).unwrap(), raw);
        let zs = Codec::new(Compression::Zstd)
            .encode("k", raw.clone())
            .unwrap();
        assert_eq!(&zs[..4], &[0x28, 0xB5, 0x2F, 0xFD], "zstd frame magic");
    }

    #[test]
    fn bad_data_is_corrupt_with_the_key() {
        let raw = sample(5000);
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let codec = Codec::new(c);
            let enc = codec.encode("k", raw.clone()).unwrap();
            // Wrong length in the key, both ways.
            for len in [4999, 5001] {
                let e = codec
                    .decode("chunks/0/0/9_0_x", enc.clone(), len)
                    .unwrap_err();
                assert!(matches!(e, Error::Corrupt { .. }), "{c} {len}: {e}");
                assert!(e.to_string().contains("chunks/0/0/9_0_x"));
            }
            // Truncated object.
            let short = enc.slice(..enc.len() / 2);
            assert!(matches!(
                codec.decode("k", short, 5000),
                Err(Error::Corrupt { .. })
            ));
        }
        // Garbage.
        let junk = Bytes::from_static(b"\xff\xff\xff\xff\xff\xff\x00\x01garbage");
        for c in [Compression::Lz4, Compression::Zstd] {
            assert!(matches!(
                Codec::new(c).decode("k", junk.clone(), 5000),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
