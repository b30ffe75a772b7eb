//! The executable image shipped to new contexts: this process's own
//! executable, read once and zstd-compressed once per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

/// An image, raw and (lazily) compressed.
pub(crate) struct Image {
    pub(crate) path: PathBuf,
    pub(crate) raw: Bytes,
    compressed: OnceLock<Result<Bytes, String>>,
    sha256: OnceLock<String>,
}

impl Image {
    /// The image at `path` (default: `/proc/self/exe`), read once per process.
    pub(crate) fn load(path: Option<&Path>) -> Result<Arc<Image>, String> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Image>>>> = OnceLock::new();
        let path = path.map_or_else(|| PathBuf::from("/proc/self/exe"), Path::to_path_buf);
        let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
        if let Some(img) = cache.get(&path) {
            return Ok(img.clone());
        }
        let raw = std::fs::read(&path)
            .map_err(|e| format!("cannot read the image {}: {e}", path.display()))?;
        let img = Arc::new(Image {
            path: path.clone(),
            raw: Bytes::from(raw),
            compressed: OnceLock::new(),
            sha256: OnceLock::new(),
        });
        cache.insert(path, img.clone());
        Ok(img)
    }

    /// An image that arrived compressed (fetched up the tree for another
    /// platform); `label` names it in errors.
    pub(crate) fn from_compressed(label: String, compressed: Bytes) -> Result<Image, String> {
        let raw = zstd::stream::decode_all(&compressed[..])
            .map_err(|e| format!("{label} does not decompress: {e}"))?;
        Ok(Image {
            path: PathBuf::from(label),
            raw: Bytes::from(raw),
            compressed: OnceLock::from(Ok(compressed)),
            sha256: OnceLock::new(),
        })
    }

    /// The zstd-compressed image (level 3), computed once.
    pub(crate) fn compressed(&self) -> Result<Bytes, String> {
        self.compressed
            .get_or_init(|| {
                let mut enc = zstd::bulk::Compressor::new(3).map_err(|e| e.to_string())?;
                enc.compress(&self.raw)
                    .map(Bytes::from)
                    .map_err(|e| format!("cannot compress {}: {e}", self.path.display()))
            })
            .clone()
    }

    /// The SHA-256 of the raw image, in lowercase hex (what `sha256sum`
    /// prints): the name a target's cache keeps it under. Computed once.
    pub(crate) fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| sha256_hex(&self.raw))
    }

    /// Refuses a dynamically linked image for any target but this machine:
    /// its libraries may differ elsewhere.
    pub(crate) fn check_shippable(&self, same_machine: bool) -> Result<(), String> {
        if same_machine || is_static_elf(&self.raw) {
            Ok(())
        } else {
            Err(format!(
                "the image {} is dynamically linked; only contexts on this machine (local, \
                 sudo) can run it. Build a static image: `rustup target add \
                 x86_64-unknown-linux-musl` and `cargo build --release --target \
                 x86_64-unknown-linux-musl`, or on glibc RUSTFLAGS='-C \
                 target-feature=+crt-static' with an explicit --target; or, if the target \
                 has this machine's libraries, say so (`Ssh::same_libraries(true)`)",
                self.path.display()
            ))
        }
    }
}

/// SHA-256 in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True for a 64-bit little-endian ELF without a PT_INTERP program header.
/// Anything unparseable counts as not static.
pub(crate) fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let off = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        matches!(u32_at(off), Some(t) if t != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_dynamic_and_garbage_is_not_static() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        // cargo test builds for the gnu target: dynamically linked.
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"not an elf"));
        assert!(!is_static_elf(&[]));
    }

    #[test]
    fn sha256_is_what_sha256sum_prints() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn dynamic_images_are_refused_for_other_machines_with_a_hint() {
        let img = Image::load(None).unwrap();
        assert!(img.check_shippable(true).is_ok());
        let err = img.check_shippable(false).unwrap_err();
        assert!(
            err.contains("dynamically linked") && err.contains("musl"),
            "{err}"
        );
    }
}
